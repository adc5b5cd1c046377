"""The benchmark's own knobs: BENCH_* environment variables, read once, with full-run defaults.

BENCH_QUICK=1 shrinks every duration and message count for a run of a few minutes; any single
knob can still be set on top of it (e.g. BENCH_QUICK=1 BENCH_STATUS_ROWS=1000000).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

# Every phase, in the order they run; BENCH_ONLY=a,b runs a subset (the baselines always run).
# rss last: it fills the budget.
PHASES = ("ingest", "batch", "overload", "status", "sender", "e2e", "rss")


@dataclass(frozen=True)
class BenchConfig:
    """Durations are seconds; `repeats` applies to every figure."""

    quick: bool = False
    repeats: int = 3
    connections: int = 64  # wrk connections for the req/s figures
    wrk_threads: int = 2
    wrk_seconds: float = 10.0
    warmup_seconds: float = 2.0
    pgbench_clients: int = 8
    pgbench_seconds: float = 8.0
    redis_requests: int = 200_000
    latency_fraction: float = 0.7  # POST p99 is taken at this share of the measured max rate
    openloop_seconds: float = 8.0
    openloop_connections: int = 64
    batch_size: int = 1000
    batch_connections: int = 4
    overload_connections: int = 2000  # DESIGN.md's overload figure: one api instance
    status_rows: int = 1_000_000
    status_small_rows: int = 10_000
    status_latency_fraction: float = 0.3  # status p99 at this share of the 10k-row max rate
    sender_messages: int = 20_000
    sender_deadline: float = 20.0  # from the first send; a slower sender is timed on what it sent
    e2e_rate: float = 300.0
    e2e_seconds: float = 20.0
    rss_messages: int = 200_000
    rss_deadline: float = 75.0  # shortened further when the time budget runs low
    budget_seconds: float = 840.0  # the RSS run gives way so that the whole run fits in 14 min
    postgres_url: str = "postgresql://postgres@127.0.0.1:5432"
    redis_url: str = "redis://127.0.0.1:6379/0"
    only: tuple[str, ...] = PHASES
    keep_database: bool = False
    keep_logs: bool = False  # the work directory (process logs, id lists) is kept on failure

    def runs(self, phase: str) -> bool:
        return phase in self.only


QUICK = {
    "repeats": 3,
    "wrk_seconds": 3.0,
    "warmup_seconds": 1.0,
    "pgbench_seconds": 3.0,
    "redis_requests": 50_000,
    "openloop_seconds": 4.0,
    "status_rows": 100_000,
    "sender_messages": 3_000,
    "sender_deadline": 10.0,
    "e2e_seconds": 5.0,
    "rss_messages": 20_000,
    "rss_deadline": 20.0,
}


def _parse(kind: type, raw: str) -> object:
    if kind is bool:
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if kind is tuple:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return kind(raw)


_KINDS: Mapping[str, type] = {
    "bool": bool,
    "int": int,
    "float": float,
    "str": str,
    "tuple[str, ...]": tuple,
}


def load(environ: Mapping[str, str] | None = None) -> BenchConfig:
    """BENCH_<FIELD> variables over the quick or full defaults."""
    # The benchmark is a tool, not a deployable: its knobs are not Herald settings.
    env = os.environ if environ is None else environ  # noqa: TID251
    values: dict[str, object] = {}
    quick = _parse(bool, env.get("BENCH_QUICK", "0"))
    if quick:
        values.update(QUICK, quick=True)
    for field in fields(BenchConfig):
        raw = env.get(f"BENCH_{field.name.upper()}")
        if raw is not None and field.name != "quick":
            values[field.name] = _parse(_KINDS[str(field.type)], raw)
    only = values.get("only", PHASES)
    unknown = set(only if isinstance(only, tuple) else ()) - set(PHASES)
    if unknown:
        raise SystemExit(f"BENCH_ONLY: unknown phases {sorted(unknown)}; known: {PHASES}")
    return BenchConfig(**values)  # type: ignore[arg-type]

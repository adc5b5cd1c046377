"""GET /message/{id}/status: max rate on a table of ≥ 1M rows, and p99 at 10k vs 1M rows."""

from __future__ import annotations

import time
from pathlib import Path

from bench import baselines
from bench.context import Bench
from bench.figures import Target
from bench.wrk import WrkResult, random_get_script, run_wrk

STATUS_PATH = "/message/{id}/status"
# "The same" p99 at 1M rows as at 10k: within this factor (run-to-run noise is ~10-20 %).
P99_GROWTH_BOUND = 1.25


def _status_rate(bench: Bench, ids: Path, seconds: float) -> WrkResult:
    config = bench.config
    return run_wrk(
        bench.system.url("status") + "/",
        random_get_script(ids, STATUS_PATH, bench.system.headers),
        seconds=seconds,
        connections=config.connections,
        threads=config.wrk_threads,
    )


def _write_ids(bench: Bench, ids: list[str], name: str) -> Path:
    path = bench.work_dir / name
    path.write_text("\n".join(ids) + "\n")
    return path


def _p99_runs(bench: Bench, key: str, ids: Path, rate: float) -> None:
    figure = bench.figures[key]
    for run in range(bench.config.repeats):
        with bench.metered(key, "status"):
            summary = bench.openloop(
                bench.system.url("status"), rate, bench.config.openloop_seconds, ids=ids
            )
        bench.record(key, summary)
        p99 = summary["latency_ms"].get("p99")
        figure.runs.append(float("inf") if p99 is None else p99)
        bench.say(f"run {run + 1}: p99 {p99} ms at {summary['achieved_rate']} req/s")


def measure_status(bench: Bench) -> None:
    config = bench.config
    hello_name = (
        "hello" if bench.system.status_config == bench.system.api_config else "hello-status"
    )
    bench.settle()
    bench.db.truncate()
    small = bench.db.load_sent(bench.system.tenant, config.status_small_rows)
    small_ids = _write_ids(bench, small, "ids-small.txt")
    _status_rate(bench, small_ids, config.warmup_seconds)
    probe = _status_rate(bench, small_ids, config.wrk_seconds)
    bench.record("status_probe_small", probe.as_json())
    rate = max(1.0, config.status_latency_fraction * probe.rate)
    bench.say(f"status max at {config.status_small_rows} rows: {probe.rate:.0f} req/s")
    bench.figure(
        "status_p99_small",
        f"status p99 at {config.status_small_rows:,} rows ({rate:.0f} req/s, open loop)",
        "ms",
    )
    _p99_runs(bench, "status_p99_small", small_ids, rate)

    started = time.monotonic()
    large = bench.db.load_sent(bench.system.tenant, config.status_rows - config.status_small_rows)
    rows = bench.db.count()
    bench.say(f"loaded {rows:,} rows in {time.monotonic() - started:.1f} s")
    large_ids = _write_ids(bench, large, "ids-large.txt")
    bench.figure(
        "hello_status",
        f"hello-world POST req/s (beside status runs, {hello_name})",
        "req/s",
    )
    bench.figure(
        "status_rate",
        f"GET /message/{{id}}/status req/s ({rows:,} rows, random ids)",
        "req/s",
        baseline="hello_status",
        target=Target(">=", 0.8, on_ratio=True),
    )
    _status_rate(bench, large_ids, config.warmup_seconds)
    for run in range(config.repeats):
        with bench.metered("hello_status", hello_name):
            hello = baselines.post_rate(bench, hello_name)
        bench.figures["hello_status"].runs.append(hello.rate)
        bench.record("hello_status", hello.as_json())
        with bench.metered("status_rate", "status"):
            result = _status_rate(bench, large_ids, config.wrk_seconds)
        bench.figures["status_rate"].runs.append(result.rate)
        bench.record("status_rate", result.as_json())
        bench.say(f"run {run + 1}: hello {hello.rate:.0f} req/s, status {result.rate:.0f} req/s")
    bench.figure(
        "status_p99_large",
        f"status p99 at {rows:,} rows ({rate:.0f} req/s, open loop)",
        "ms",
        baseline="status_p99_small",
        target=Target("<=", P99_GROWTH_BOUND, on_ratio=True, text=f"ratio ≤ {P99_GROWTH_BOUND}"),
        note="ratio = p99 at the large table ÷ p99 at the small one",
    )
    _p99_runs(bench, "status_p99_large", large_ids, rate)

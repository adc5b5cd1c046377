"""Sender throughput from a pre-loaded backlog (provider at 0 and 50 ms), and its memory."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.context import Bench
from bench.figures import Target
from bench.ingest import batch_body
from bench.system import log_events, log_size
from bench.usage import RssSampler

POLL_SECONDS = 0.05
STARTUP_SECONDS = 60.0  # the sender's boot (imports, forks) is not part of its throughput
# The sender's memory is "flat" when its end RSS stays within this factor of its early RSS.
RSS_GROWTH_BOUND = 1.10
RSS_OVERHEAD = 40.0  # seconds: the sender's boot and stop, the report, dropping the database
MIN_RSS_SECONDS = 10.0


@dataclass
class Drain:
    """One sender run over a backlog of `messages`."""

    messages: int
    launched: float = 0.0
    first_receipt: float | None = None
    finished: float | None = None
    ended: float = 0.0  # when `sent` was counted
    sent: int = 0
    progress: list[tuple[float, int]] = field(default_factory=list)  # (since launch, received)
    provider: dict[str, Any] = field(default_factory=dict)
    rss: list[tuple[float, int, int]] = field(default_factory=list)  # see RssSampler
    log_events: dict[str, int] = field(default_factory=dict)  # the sender's warnings, retries

    @property
    def rate(self) -> float:
        if self.first_receipt is None:
            return 0.0
        end = self.finished if self.finished is not None else self.ended
        return self.sent / max(end - self.first_receipt, 1e-9)

    def as_json(self) -> dict[str, Any]:
        start = None if self.first_receipt is None else round(self.first_receipt - self.launched, 3)
        return {
            "messages": self.messages,
            "sent": self.sent,
            "complete": self.finished is not None,
            "first_receipt_after_launch_s": start,
            "rate": round(self.rate, 1),
            "provider_stats": self.provider,
            "sender_log_events": self.log_events,
        }


def preload(bench: Bench, count: int) -> float:
    """Queue count messages through POST /messages/batch (no sender running); seconds taken."""
    size = bench.config.batch_size
    started = time.monotonic()
    with httpx.Client(base_url=bench.system.url("api"), timeout=120) as client:
        for offset in range(0, count, size):
            body = batch_body(min(size, count - offset))
            headers = {"Content-Type": "application/json", **bench.system.headers}
            client.post("/messages/batch", content=body, headers=headers).raise_for_status()
    queued = bench.db.count("queued")
    if queued != count:
        raise SystemExit(f"bench: preloaded {count} messages but {queued} are queued")
    return time.monotonic() - started


def _stats(bench: Bench) -> dict[str, Any]:
    stats: dict[str, Any] = bench.system.provider("GET", "/stats").json()
    return stats


def drain(bench: Bench, key: str, messages: int, deadline: float, rss: bool = False) -> Drain:
    """Start herald-sender on the backlog; time from its first provider call to all `sent`."""
    log = bench.work_dir / "sender.log"
    log_start = log_size(log)
    run = Drain(messages, launched=time.monotonic())
    sender = bench.system.start_sender(bench.system.url("messageapp"))
    sampler = RssSampler(sender.pid) if rss else None
    if sampler is not None:
        sampler.start()
    _poll(bench, run, deadline, until_first=True)
    # From the first send on: the sender's boot (imports, forks) is not per-message CPU.
    with bench.metered(key, "sender", "messageapp", "api"):
        _poll(bench, run, deadline)
    run.sent = bench.db.count("sent")
    run.ended = time.monotonic()
    run.provider = _stats(bench)
    if sampler is not None:
        sampler.stop()
        run.rss = sampler.samples
    bench.system.stop("sender")
    run.log_events = log_events(log, log_start)
    return run


def _poll(bench: Bench, run: Drain, deadline: float, until_first: bool = False) -> None:
    """Poll until every message is sent, or `deadline` seconds after the first provider call."""

    def over() -> bool:
        if run.first_receipt is None:
            return time.monotonic() - run.launched > STARTUP_SECONDS
        return until_first or time.monotonic() - run.first_receipt > deadline

    while not over():
        received = int(_stats(bench)["unique"])
        now = time.monotonic()
        run.progress.append((now - run.launched, received))
        if received and run.first_receipt is None:
            run.first_receipt = now
        if received >= run.messages and bench.db.count("sent") >= run.messages:
            run.finished = time.monotonic()
            return
        time.sleep(POLL_SECONDS if received >= run.messages * 0.9 else POLL_SECONDS * 4)


def _fresh_backlog(bench: Bench, count: int, latency_ms: float) -> float:
    bench.settle()
    bench.db.truncate()
    bench.ns.clear()
    bench.system.provider("POST", "/reset")
    bench.system.provider("PUT", "/config", {"latency_ms": latency_ms})
    return preload(bench, count)


def measure_throughput(bench: Bench, latency_ms: int, target: float) -> None:
    config = bench.config
    key = f"sender_{latency_ms}ms"
    figure = bench.figure(
        key,
        f"sender messages/s, provider at {latency_ms} ms (backlog of {config.sender_messages:,})",
        "msg/s",
        baseline="pg_insert",
        target=Target(">=", target),
    )
    for run in range(config.repeats):
        seconds = _fresh_backlog(bench, config.sender_messages, latency_ms)
        result = drain(bench, key, config.sender_messages, config.sender_deadline)
        bench.record(key, {**result.as_json(), "preload_s": round(seconds, 2)})
        figure.runs.append(result.rate)
        state = "" if result.finished else f" (deadline: {result.sent} of {result.messages} sent)"
        bench.say(f"run {run + 1}: {result.rate:.0f} messages/s{state}")


def _rss_plan(bench: Bench) -> tuple[float, int]:
    """How long to drain, and how big a backlog to pre-load, within the remaining budget.

    Preloading runs at the batch ingest rate and the drain at the sender's 0 ms rate, so
    remaining = overhead + deadline + backlog / batch rate, with backlog = sender rate * deadline.
    """
    config = bench.config
    sender_rate = bench.figures["sender_0ms"].value if "sender_0ms" in bench.figures else None
    batch_rate = bench.figures["batch_rate"].value if "batch_rate" in bench.figures else None
    if not sender_rate:
        return config.rss_deadline, config.rss_messages
    preload_share = 1.05 * sender_rate / (batch_rate or 2000.0)
    deadline = min(config.rss_deadline, (bench.remaining() - RSS_OVERHEAD) / (1 + preload_share))
    return deadline, min(config.rss_messages, math.ceil(sender_rate * deadline * 1.05))


def measure_rss(bench: Bench) -> None:
    """Sender memory over a long backlog: tree RSS early (10 % done), at the end, and max."""
    config = bench.config
    deadline, count = _rss_plan(bench)
    if deadline < MIN_RSS_SECONDS:
        bench.say(f"RSS run skipped: {bench.remaining():.0f} s left of the time budget")
        bench.record("sender_rss_skipped", {"remaining_s": round(bench.remaining())})
        return
    bench.say(
        f"RSS run over {count:,} messages (of {config.rss_messages:,} asked), ≤ {deadline:.0f} s"
    )
    _fresh_backlog(bench, count, 0)
    run = drain(bench, "sender_rss", count, deadline, rss=True)
    series = run.rss
    early_at = next((t for t, n in run.progress if n >= count * 0.1), None)
    early = next((rss for t, rss, _ in series if early_at is not None and t >= early_at), None)
    end = series[-1][1] if series else None
    peak = max((rss for _, rss, _ in series), default=None)
    mib = 1024 * 1024
    bench.record(
        "sender_rss",
        {
            **run.as_json(),
            "samples": [[round(t, 2), rss, top] for t, rss, top in series],
            "progress": [[round(t, 2), n] for t, n in run.progress],
        },
    )
    start_fig = bench.figure("rss_early", "sender RSS at 10 % of the backlog", "MiB")
    start_fig.runs = [early / mib] if early else []
    bench.figure("rss_max", "sender RSS max", "MiB").runs = [peak / mib] if peak else []
    bench.figure(
        "rss_end",
        f"sender RSS at the end ({run.sent:,} messages sent)",
        "MiB",
        baseline="rss_early",
        target=Target("<=", RSS_GROWTH_BOUND, on_ratio=True, text=f"ratio ≤ {RSS_GROWTH_BOUND}"),
        note="all sender processes (Dramatiq main, workers, fork processes) summed",
    ).runs = [end / mib] if end else []
    bench.say(f"RSS early {early}, end {end}, max {peak}; {run.sent} sent at {run.rate:.0f}/s")

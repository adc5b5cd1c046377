"""End-to-end latency: a client's POST /messages → the provider receiving it, at a fixed rate.

The open-loop client notes each accepted message's due time and the time it wrote the POST
(CLOCK_MONOTONIC, ns); the recording provider (bench.recorder) notes when each Idempotency-Key
arrived, on the same clock. The figure is arrival - written: from the moment the client sends
the POST, as the target defines it, so the API's answer time is inside it but the generator's
own timer lateness (asyncio sleeps to the next millisecond: ~0.6 ms at the median here) is not.
arrival - due is kept beside it, with that lateness; a queue of due requests waiting for a free
connection (coordinated omission) would show there, and in the client's send lateness.
"""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from typing import Any

import httpx

from bench.baselines import MESSAGE_BODY
from bench.context import Bench
from bench.figures import Target
from bench.openloop import percentiles
from bench.system import log_events, log_size

ARRIVAL_WAIT_SECONDS = 5.0
SENDER_WARMUP_SECONDS = 5.0


def _receipts(bench: Bench) -> dict[str, int]:
    rows = httpx.get(f"{bench.system.url('recorder')}/receipts", timeout=30).json()
    first: dict[str, int] = {}
    for key, arrived in rows:
        first.setdefault(key, arrived)  # a repeat (at-least-once) is not a new arrival
    return first


def _one_run(bench: Bench, rate: float, seconds: float, measured: bool = True) -> dict[str, Any]:
    records = bench.work_dir / "e2e-records.json"
    body = bench.work_dir / "message.json"
    body.write_text(MESSAGE_BODY)
    httpx.post(f"{bench.system.url('recorder')}/reset", timeout=10)
    meter = bench.metered("e2e", "api", "sender", "recorder") if measured else nullcontext()
    with meter:
        summary = bench.openloop(
            bench.system.url("api"), rate, seconds, post_body=body, records=records
        )
    accepted: list[tuple[str, int, int]] = [tuple(row) for row in json.loads(records.read_text())]
    deadline = time.monotonic() + ARRIVAL_WAIT_SECONDS
    arrived = _receipts(bench)
    while any(mid not in arrived for mid, _, _ in accepted) and time.monotonic() < deadline:
        time.sleep(0.2)
        arrived = _receipts(bench)

    def latencies(start: int) -> dict[str, float | None]:
        return percentiles(
            [(arrived[row[0]] - row[start]) / 1e6 if row[0] in arrived else float("inf")
             for row in accepted]
        )  # fmt: skip

    return {
        "client": summary,
        "accepted": len(accepted),
        "arrived": sum(1 for mid, _, _ in accepted if mid in arrived),
        "latency_ms": latencies(2),
        "latency_from_due_ms": latencies(1),
    }


def measure_e2e(bench: Bench) -> None:
    config = bench.config
    rate, seconds = config.e2e_rate, config.e2e_seconds
    p50 = bench.figure(
        "e2e_p50",
        f"end-to-end p50, POST → provider receives ({rate:.0f} msg/s, open loop)",
        "ms",
        target=Target("<=", 4),
    )
    p99 = bench.figure(
        "e2e_p99",
        f"end-to-end p99, POST → provider receives ({rate:.0f} msg/s, open loop)",
        "ms",
        target=Target("<=", 10),
    )
    log = bench.work_dir / "sender.log"
    log_start = log_size(log)
    bench.system.start_sender(bench.system.url("recorder"))
    bench.system.wait_sender()
    # The sender's healthz answers before every worker has started fetching: let it settle at
    # the measured rate first, unmeasured.
    _one_run(bench, rate, SENDER_WARMUP_SECONDS, measured=False)
    try:
        for run in range(config.repeats):
            result = _one_run(bench, rate, seconds)
            bench.record("e2e", result)
            latency = result["latency_ms"]
            p50.runs.append(latency["p50"] if latency.get("p50") is not None else float("inf"))
            p99.runs.append(latency["p99"] if latency.get("p99") is not None else float("inf"))
            bench.say(
                f"run {run + 1}: p50 {latency.get('p50')} ms, p99 {latency.get('p99')} ms "
                f"({result['arrived']}/{result['accepted']} arrived)"
            )
    finally:
        bench.system.stop("sender")
        bench.record("e2e_sender_log_events", log_events(log, log_start))

"""Open-loop load at a fixed rate, in its own process: `python -m bench.openloop ...`.

Request i is due at t0 + i / rate whatever happened to earlier ones, and its latency runs from
that due time, not from when it was written. A slow answer therefore cannot hold back the
requests behind it and hide their wait (coordinated omission, which closed-loop tools like wrk
suffer): when every connection is busy, due requests queue here and their queueing counts.
Each connection carries one request at a time (HTTP/1.1, keep-alive, no pipelining).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

DRAIN_SECONDS = 5.0  # answers later than this after the last due time count as lost (∞)


@dataclass
class Outcome:
    """One request: when it was due, written and answered (monotonic ns), and its status."""

    due: int
    sent: int = 0
    done: int = 0
    status: int = 0  # 0: no answer (connection error or still open at the end)
    message_id: str | None = None


@dataclass
class Target:
    host: str
    port: int
    post_body: bytes | None
    ids: list[str] = field(default_factory=list)
    keep_ids: bool = False
    headers: str = ""  # extra header lines, each ending in CRLF (the key)

    def request(self) -> bytes:
        if self.post_body is not None:
            head = (
                f"POST /messages HTTP/1.1\r\nHost: {self.host}\r\n{self.headers}"
                f"Content-Type: application/json\r\nContent-Length: {len(self.post_body)}\r\n\r\n"
            )
            return head.encode() + self.post_body
        message_id = random.choice(self.ids)
        return (
            f"GET /message/{message_id}/status HTTP/1.1\r\nHost: {self.host}\r\n{self.headers}\r\n"
        ).encode()


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes, bool]:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    length = 0
    start = lower.find(b"\r\ncontent-length:")
    if start >= 0:
        end = lower.find(b"\r\n", start + 2)
        length = int(lower[start + 17 : end])
    body = await reader.readexactly(length)
    return status, body, b"\r\nconnection: close" in lower


async def _connection(
    target: Target, due: asyncio.Queue[Outcome | None], ready: asyncio.Event
) -> None:
    reader, writer = await asyncio.open_connection(target.host, target.port)
    ready.set()
    while (outcome := await due.get()) is not None:
        outcome.sent = time.monotonic_ns()
        try:
            status, body, closing = await _exchange(reader, writer, target.request())
        except (OSError, asyncio.IncompleteReadError, ValueError):
            closing, status, body = True, 0, b""
        outcome.done, outcome.status = time.monotonic_ns(), status
        if target.keep_ids and 200 <= status < 300:
            outcome.message_id = orjson.loads(body)["id"]
        if closing:
            writer.close()
            reader, writer = await asyncio.open_connection(target.host, target.port)
    writer.close()


async def generate(
    target: Target, rate: float, seconds: float, connections: int
) -> tuple[list[Outcome], int]:
    """Issue rate * seconds requests on schedule; the outcomes and the schedule's start (ns)."""
    due: asyncio.Queue[Outcome | None] = asyncio.Queue()
    readies = [asyncio.Event() for _ in range(connections)]
    tasks = [asyncio.create_task(_connection(target, due, ready)) for ready in readies]
    await asyncio.wait_for(asyncio.gather(*(ready.wait() for ready in readies)), 30)
    total = round(rate * seconds)
    interval = 1e9 / rate
    t0 = time.monotonic_ns() + 10_000_000
    outcomes = [Outcome(due=t0 + round(i * interval)) for i in range(total)]
    for outcome in outcomes:
        delay = (outcome.due - time.monotonic_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        due.put_nowait(outcome)
    for _ in tasks:
        due.put_nowait(None)
    _, pending = await asyncio.wait(tasks, timeout=DRAIN_SECONDS)
    for task in pending:
        task.cancel()
    return outcomes, t0


def percentiles(values: list[float]) -> dict[str, float | None]:
    """Nearest-rank percentiles (ms); an unanswered request is +inf (None) and in the tail."""
    if not values:
        return {}
    ordered = sorted(values)

    def rank(p: float) -> float | None:
        value = ordered[min(len(ordered), max(1, math.ceil(p / 100 * len(ordered)))) - 1]
        return None if math.isinf(value) else round(value, 3)

    return {"p50": rank(50), "p90": rank(90), "p99": rank(99), "p999": rank(99.9), "max": rank(100)}


def summarize(outcomes: list[Outcome], t0: int, warmup: float, seconds: float) -> dict[str, Any]:
    """Figures over the requests due after the warm-up."""
    measured = [o for o in outcomes if o.due >= t0 + warmup * 1e9]
    answered = [o for o in measured if o.done]
    statuses: dict[str, int] = {}
    for o in measured:
        statuses[str(o.status)] = statuses.get(str(o.status), 0) + 1
    latency = [(o.done - o.due) / 1e6 if o.done else float("inf") for o in measured]
    service = [(o.done - o.sent) / 1e6 for o in answered]
    lateness = [(o.sent - o.due) / 1e6 for o in measured if o.sent]
    span = seconds - warmup
    return {
        "requests": len(measured),
        "answered": len(answered),
        "good": sum(1 for o in measured if 200 <= o.status < 300),
        "statuses": statuses,
        "achieved_rate": round(len(answered) / span, 1) if span > 0 else 0.0,
        "latency_ms": percentiles(latency),
        "service_time_ms": percentiles(service),
        "send_lateness_ms": percentiles(lateness),
    }


def _header_lines(path: Path | None) -> str:
    headers: dict[str, str] = json.loads(path.read_text()) if path else {}
    return "".join(f"{name}: {value}\r\n" for name, value in headers.items())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.openloop", description=__doc__)
    parser.add_argument("--url", required=True, help="http://HOST:PORT")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--seconds", type=float, required=True, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--post-body", type=Path, help="POST /messages with this JSON body")
    parser.add_argument("--ids", type=Path, help="GET /message/{id}/status, ids from this file")
    parser.add_argument("--records", type=Path, help="write [id, due_ns, sent_ns] of each 2xx here")
    parser.add_argument("--headers-file", type=Path, help="a JSON object of headers to send")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    host, port = args.url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    target = Target(
        host,
        int(port),
        args.post_body.read_bytes() if args.post_body else None,
        args.ids.read_text().split() if args.ids else [],
        keep_ids=args.records is not None,
        headers=_header_lines(args.headers_file),
    )
    total = args.warmup + args.seconds
    outcomes, t0 = asyncio.run(generate(target, args.rate, total, args.connections))
    summary = summarize(outcomes, t0, args.warmup, total)
    summary.update(rate=args.rate, seconds=args.seconds, connections=args.connections)
    args.out.write_text(json.dumps(summary, indent=1))
    if args.records:
        rows = [
            [o.message_id, o.due, o.sent]
            for o in outcomes
            if o.message_id and o.due >= t0 + args.warmup * 1e9
        ]
        args.records.write_text(json.dumps(rows))


if __name__ == "__main__":
    main()

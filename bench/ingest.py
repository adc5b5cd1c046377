"""Ingest: POST /messages against hello-world (interleaved), its p99 at 70 %, and batches."""

from __future__ import annotations

import json

from bench import baselines
from bench.context import Bench
from bench.figures import Target
from bench.wrk import post_script, run_wrk


def measure_post(bench: Bench) -> None:
    """Hello-world and POST /messages take turns, so both see the same machine."""
    config = bench.config
    hello = bench.figure("hello_post", "hello-world POST req/s (beside POST runs)", "req/s")
    post = bench.figure(
        "post_rate",
        "POST /messages req/s",
        "req/s",
        baseline="hello_post",
        target=Target(">=", 0.6, on_ratio=True),
    )
    baselines.warm_up(bench, "hello")
    baselines.warm_up(bench, "api")
    for run in range(config.repeats):
        with bench.metered("hello_post", "hello"):
            result = baselines.post_rate(bench, "hello")
        hello.runs.append(result.rate)
        bench.record("hello_post", result.as_json())
        with bench.metered("post_rate", "api"):
            result = baselines.post_rate(bench, "api")
        post.runs.append(result.rate)
        bench.record("post_rate", result.as_json())
        bench.say(
            f"run {run + 1}: hello {hello.runs[-1]:.0f} req/s, POST {post.runs[-1]:.0f} req/s"
        )
        if result.errors["status"] or result.errors["timeout"]:
            bench.say(f"  POST errors: {result.errors}")


def measure_post_latency(bench: Bench) -> None:
    """p99 at a fixed share of the POST maximum, from an open-loop generator."""
    config = bench.config
    top = bench.figures["post_rate"].value or 0.0
    rate = max(1.0, config.latency_fraction * top)
    figure = bench.figure(
        "post_p99",
        f"POST /messages p99 at {config.latency_fraction:.0%} of max ({rate:.0f} req/s, open loop)",
        "ms",
        target=Target("<=", 20),
    )
    body = bench.work_dir / "message.json"
    body.write_text(baselines.MESSAGE_BODY)
    for run in range(config.repeats):
        with bench.metered("post_p99", "api"):
            summary = bench.openloop(
                bench.system.url("api"), rate, config.openloop_seconds, post_body=body
            )
        bench.record("post_p99", summary)
        p99 = summary["latency_ms"].get("p99")
        figure.runs.append(float("inf") if p99 is None else p99)
        bench.say(
            f"run {run + 1}: p99 {p99} ms at {summary['achieved_rate']} req/s "
            f"(p50 {summary['latency_ms'].get('p50')} ms, statuses {summary['statuses']})"
        )


def batch_body(size: int) -> str:
    item = json.loads(baselines.MESSAGE_BODY)
    return json.dumps({"messages": [item] * size}, separators=(",", ":"))


def measure_batch(bench: Bench) -> None:
    """POST /messages/batch of batch_size items on a few connections: messages/s."""
    config = bench.config
    figure = bench.figure(
        "batch_rate",
        f"batch ingest messages/s ({config.batch_size} per request, "
        f"{config.batch_connections} connections)",
        "msg/s",
        baseline="redis_lpush",
        target=Target(">=", 20_000),
    )
    script = post_script("/messages/batch", batch_body(config.batch_size), bench.system.headers)
    url = bench.system.url("api") + "/messages/batch"
    options = {"connections": config.batch_connections, "threads": config.wrk_threads}
    run_wrk(url, script, seconds=config.warmup_seconds, timeout_s=30, **options)
    for run in range(config.repeats):
        with bench.metered("batch_rate", "api"):
            result = run_wrk(url, script, seconds=config.wrk_seconds, timeout_s=30, **options)
        bench.record("batch_rate", result.as_json())
        figure.runs.append(result.rate * config.batch_size)
        bench.say(f"run {run + 1}: {figure.runs[-1]:.0f} messages/s, errors {result.errors}")

"""`make bench`: start Herald against a private database and Redis namespace, measure, report."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import baselines, e2e, ingest, overload, report, sender, status
from bench.config import BenchConfig, load
from bench.context import Bench
from bench.processes import BIN
from bench.storage import Database, Namespace
from bench.system import System, log_events
from herald.core.settings import Settings

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
TOOLS = ("wrk", "redis-benchmark", "pgbench")
# HERALD_TENANT_RATE of a bench run: far above anything one machine can accept.
BENCH_RATE = 1_000_000_000


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def _cpu_model() -> str:
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def machine_facts() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "load_average_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_uncommitted": _git("status", "--porcelain", "--untracked-files=no").splitlines(),
    }


def _start(bench: Bench) -> None:
    config = bench.config
    needs_hello_status = bench.system.status_config != bench.system.api_config
    bench.system.start("hello", "api", "messageapp", *(["status"] if config.runs("status") else []))
    if needs_hello_status and config.runs("status"):
        bench.system.start("hello-status")
    classes = {name: bench.system.worker_class(name) for name in ("api", "hello")}
    bench.raw["worker_class"] = classes
    if classes["api"] != classes["hello"]:
        bench.say(f"WARNING: the API and hello-world run different gunicorn workers: {classes}")


def _baselines(bench: Bench) -> None:
    config = bench.config
    bench.say("baselines: Redis LPUSH, PostgreSQL INSERT+commit")
    lpush = bench.figure("redis_lpush", "Redis LPUSH/s (redis-benchmark, 50 clients)", "op/s")
    insert = bench.figure(
        "pg_insert",
        f"PostgreSQL single-row INSERT+commit/s (pgbench, {config.pgbench_clients} clients)",
        "tx/s",
    )
    for _ in range(config.repeats):
        lpush.runs.append(baselines.redis_lpush(bench))
        insert.runs.append(baselines.pg_insert(bench))
    bench.say(f"LPUSH {lpush.runs}, INSERT {insert.runs}")


def _phases(bench: Bench) -> None:
    config = bench.config
    _start(bench)
    _baselines(bench)
    if config.runs("ingest"):
        bench.say("POST /messages against hello-world, interleaved")
        ingest.measure_post(bench)
        bench.say("POST /messages p99 at a fixed rate")
        ingest.measure_post_latency(bench)
    if config.runs("batch"):
        bench.say("batch ingest")
        ingest.measure_batch(bench)
    if config.runs("overload"):
        bench.say(f"overload: {config.overload_connections} connections against one api")
        overload.measure_overload(bench)
    bench.settle()
    bench.ns.clear()  # ingest runs queued sends that no sender will take
    if config.runs("status"):
        bench.say("status reads")
        status.measure_status(bench)
    bench.system.stop("status", "hello", "hello-status")
    if config.runs("sender"):
        for latency, target in ((0, 3000), (50, 1500)):
            bench.say(f"sender throughput, provider at {latency} ms")
            sender.measure_throughput(bench, latency, target)
    if config.runs("e2e"):
        bench.say("end-to-end latency")
        bench.settle()
        bench.db.truncate()
        bench.ns.clear()
        bench.system.start("recorder")
        e2e.measure_e2e(bench)
    if config.runs("rss"):
        sender.measure_rss(bench)


def _settings(db: Database, ns: Namespace) -> Settings:
    # Herald's own defaults throughout, except where the run's data lives and the tenants' rate:
    # the benches measure what the service can take, so no tenant is limited below it (the
    # limiter still runs, one EVALSHA per request, so its cost is in every figure).
    return Settings(
        database_url=db.url, redis_url=ns.url, redis_namespace=ns.name, tenant_rate=BENCH_RATE
    )


def _meta(bench: Bench, started: datetime, facts: dict[str, Any]) -> dict[str, Any]:
    system = bench.system
    settings = system.settings
    return {
        "started": started.isoformat(),
        "seconds": round((datetime.now(UTC) - started).total_seconds(), 1),
        "machine": facts | {"load_average_at_end": os.getloadavg()},
        "servers": bench.raw.pop("servers", {}),
        "gunicorn": {
            "api": {"workers": settings.api_workers, "connections": settings.api_connections},
            "status": {
                "workers": settings.status_workers,
                "connections": settings.status_connections,
            },
            "worker_class": bench.raw.pop("worker_class", {}),
        },
        "overload": {
            "api_max_in_flight": settings.api_max_in_flight,
            "queue_wait_ms": settings.queue_wait_ms,
            "shed_pause_ms": settings.shed_pause_ms,
        },
        "log_events": {log.stem: log_events(log) for log in sorted(bench.work_dir.glob("*.log"))},
        "sender_defaults": {
            "processes": settings.sender_processes,
            "threads": settings.sender_threads,
            "poll_ms": settings.sender_poll_ms,
        },
    }


def _write(bench: Bench, started: datetime, facts: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / started.strftime("%Y%m%dT%H%M%SZ")
    meta = _meta(bench, started, facts)
    mode = "quick" if bench.config.quick else "full"
    subtitle = (
        f"{started:%Y-%m-%d %H:%M} UTC, {mode} run, nproc={facts['nproc']}, "
        f"commit {facts['git_commit']}{' + uncommitted' if facts['git_uncommitted'] else ''}"
    )
    table = report.markdown_table(bench)
    cpu = report.cpu_table(bench, facts["nproc"] or 1)
    report.write_json(bench, stem.with_suffix(".json"), meta)
    report.write_chart(bench, stem.with_suffix(".png"), subtitle)
    stem.with_suffix(".md").write_text(
        f"# Herald benchmark, {subtitle}\n\n"
        f"Machine: {facts['cpu']}, load average at start {facts['load_average_at_start']}, "
        f"at end {meta['machine']['load_average_at_end']}. "
        f"gunicorn (api and hello-world alike): {meta['gunicorn']}. "
        f"Overload protection (api only): {meta['overload']}. "
        f"Sender defaults: {meta['sender_defaults']}.\n\n{table}\n\n"
        f"CPU by process group during each measurement (median of runs, % of one core):\n\n{cpu}\n"
        f"\n{report.contamination(bench, facts['nproc'] or 1)}\n"
        f"\nWarnings, errors and delivery retries in the processes' logs: {meta['log_events']}\n"
    )
    print(f"\n{subtitle}\nnproc = {facts['nproc']} ({facts['cpu']})\n\n{table}\n\n{cpu}\n")
    print(report.contamination(bench, facts["nproc"] or 1))
    return stem


def check_tools() -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"bench: missing {missing}; `make bench` installs them (apt-get)")


def main() -> None:
    config: BenchConfig = load()
    check_tools()
    started = datetime.now(UTC)
    facts = machine_facts()
    print(f"bench: {'quick' if config.quick else 'full'} run, nproc {facts['nproc']}, "
          f"load average {facts['load_average_at_start']}", flush=True)  # fmt: skip
    db, ns = Database(config.postgres_url), Namespace(config.redis_url)
    work = Path(tempfile.mkdtemp(prefix="herald-bench-"))
    settings = _settings(db, ns)
    system = System(settings, work)
    bench = Bench(config, system, db, ns, work)
    db.create()
    stem = None
    try:
        db.migrate(settings.child_environment(), str(BIN / "herald-migrate"))
        system.make_key()
        bench.raw["servers"] = db.server_facts() | ns.server_facts()
        clock = time.monotonic()
        try:
            _phases(bench)
        finally:
            bench.say(f"phases took {time.monotonic() - clock:.0f} s; logs in {work}")
        stem = _write(bench, started, facts)
    finally:
        system.stop_all()
        ns.clear()
        ns.client.close()
        if not config.keep_database:
            db.drop()
    if not config.keep_logs:
        shutil.rmtree(work, ignore_errors=True)
    print(f"bench: wrote {stem}.json, .md and .png", file=sys.stderr)

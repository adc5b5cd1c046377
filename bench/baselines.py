"""Same-run baselines: hello-world POST, raw Redis LPUSH, single-row PostgreSQL INSERT+commit."""

from __future__ import annotations

import re
import subprocess
from urllib.parse import urlsplit

from bench.context import Bench
from bench.wrk import WrkResult, post_script, run_wrk

# What a client sends to POST /messages, and the hello-world gets the very same bytes.
MESSAGE_BODY = '{"destination": "+15550100", "body": "Your verification code is 123456"}'
LPUSH_VALUE = "x" * 36  # the size of the Dramatiq message id that an enqueue pushes
_TPS = re.compile(r"tps = ([0-9.]+) \((?:without initial connection time|excluding connections)")

PGBENCH_SETUP = """
CREATE TABLE IF NOT EXISTS bench_insert (LIKE messages INCLUDING ALL);
CREATE SEQUENCE IF NOT EXISTS bench_insert_seq;
TRUNCATE bench_insert;
"""
# Same row shape and indexes as an ingested message; one statement, so one commit per row.
PGBENCH_SCRIPT = (
    "INSERT INTO bench_insert (id, destination, body, status) VALUES "
    "(lpad(nextval('bench_insert_seq')::text, 22, '0'), '+15550100', "
    "'Your verification code is 123456', 'queued');\n"
)


def post_rate(bench: Bench, server: str, path: str = "/messages") -> WrkResult:
    """wrk's closed-loop maximum of POST path with the message body, on the config's connections."""
    config = bench.config
    return run_wrk(
        bench.system.url(server) + path,
        post_script(path, MESSAGE_BODY, bench.system.headers),
        seconds=config.wrk_seconds,
        connections=config.connections,
        threads=config.wrk_threads,
    )


def warm_up(bench: Bench, server: str, path: str = "/messages") -> None:
    config = bench.config
    run_wrk(
        bench.system.url(server) + path,
        post_script(path, MESSAGE_BODY, bench.system.headers),
        seconds=config.warmup_seconds,
        connections=config.connections,
        threads=config.wrk_threads,
    )


def redis_lpush(bench: Bench) -> float:
    """LPUSH/s by redis-benchmark (50 clients, no pipelining) on a key of our namespace."""
    parts = urlsplit(bench.ns.url)
    db = parts.path.strip("/") or "0"
    key = f"{bench.ns.name}:lpush-baseline"
    argv = [
        "redis-benchmark",
        "-h", parts.hostname or "127.0.0.1",
        "-p", str(parts.port or 6379),
        "--dbnum", db,
        "-n", str(bench.config.redis_requests),
        "-c", "50",
        "--csv",
        "LPUSH", key, LPUSH_VALUE,
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    bench.ns.client.delete(key)
    last = done.stdout.strip().splitlines()[-1]
    rate = float(last.split('","')[1].strip('"'))
    bench.record("redis_lpush", {"argv": [*argv[:-1], "<36 bytes>"], "csv": done.stdout})
    return rate


def pg_insert(bench: Bench) -> float:
    """Single-row INSERT+commit transactions/s by pgbench against the bench database."""
    with bench.db.connect() as conn:
        conn.execute(PGBENCH_SETUP)
    script = bench.work_dir / "insert.sql"
    script.write_text(PGBENCH_SCRIPT)
    parts = urlsplit(bench.db.url)
    clients = bench.config.pgbench_clients
    argv = [
        "pgbench",
        "-h", parts.hostname or "127.0.0.1",
        "-p", str(parts.port or 5432),
        "-U", parts.username or "postgres",
        "-n",  # no VACUUM of pgbench's own tables: we use none
        "-c", str(clients),
        "-j", str(min(clients, 2)),
        "-T", str(max(1, round(bench.config.pgbench_seconds))),
        "-f", str(script),
        bench.db.name,
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    found = _TPS.search(done.stdout)
    if done.returncode != 0 or not found:
        raise SystemExit(f"bench: pgbench failed:\n{done.stdout}\n{done.stderr}")
    bench.record("pg_insert", {"argv": argv, "output": done.stdout})
    return float(found.group(1))

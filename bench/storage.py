"""The benchmark's private PostgreSQL database and Redis namespace on the machine's servers."""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import redis

from herald.core.ids import ALPHABET, is_valid_id, new_id

# Base 64's digits, in value order, written in Herald's alphabet (also in value order).
_TO_HERALD = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", ALPHABET.encode()
)
COPY_COLUMNS = "id, tenant, destination, body, status, attempts, created_at, updated_at, sent_at"


def fast_ids(first_ms: float, step_ms: float, count: int) -> Iterator[str]:
    """Valid, time-ordered Herald ids: 48 bits of ms and 84 random bits, as new_id draws them.

    new_id costs ~10 µs an id in pure Python; base 64 over bytes does the same encoding at C
    speed, which is what loading a million rows needs.
    """
    for i in range(count):
        millis = int(first_ms + i * step_ms).to_bytes(6, "big")
        prefix = base64.b64encode(millis).translate(_TO_HERALD)
        random = base64.b64encode(os.urandom(12)).translate(_TO_HERALD)[:14]
        yield (prefix + random).decode()


def _check_encoding() -> None:
    now = int(time.time() * 1000)
    sample = next(fast_ids(now, 1, 1))
    if not is_valid_id(sample) or sample[:8] != new_id(now)[:8]:
        raise SystemExit(f"bench: id encoding drifted from herald.core.ids ({sample})")


class Database:
    """A database of the benchmark's own, created on the shared server and dropped at the end."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url.rstrip("/")
        self.name = f"herald_bench_{secrets.token_hex(4)}"
        self.url = f"{self.server_url}/{self.name}"

    def create(self) -> None:
        with psycopg.connect(f"{self.server_url}/postgres", autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        with psycopg.connect(f"{self.server_url}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def migrate(self, env: Mapping[str, str], migrate_bin: str) -> None:
        subprocess.run([migrate_bin], env=dict(env), check=True, capture_output=True)

    @contextmanager
    def connect(self) -> Iterator[psycopg.Connection[Any]]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            yield conn

    def truncate(self) -> None:
        with self.connect() as conn:
            conn.execute("TRUNCATE messages, idempotency_keys")

    def count(self, status: str | None = None) -> int:
        with self.connect() as conn:
            if status is None:
                row = conn.execute("SELECT count(*) FROM messages").fetchone()
            else:
                query = "SELECT count(*) FROM messages WHERE status = %s"
                row = conn.execute(query, (status,)).fetchone()
        return int(row[0]) if row else 0

    def load_sent(self, tenant: str, count: int, days: float = 30.0) -> list[str]:
        """Append count delivered messages of tenant spread over the last `days`; a sample of
        their ids."""
        _check_encoding()
        now = datetime.now(UTC)
        first_ms = (now - timedelta(days=days)).timestamp() * 1000
        step_ms = days * 86_400_000 / max(count, 1)
        stamp = now.isoformat()
        sample: list[str] = []
        keep_every = max(1, count // 20_000)
        with self.connect() as conn, conn.cursor() as cur:
            with cur.copy(f"COPY messages ({COPY_COLUMNS}) FROM STDIN") as copy:
                chunk: list[str] = []
                for i, message_id in enumerate(fast_ids(first_ms, step_ms, count)):
                    chunk.append(
                        f"{message_id}\t{tenant}\t+1555{i % 10_000_000:07d}\tbench message {i}"
                        f"\tsent\t1\t{stamp}\t{stamp}\t{stamp}\n"
                    )
                    if i % keep_every == 0:
                        sample.append(message_id)
                    if len(chunk) == 10_000:
                        copy.write("".join(chunk))
                        chunk.clear()
                copy.write("".join(chunk))
            # Steady state for the planner and the visibility map, as autovacuum would leave it.
            conn.execute("VACUUM ANALYZE messages")
        return sample

    def server_facts(self) -> dict[str, str]:
        with self.connect() as conn:
            facts = {}
            names = (
                "server_version",
                "synchronous_commit",
                "fsync",
                "shared_buffers",
                "max_connections",
            )
            for name in names:
                row = conn.execute(f"SHOW {name}").fetchone()
                facts[name] = str(row[0]) if row else "?"
        return facts


class Namespace:
    """Herald's Redis keys for this run, all under one prefix, deleted when done."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.name = f"herald-bench-{secrets.token_hex(4)}"
        self.client: redis.Redis[bytes] = redis.Redis.from_url(url)

    def clear(self) -> int:
        keys = list(self.client.scan_iter(match=f"{self.name}*", count=1000))
        for start in range(0, len(keys), 1000):
            self.client.delete(*keys[start : start + 1000])
        return len(keys)

    def server_facts(self) -> dict[str, str]:
        info = self.client.info("server")
        return {"redis_version": str(info.get("redis_version", "?"))}

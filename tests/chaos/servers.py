"""A private PostgreSQL and Redis for one chaos test: dev's throwaway servers, in temporary dirs.

The machine's shared servers are never touched: each test gets servers it may crash and
restart at will, and every one is stopped (and its files removed) however the test ends.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from dev.embedded import EmbeddedPostgres, EmbeddedRedis

# As in deployments: Herald's role owns its database and is not a superuser.
HERALD_ROLE = "herald"


def herald_url(server: EmbeddedPostgres) -> str:
    """The URL of Herald's database on server, as Herald's own role."""
    return server.url(HERALD_ROLE, user=HERALD_ROLE)


@contextmanager
def private_postgres() -> Iterator[EmbeddedPostgres]:
    """A running cluster with Herald's role and database; gone afterwards, whatever happened."""
    root = Path(tempfile.mkdtemp(prefix="herald-chaos-pg-"))
    # Above the default 100: a test may run several senders and api workers against it.
    server = EmbeddedPostgres(root / "data", {"max_connections": "200"})
    try:
        server.start()
        with psycopg.connect(server.url("postgres"), autocommit=True) as admin:
            admin.execute(f"CREATE ROLE {HERALD_ROLE} LOGIN")
            admin.execute(f"CREATE DATABASE {HERALD_ROLE} OWNER {HERALD_ROLE}")
        yield server
    finally:
        server.stop("immediate")  # its data is thrown away next
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def private_redis() -> Iterator[EmbeddedRedis]:
    """A running Redis that keeps every write in an append-only file, fsynced (appendfsync
    always), so a kill -9 loses nothing it acknowledged; killed and removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="herald-chaos-redis-"))
    aof = ("--appendonly", "yes", "--appendfsync", "always", "--save", "")
    server = EmbeddedRedis(root, aof)
    try:
        server.start()
        yield server
    finally:
        server.kill()
        shutil.rmtree(root, ignore_errors=True)

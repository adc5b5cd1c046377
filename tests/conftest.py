"""Fixtures shared by every level: settings, a private database, a private Redis namespace.

Each xdist worker gets its own freshly created database (migrated once) and every test its own
Dramatiq namespace in Redis, so parallel runs and CI runs on a shared machine never collide.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator

import psycopg
import pytest
import redis
from sqlalchemy import Engine, text

# Metrics are multiprocess everywhere (as under gunicorn); this must precede prometheus_client.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="herald-test-metrics-"))

# The imports below may load prometheus_client, so they come after the line above.
from dramatiq.brokers.redis import RedisBroker

from herald.core.broker import make_broker
from herald.core.db import make_engine
from herald.core.migrate import upgrade
from herald.core.settings import Settings
from tests.servers import POSTGRES_URL, REDIS_URL


@pytest.fixture(autouse=True)
def _no_herald_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests pass settings explicitly; whatever HERALD_* the shell has must not leak in."""
    for name in list(os.environ):
        if name.startswith("HERALD_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A database created for this test process, at the newest schema, dropped afterwards."""
    name = f"herald_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{POSTGRES_URL}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{POSTGRES_URL}/{name}"
    engine = make_engine(Settings(database_url=url), pool_size=1)
    upgrade(engine)
    engine.dispose()
    yield url
    with psycopg.connect(f"{POSTGRES_URL}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def namespace() -> Iterator[str]:
    """A Dramatiq namespace of this test's own; its Redis keys are deleted afterwards."""
    name = f"herald-test-{uuid.uuid4().hex[:12]}"
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{name}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def settings(database_url: str, namespace: str) -> Settings:
    """Settings for this test: private database and namespace, fast retries."""
    return Settings(
        database_url=database_url,
        redis_url=REDIS_URL,
        redis_namespace=namespace,
        provider_timeout=1.0,
        max_retries=3,
        min_backoff_ms=20,
        max_backoff_ms=200,
    )


@pytest.fixture
def broker(settings: Settings) -> Iterator[RedisBroker]:
    """A Dramatiq broker in this test's namespace."""
    broker = make_broker(settings)
    yield broker
    broker.close()


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    """An engine on the test database, emptied before the test."""
    engine = make_engine(settings, pool_size=4)
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE messages"))
    yield engine
    engine.dispose()

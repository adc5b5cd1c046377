"""Both HTTP services in-process on the real database, and keys of tenants to call them with."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import falcon.testing
import pytest
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import Engine, text

from herald.api.app import create_app as create_api
from herald.core import keys
from herald.core.settings import Settings
from herald.status.app import create_app as create_status
from herald.status.queries import Reader

Headers = dict[str, str]


@dataclass(frozen=True)
class Services:
    """The api and the status service as clients reach them (no header sent by default)."""

    api: falcon.testing.TestClient
    status: falcon.testing.TestClient


def make_services(settings: Settings, engine: Engine, broker: RedisBroker) -> Services:
    """api and status with settings' HERALD_AUTH."""
    return Services(
        falcon.testing.TestClient(create_api(settings, engine, broker)),
        falcon.testing.TestClient(create_status(settings, engine, Reader(settings))),
    )


@pytest.fixture
def services(settings: Settings, engine: Engine, broker: RedisBroker) -> Services:
    """api and status asking for keys (HERALD_AUTH=keys, the default)."""
    return make_services(settings, engine, broker)


def bearer(key: str) -> Headers:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def new_key(engine: Engine) -> Callable[..., str]:
    """new_key(tenant, rate=None): a fresh key of tenant (the keys table starts empty)."""
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE api_keys, tenants, idempotency_keys"))

    def new_key(tenant: str, rate: int | None = None) -> str:
        with engine.begin() as conn:
            return keys.create(conn, tenant, None, rate)[1]

    return new_key

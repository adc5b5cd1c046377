"""Idempotent submit on real PostgreSQL: one key, one message, even under concurrent repeats."""

from concurrent.futures import ThreadPoolExecutor

import falcon.testing
import pytest
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import Engine, func, select, text

from herald.api.app import create_app
from herald.core.settings import Settings
from herald.core.tables import messages
from tests.badinput import check_error

PAYLOAD = {"destination": "+15550002", "body": "once"}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Not about keys (test_auth is): every request is tenant `default` (HERALD_AUTH=none)."""
    return settings.model_copy(update={"auth": "none"})


@pytest.fixture
def client(settings: Settings, engine: Engine, broker: RedisBroker) -> falcon.testing.TestClient:
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE idempotency_keys"))
    return falcon.testing.TestClient(create_app(settings, engine, broker))


def _post(
    client: falcon.testing.TestClient, key: str, body: object = PAYLOAD
) -> falcon.testing.Result:
    return client.simulate_post("/messages", json=body, headers={"Idempotency-Key": key})


def _count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(messages)).scalar_one())


def test_same_key_and_payload_answers_the_first_message(
    client: falcon.testing.TestClient, engine: Engine
) -> None:
    first = _post(client, "order-17")
    again = _post(client, "order-17")
    assert again.status_code == 202
    assert again.json == first.json
    assert again.headers["Location"] == first.headers["Location"]
    assert _count(engine) == 1


def test_the_repeat_reports_the_current_status(
    client: falcon.testing.TestClient, engine: Engine
) -> None:
    first = _post(client, "order-18").json["id"]
    client.simulate_post(f"/messages/{first}/cancel")
    assert _post(client, "order-18").json == {"id": first, "status": "canceled"}


def test_same_key_with_another_payload_is_422(client: falcon.testing.TestClient) -> None:
    _post(client, "order-19")
    other = _post(client, "order-19", {"destination": "+15550002", "body": "twice"})
    check_error(
        other.status_code, {k.lower(): v for k, v in other.headers.items()}, other.json, 422
    )


def test_same_instant_in_another_offset_is_the_same_payload(
    client: falcon.testing.TestClient,
) -> None:
    utc = {**PAYLOAD, "send_at": "2031-01-01T10:00:00Z"}
    paris = {**PAYLOAD, "send_at": "2031-01-01T11:00:00+01:00"}
    assert _post(client, "k-tz", utc).json == _post(client, "k-tz", paris).json


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "tab\there"])
def test_malformed_keys_are_422(client: falcon.testing.TestClient, key: str) -> None:
    answer = client.simulate_post(
        "/messages",
        json=PAYLOAD,
        headers={"Idempotency-Key": key.encode("utf-8").decode("latin-1")},
    )
    assert answer.status_code == 422


def test_concurrent_repeats_all_get_one_id(
    client: falcon.testing.TestClient, engine: Engine
) -> None:
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: _post(client, "burst-1"), range(16)))
    assert {a.status_code for a in answers} == {202}
    assert len({a.json["id"] for a in answers}) == 1
    assert _count(engine) == 1


def test_an_expired_key_creates_a_new_message(
    client: falcon.testing.TestClient, engine: Engine
) -> None:
    first = _post(client, "old-key").json["id"]
    with engine.begin() as conn:
        conn.execute(text("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'"))
    second = _post(client, "old-key", {"destination": "d", "body": "new"})
    assert second.status_code == 202
    assert second.json["id"] != first

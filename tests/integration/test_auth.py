"""Keys on both services in-process, on the real database: who gets in, and at what cost."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import falcon.testing
import pytest
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import Engine, event, select, text

from herald.core import keys
from herald.core.db import make_engine
from herald.core.settings import Settings
from herald.core.tables import api_keys, messages
from herald.core.tenants import DEFAULT_TENANT
from tests.badinput import check_error
from tests.integration.conftest import Services, bearer, make_services
from tests.stack import wait_for

NewKey = Callable[..., str]
MESSAGE = {"destination": "+15550100", "body": "hello"}
UNKNOWN_ID = "-P77H0heo8YbSL83y6dCQL"


def _post(services: Services, headers: dict[str, str]) -> falcon.testing.Result:
    return services.api.simulate_post("/messages", json=MESSAGE, headers=headers)


def _count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM messages")).scalar_one())


def _wrong_ways(new_key: NewKey, engine: Engine) -> dict[str, dict[str, str]]:
    """Every way a request's key can be wrong: its headers."""
    good = new_key("acme")
    revoked = new_key("acme")
    with engine.begin() as conn:
        keys.revoke(conn, keys.key_id_of(revoked) or "")
    _, never_stored = keys._new_key()
    key_id = keys.key_id_of(good)
    other_secret = never_stored.replace(str(keys.key_id_of(never_stored)), str(key_id))
    return {
        "no header": {},
        "not Bearer": {"Authorization": f"Basic {good}"},
        "Bearer without a key": {"Authorization": "Bearer"},
        "malformed": bearer(good[:-1]),
        "unknown id": bearer(never_stored),
        "wrong secret": bearer(other_secret),
        "revoked": bearer(revoked),
    }


def _assert_refused(answer: falcon.testing.Result, sent: dict[str, str]) -> None:
    check_error(answer.status_code, dict(answer.headers), answer.json, 401)
    assert answer.headers["WWW-Authenticate"] == "Bearer"
    for value in sent.values():  # the answer never repeats the key it was given
        if "hk_" in value:
            assert value.split()[-1][-20:] not in answer.text


@pytest.mark.parametrize(
    "way",
    [
        "no header", "not Bearer", "Bearer without a key", "malformed", "unknown id",
        "wrong secret", "revoked",
    ],
)  # fmt: skip
def test_each_way_a_key_can_be_wrong_is_401_on_every_route(
    services: Services, new_key: NewKey, engine: Engine, way: str
) -> None:
    headers = _wrong_ways(new_key, engine)[way]
    _assert_refused(_post(services, headers), headers)
    batch = {"messages": [MESSAGE]}
    api = services.api
    _assert_refused(api.simulate_post("/messages/batch", json=batch, headers=headers), headers)
    for action in ("cancel", "retry"):
        path = f"/messages/{UNKNOWN_ID}/{action}"
        _assert_refused(api.simulate_post(path, headers=headers), headers)
    for path in (f"/message/{UNKNOWN_ID}/status", f"/message/{UNKNOWN_ID}", "/message/list"):
        _assert_refused(services.status.simulate_get(path, headers=headers), headers)
    assert _count(engine) == 0  # nothing stored for a refused request


def test_health_readiness_and_metrics_need_no_key(services: Services) -> None:
    for client in (services.api, services.status):
        for path in ("/healthz", "/readyz", "/metrics"):
            assert client.simulate_get(path).status_code == 200, path
        assert client.simulate_get("/no/such/route").status_code == 404


def test_a_message_belongs_to_the_tenant_of_its_key(
    services: Services, new_key: NewKey, engine: Engine
) -> None:
    key = new_key("acme")
    answer = _post(services, bearer(key))
    assert answer.status_code == 202
    message_id = answer.json["id"]
    with engine.connect() as conn:
        owner = conn.execute(select(messages.c.tenant).where(messages.c.id == message_id))
        assert owner.scalar_one() == "acme"
    status = services.status.simulate_get(f"/message/{message_id}/status", headers=bearer(key))
    assert status.json == {"status": "queued"}


def test_a_key_revoked_after_use_is_refused_within_5_s(
    services: Services, new_key: NewKey, engine: Engine
) -> None:
    key = new_key("acme")
    assert _post(services, bearer(key)).status_code == 202  # now in the process's memory
    with engine.begin() as conn:
        keys.revoke(conn, keys.key_id_of(key) or "")
    revoked_at = time.monotonic()
    wait_for(lambda: _post(services, bearer(key)).status_code == 401, 5, "the key refused")
    status_path = f"/message/{UNKNOWN_ID}/status"
    wait_for(
        lambda: services.status.simulate_get(status_path, headers=bearer(key)).status_code == 401,
        max(0.1, 5 - (time.monotonic() - revoked_at)),
        "the key refused by status",
    )


@pytest.fixture
def key_reads(engine: Engine) -> Iterator[list[str]]:
    """The statements the services send that read the keys table, as they are sent."""
    seen: list[str] = []

    def capture(*args: Any) -> None:
        if "FROM api_keys" in args[2]:
            seen.append(args[2])

    event.listen(engine, "before_cursor_execute", capture)
    yield seen
    event.remove(engine, "before_cursor_execute", capture)


def test_key_checks_cost_no_query_per_request(
    services: Services, new_key: NewKey, key_reads: list[str]
) -> None:
    key = new_key("acme")
    started = time.monotonic()
    for _ in range(50):
        assert _post(services, bearer(key)).status_code == 202
        assert services.status.simulate_get("/message/list", headers=bearer(key)).status_code == 200
    seconds = time.monotonic() - started
    # One read per service per cache lifetime (2 s), however many requests.
    assert len(key_reads) <= 2 * (1 + int(seconds / 2)), len(key_reads)


def test_an_unknown_key_is_remembered_too(
    services: Services, new_key: NewKey, key_reads: list[str]
) -> None:
    new_key("acme")  # empties the table
    _, unknown = keys._new_key()
    for _ in range(20):
        assert _post(services, bearer(unknown)).status_code == 401
    assert len(key_reads) <= 2


def test_the_api_records_last_use_and_the_status_service_never_writes(
    services: Services, new_key: NewKey, engine: Engine
) -> None:
    posting, reading = new_key("acme"), new_key("acme")
    assert _post(services, bearer(posting)).status_code == 202
    assert services.status.simulate_get("/message/list", headers=bearer(reading)).status_code == 200

    def last_used(key: str) -> Any:
        with engine.connect() as conn:
            query = select(api_keys.c.last_used_at).where(api_keys.c.id == keys.key_id_of(key))
            return conn.execute(query).scalar_one()

    wait_for(lambda: last_used(posting), 5, "the api to record the key's use")
    time.sleep(0.5)
    assert last_used(reading) is None


def test_postgresql_down_is_503_for_a_key_not_in_memory_not_401(broker: RedisBroker) -> None:
    dead = Settings(database_url="postgresql://postgres@127.0.0.1:1/none")
    down = make_services(dead, make_engine(dead), broker)
    _, key = keys._new_key()
    for answer in (
        _post(down, bearer(key)),
        down.status.simulate_get("/message/list", headers=bearer(key)),
    ):
        check_error(answer.status_code, dict(answer.headers), answer.json, 503)
        assert answer.headers["Retry-After"] == "1"


@pytest.fixture
def open_services(settings: Settings, engine: Engine, broker: RedisBroker) -> Services:
    """api and status with HERALD_AUTH=none."""
    return make_services(settings.model_copy(update={"auth": "none"}), engine, broker)


def test_herald_auth_none_needs_no_key_and_every_request_is_tenant_default(
    open_services: Services, new_key: NewKey, engine: Engine
) -> None:
    acme = new_key("acme")
    for headers in ({}, bearer(acme), {"Authorization": "anything"}):
        answer = _post(open_services, headers)
        assert answer.status_code == 202
        message_id = answer.json["id"]
        with engine.connect() as conn:
            owner = conn.execute(select(messages.c.tenant).where(messages.c.id == message_id))
            assert owner.scalar_one() == DEFAULT_TENANT
        path = f"/message/{message_id}/status"
        assert open_services.status.simulate_get(path).json == {"status": "queued"}

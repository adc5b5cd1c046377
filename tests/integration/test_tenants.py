"""Tenants see only their own, in-process on the real database: another tenant's id is 404."""

from __future__ import annotations

from collections.abc import Callable

import falcon.testing
import pytest
from sqlalchemy import Engine, select, update

from herald.core.tables import messages
from tests.integration.conftest import Headers, Services, bearer

UNKNOWN_ID = "-P77H0heo8YbSL83y6dCQL"


@pytest.fixture
def acme(new_key: Callable[..., str]) -> Headers:
    return bearer(new_key("acme"))


@pytest.fixture
def globex(new_key: Callable[..., str]) -> Headers:
    return bearer(new_key("globex"))


def _send(services: Services, who: Headers, body: str = "b", **headers: str) -> str:
    answer = services.api.simulate_post(
        "/messages", json={"destination": "d", "body": body}, headers={**who, **headers}
    )
    assert answer.status_code == 202, answer.json
    message_id: str = answer.json["id"]
    return message_id


def _unknown(message_id: str) -> dict[str, str]:
    """The 404 body of an id nobody has: another tenant's id must get exactly this."""
    return {"title": "Unknown message", "description": f"no message {message_id!r}"}


def _as_unknown(answer: falcon.testing.Result, message_id: str) -> None:
    assert (answer.status_code, answer.json) == (404, _unknown(message_id))


def _fail(engine: Engine, message_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(update(messages).where(messages.c.id == message_id).values(status="failed"))


def test_another_tenants_id_is_404_exactly_as_an_unknown_id_on_every_route(
    services: Services, acme: Headers, globex: Headers, engine: Engine
) -> None:
    theirs = _send(services, acme)
    for message_id in (theirs, UNKNOWN_ID):
        for path in (f"/message/{message_id}/status", f"/message/{message_id}"):
            _as_unknown(services.status.simulate_get(path, headers=globex), message_id)
            assert services.status.simulate_head(path, headers=globex).status_code == 404
        for action in ("cancel", "retry"):
            path = f"/messages/{message_id}/{action}"
            _as_unknown(services.api.simulate_post(path, headers=globex), message_id)
    # Nothing happened to it: still queued, and its owner still cancels it.
    status = services.status.simulate_get(f"/message/{theirs}/status", headers=acme)
    assert status.json == {"status": "queued"}
    assert services.api.simulate_post(f"/messages/{theirs}/cancel", headers=acme).status_code == 200


def test_another_tenant_cannot_retry_a_failed_message(
    services: Services, acme: Headers, globex: Headers, engine: Engine
) -> None:
    failed = _send(services, acme)
    _fail(engine, failed)
    _as_unknown(services.api.simulate_post(f"/messages/{failed}/retry", headers=globex), failed)
    with engine.connect() as conn:
        status = conn.execute(select(messages.c.status).where(messages.c.id == failed))
        assert status.scalar_one() == "failed"
    assert services.api.simulate_post(f"/messages/{failed}/retry", headers=acme).status_code == 202


def test_a_batch_and_reads_in_one_batch_keep_each_tenant_to_its_own(
    services: Services, acme: Headers, globex: Headers
) -> None:
    items = [{"destination": "d", "body": f"b{n}"} for n in range(3)]
    batch = services.api.simulate_post("/messages/batch", json={"messages": items}, headers=acme)
    ids = [item["id"] for item in batch.json["messages"]]
    for message_id in ids:
        mine = services.status.simulate_get(f"/message/{message_id}", headers=acme)
        assert mine.json["id"] == message_id
        _as_unknown(
            services.status.simulate_get(f"/message/{message_id}", headers=globex), message_id
        )


def test_the_list_holds_only_the_tenants_own(
    services: Services, acme: Headers, globex: Headers, engine: Engine
) -> None:
    acmes = [_send(services, acme, f"a{n}") for n in range(3)]
    globexes = [_send(services, globex, f"g{n}") for n in range(2)]
    _fail(engine, acmes[0])
    _fail(engine, globexes[0])

    def listed(who: Headers, query: str = "") -> list[str]:
        page = services.status.simulate_get("/message/list", query_string=query, headers=who)
        return [m["id"] for m in page.json["messages"]]

    assert listed(acme) == acmes[::-1]
    assert listed(globex) == globexes[::-1]
    assert listed(acme, "status=failed") == [acmes[0]]
    assert listed(globex, "status=failed,queued") == globexes[::-1]
    assert listed(acme, f"limit=1&cursor={globexes[-1]}") == [acmes[-1]]


def test_an_idempotency_key_is_scoped_to_its_tenant(
    services: Services, acme: Headers, globex: Headers
) -> None:
    key = {"Idempotency-Key": "order-42"}
    first = _send(services, acme, "acme's", **key)
    # Another tenant, the same key and another payload: its own message, not a 422.
    other = _send(services, globex, "globex's", **key)
    assert other != first
    assert _send(services, acme, "acme's", **key) == first
    assert _send(services, globex, "globex's", **key) == other
    reused = services.api.simulate_post(
        "/messages", json={"destination": "d", "body": "changed"}, headers={**acme, **key}
    )
    assert reused.status_code == 422

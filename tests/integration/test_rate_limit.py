"""Per-tenant rate limits on the api in-process, on real PostgreSQL and Redis."""

from __future__ import annotations

import time
from collections.abc import Callable

import falcon.testing
import pytest
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import Engine, text

from herald.core.broker import make_broker
from herald.core.metrics import exposition
from herald.core.settings import Settings
from tests.badinput import check_error
from tests.integration.conftest import Services, bearer, make_services

NewKey = Callable[..., str]
MESSAGE = {"destination": "+15550100", "body": "hello"}
RATE = 5  # HERALD_TENANT_RATE in these tests: small, so a test reaches it in a few requests


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"tenant_rate": RATE})


def _post(services: Services, key: str) -> falcon.testing.Result:
    return services.api.simulate_post("/messages", json=MESSAGE, headers=bearer(key))


def _batch(services: Services, key: str, count: int) -> falcon.testing.Result:
    body = {"messages": [MESSAGE] * count}
    return services.api.simulate_post("/messages/batch", json=body, headers=bearer(key))


def _stored(engine: Engine, tenant: str) -> int:
    with engine.connect() as conn:
        query = text("SELECT count(*) FROM messages WHERE tenant = :tenant")
        return int(conn.execute(query, {"tenant": tenant}).scalar_one())


def _limited(answer: falcon.testing.Result) -> int:
    """Check a refusal for the rate: a JSON 429 with a whole Retry-After of at least 1 s."""
    check_error(answer.status_code, dict(answer.headers), answer.json, 429)
    retry_after = int(answer.headers["Retry-After"])
    assert retry_after >= 1
    assert answer.headers["RateLimit-Limit"] == str(RATE)
    return retry_after


def test_beyond_the_rate_is_429_with_retry_after_and_nothing_stored(
    services: Services, new_key: NewKey, engine: Engine
) -> None:
    key = new_key("acme")
    for _ in range(RATE):
        assert _post(services, key).status_code == 202
    _limited(_post(services, key))
    assert _stored(engine, "acme") == RATE  # the refused message is nowhere


def test_every_202_says_where_the_client_stands(services: Services, new_key: NewKey) -> None:
    key = new_key("acme")
    first = _post(services, key)
    assert first.status_code == 202
    assert first.headers["RateLimit-Limit"] == str(RATE)
    assert first.headers["RateLimit-Remaining"] == str(RATE - 1)
    assert first.headers["RateLimit-Reset"] == "1"  # full again within the second
    batch = _batch(services, key, 2)
    assert batch.status_code == 202
    assert batch.headers["RateLimit-Remaining"] == str(RATE - 3)


def test_a_batch_counts_its_items(services: Services, new_key: NewKey, engine: Engine) -> None:
    key = new_key("acme")
    assert _batch(services, key, RATE - 1).status_code == 202
    _limited(_batch(services, key, 2))  # one token left: the pair is refused whole
    assert _batch(services, key, 1).status_code == 202
    assert _stored(engine, "acme") == RATE


def test_a_batch_larger_than_the_burst_is_429_and_says_it_can_never_pass(
    services: Services, new_key: NewKey, engine: Engine
) -> None:
    answer = _batch(services, new_key("acme"), RATE + 1)
    check_error(answer.status_code, dict(answer.headers), answer.json, 429)
    assert "Retry-After" not in answer.headers  # waiting would not help
    assert f"at most {RATE}" in answer.json["description"]
    assert _stored(engine, "acme") == 0


def test_the_burst_is_one_seconds_worth_and_refills_at_the_rate(
    services: Services, new_key: NewKey
) -> None:
    key = new_key("acme")
    codes = [_post(services, key).status_code for _ in range(RATE + 3)]
    assert codes == [202] * RATE + [429] * 3
    time.sleep(2 / RATE + 0.05)  # two tokens' worth, and a margin below a third
    codes = [_post(services, key).status_code for _ in range(4)]
    assert codes[:2] == [202, 202]
    assert codes[3] == 429


def test_the_retry_after_is_when_the_message_fits_again(
    services: Services, new_key: NewKey
) -> None:
    key = new_key("acme")
    assert _batch(services, key, RATE).status_code == 202
    wait = _limited(_post(services, key))
    assert wait == 1  # one token refills in 1/RATE s, rounded up to whole seconds
    time.sleep(wait)
    assert _post(services, key).status_code == 202


def test_a_keys_own_rate_is_a_bucket_of_its_own(services: Services, new_key: NewKey) -> None:
    shared, also_shared, own = new_key("acme"), new_key("acme"), new_key("acme", rate=2 * RATE)
    assert _batch(services, own, 2 * RATE).headers["RateLimit-Limit"] == str(2 * RATE)
    assert _post(services, own).status_code == 429
    # The key with its own rate took nothing from its tenant's bucket, which its keys share.
    assert _batch(services, shared, RATE - 1).status_code == 202
    assert _post(services, also_shared).status_code == 202
    _limited(_post(services, shared))


def test_one_tenant_at_its_limit_leaves_another_untouched(
    services: Services, new_key: NewKey
) -> None:
    acme, globex = new_key("acme"), new_key("globex")
    assert _batch(services, acme, RATE).status_code == 202
    _limited(_post(services, acme))
    assert _batch(services, globex, RATE).status_code == 202


def test_only_accepted_messages_count_and_only_ingest_posts_are_limited(
    services: Services, new_key: NewKey
) -> None:
    key = new_key("acme")
    for _ in range(2 * RATE):  # invalid: refused before the bucket, so they take nothing
        answer = services.api.simulate_post("/messages", json={}, headers=bearer(key))
        assert answer.status_code == 422
    first = _batch(services, key, RATE)
    assert first.status_code == 202
    message_id = first.json["messages"][0]["id"]
    _limited(_post(services, key))
    cancel = services.api.simulate_post(f"/messages/{message_id}/cancel", headers=bearer(key))
    assert cancel.status_code == 200
    for path in (f"/message/{message_id}/status", f"/message/{message_id}", "/message/list"):
        assert services.status.simulate_get(path, headers=bearer(key)).status_code == 200


def test_two_api_apps_on_one_redis_share_the_limit(
    settings: Settings, engine: Engine, broker: RedisBroker, new_key: NewKey
) -> None:
    other_broker = make_broker(settings)  # a replica: its own app, client and connections
    try:
        replicas = [make_services(settings, engine, b) for b in (broker, other_broker)]
        key = new_key("acme")
        codes = [_post(replicas[i % 2], key).status_code for i in range(RATE + 2)]
        assert codes == [202] * RATE + [429] * 2
        assert _stored(engine, "acme") == RATE
    finally:
        other_broker.close()


def _unavailable_count() -> float:
    for line in exposition().decode().splitlines():
        if line.startswith("herald_rate_limit_unavailable_total "):
            return float(line.split()[1])
    return 0.0


def test_redis_down_still_accepts_without_limit_headers(
    settings: Settings, engine: Engine, new_key: NewKey
) -> None:
    down = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    dead_broker = make_broker(down)
    try:
        services = make_services(down, engine, dead_broker)
        key = new_key("acme")
        before = _unavailable_count()
        answers = [_post(services, key) for _ in range(RATE + 2)]
        assert [a.status_code for a in answers] == [202] * (RATE + 2)  # fail open
        assert all("RateLimit-Limit" not in a.headers for a in answers)
        assert _stored(engine, "acme") == RATE + 2  # durable; the sweeper enqueues them later
        assert _unavailable_count() - before == RATE + 2
    finally:
        dead_broker.close()


def test_the_buckets_live_in_heralds_namespace_and_expire(
    services: Services, new_key: NewKey, broker: RedisBroker, settings: Settings
) -> None:
    assert _post(services, new_key("acme")).status_code == 202
    found = list(broker.client.scan_iter(match="*ratelimit*", count=1000))
    ours = [k for k in found if k.startswith(f"{settings.redis_namespace}:".encode())]
    assert ours == [f"{settings.redis_namespace}:ratelimit:tenant:acme".encode()]
    assert 0 < broker.client.pttl(ours[0]) <= 1000 // RATE

"""herald_ingest_messages_total on the api in-process: per tenant, by outcome, never a key."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from herald.core import keys
from herald.core.metrics import exposition
from herald.core.settings import Settings
from tests.integration.conftest import Services, bearer

NewKey = Callable[..., str]
MESSAGE = {"destination": "+15550100", "body": "hello"}
RATE = 4
_SAMPLE = re.compile(r'^herald_ingest_messages_total\{outcome="(\w+)",tenant="([^"]+)"\} (\S+)$')


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"tenant_rate": RATE})


def _counts() -> dict[tuple[str, str], float]:
    """(tenant, outcome) -> messages, as a scrape of /metrics reports them."""
    found = (_SAMPLE.match(line) for line in exposition().decode().splitlines())
    return {(m[2], m[1]): float(m[3]) for m in found if m}


def _post(services: Services, path: str, body: object, key: str) -> int:
    return services.api.simulate_post(path, json=body, headers=bearer(key)).status_code


def test_messages_are_counted_per_tenant_by_outcome_and_a_batch_by_its_items(
    services: Services, new_key: NewKey
) -> None:
    acme, globex = new_key("acme"), new_key("globex")
    _, unknown = keys._new_key()
    before = _counts()
    assert _post(services, "/messages", MESSAGE, acme) == 202
    assert _post(services, "/messages/batch", {"messages": [MESSAGE] * 3}, acme) == 202
    assert _post(services, "/messages/batch", {"messages": [MESSAGE] * 2}, acme) == 429
    assert _post(services, "/messages", {"destination": ""}, globex) == 422
    assert _post(services, "/messages", MESSAGE, unknown) == 401
    assert _post(services, "/messages/batch", {"messages": [MESSAGE]}, globex) == 202
    after = _counts()
    grown = {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}
    assert grown == {
        ("acme", "accepted"): 4,
        ("acme", "rate"): 2,
        ("globex", "validation"): 1,
        ("-", "auth"): 1,
        ("globex", "accepted"): 1,
    }
    scrape = exposition().decode()
    for key in (acme, globex, unknown):  # neither a key nor its id is ever a label
        assert key not in scrape
        assert str(keys.key_id_of(key)) not in scrape


def test_reads_cancel_and_retry_are_not_ingest(services: Services, new_key: NewKey) -> None:
    key = new_key("acme")
    before = _counts()
    for action in ("cancel", "retry"):
        path = f"/messages/-P77H0heo8YbSL83y6dCQL/{action}"
        assert services.api.simulate_post(path, headers=bearer(key)).status_code == 404
    assert _counts() == before

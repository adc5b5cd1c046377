"""Overload protection in a real herald-api process (gunicorn, gevent, herald.core.admission)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import text

from herald.core.db import make_engine
from herald.core.settings import Settings
from tests.pglocks import BLOCK_INSERTS, held, wait_for_lock_waiters
from tests.stack import Stack, running_stack

MESSAGE = {"destination": "+15550001", "body": "hello"}


@pytest.fixture
def stack(settings: Settings) -> Iterator[Stack]:
    """One api worker with one place, refusing at once: the bound is reached by one request."""
    bounded = settings.model_copy(
        update={"api_workers": 1, "api_max_in_flight": 1, "queue_wait_ms": 0, "shed_pause_ms": 0}
    )
    with running_stack(bounded, sender=False) as stack:
        yield stack


def _rows(settings: Settings) -> int:
    engine = make_engine(settings, pool_size=1)
    with engine.connect() as conn:
        count = int(conn.execute(text("SELECT count(*) FROM messages")).scalar_one())
    engine.dispose()
    return count


def test_a_real_api_refuses_past_its_bound_with_503_and_retry_after(
    stack: Stack, settings: Settings, database_url: str
) -> None:
    url = f"{stack.api}/messages"
    with ThreadPoolExecutor(1) as pool, held(database_url, BLOCK_INSERTS):
        ahead = pool.submit(stack.http.post, url, json=MESSAGE)
        wait_for_lock_waiters(database_url, 1)
        with httpx.Client(timeout=10, headers=stack.headers) as other:
            refused = other.post(url, json=MESSAGE)
            assert other.get(f"{stack.api}/healthz").status_code == 200
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "1"
    assert set(refused.json()) == {"title", "description"}
    assert ahead.result().status_code == 202
    assert _rows(settings) == 1

"""Group commit on a real PostgreSQL: a caller is told "not stored" only when nothing is stored.

Statements are slowed by locks another session holds, so a batch takes longer than its callers'
wait, as a busy or stalled database makes it.
"""

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import falcon.testing
import pytest
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import Engine, select

from herald.api.app import create_app
from herald.core.batching import Batcher, BatchTimeout
from herald.core.connections import DirectConnection
from herald.core.ids import new_id
from herald.core.settings import Settings
from herald.core.tables import messages
from tests.pglocks import BLOCK_INSERTS, held, hold_until, wait_for_lock_waiters

# A stand-in for the ingest writer's INSERT: one statement for the batch, autocommit.
_INSERT = (
    "INSERT INTO messages (id, destination, body, status)"
    " SELECT unnest(%s::text[]), 'd', 'b', 'queued'"
)
# An uncommitted row with a given id: an INSERT of the same id waits until it is rolled back.
_CLAIM_ID = "INSERT INTO messages (id, destination, body, status) VALUES (%s, 'd', 'b', 'queued')"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Not about keys (test_auth is): every request is tenant `default` (HERALD_AUTH=none)."""
    return settings.model_copy(update={"auth": "none"})


@pytest.fixture
def inserter(settings: Settings, engine: Engine) -> Iterator[Batcher[str, str]]:
    """A Batcher inserting message rows by id on its own connection, waiting 0.2 s to be taken."""
    conn = DirectConnection(settings)

    def insert(ids: list[str]) -> list[str]:
        conn.execute(_INSERT, (ids,))
        return ids

    yield Batcher(insert, 100, "test-inserter", wait_seconds=0.2)
    conn.close()


def _stored(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(select(messages.c.id)).scalars())


def test_a_caller_whose_batch_commits_after_the_wait_gets_its_result(
    inserter: Batcher[str, str], database_url: str, engine: Engine
) -> None:
    message_id = new_id()
    with ThreadPoolExecutor(1) as pool, held(database_url, _CLAIM_ID, (message_id,)) as lock:
        answer = pool.submit(inserter.submit, message_id)
        wait_for_lock_waiters(database_url, 1)  # taken: its INSERT waits on our row lock
        # A later caller's 0.2 s run out (it is never taken): the first caller's have too.
        with pytest.raises(BatchTimeout):
            inserter.submit(new_id())
        assert not answer.done()  # past its wait, it still waits for its batch's outcome
        lock.rollback()  # the INSERT goes through and commits
        assert answer.result() == message_id  # not BatchTimeout: the row is stored
    assert _stored(engine) == {message_id}


def test_a_caller_behind_a_stuck_batch_times_out_and_is_never_written(
    inserter: Batcher[str, str], database_url: str, engine: Engine
) -> None:
    stuck, behind, after = new_id(), new_id(), new_id()
    with ThreadPoolExecutor(1) as pool, held(database_url, _CLAIM_ID, (stuck,)) as lock:
        first = pool.submit(inserter.submit, stuck)
        wait_for_lock_waiters(database_url, 1)
        with pytest.raises(BatchTimeout):
            inserter.submit(behind)  # never taken: the stuck batch holds the writer
        lock.rollback()
        assert inserter.submit(after) == after  # every batch before it has run
        assert _stored(engine) == {stuck, after}
        assert first.result() == stuck


@pytest.fixture
def client(settings: Settings, engine: Engine, broker: RedisBroker) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(settings, engine, broker))


def _post(client: falcon.testing.TestClient, body: str) -> Any:
    return client.simulate_post("/messages", json={"destination": "d", "body": body})


def test_a_post_taken_late_whose_commit_outlasts_the_wait_is_202_not_503(
    client: falcon.testing.TestClient, database_url: str, engine: Engine
) -> None:
    # "behind" waits 2 s to be taken (behind a stalled batch), then its own INSERT waits 3 s
    # more: past the 4.5 s a request waits to be taken, and within the 4 s statement timeout.
    # First the writer's INSERT is prepared, so that each later one takes its lock only once.
    warm = _post(client, "warm")
    with ThreadPoolExecutor(3) as pool:
        with held(database_url, BLOCK_INSERTS):
            ahead = pool.submit(_post, client, "ahead")
            wait_for_lock_waiters(database_url, 1)
            behind = pool.submit(_post, client, "behind")
            start = time.monotonic()
            # Queued behind "ahead"'s INSERT, so it holds the table once "ahead" commits.
            pool.submit(hold_until, database_url, BLOCK_INSERTS, start + 5.0)
            wait_for_lock_waiters(database_url, 2)
            time.sleep(max(0.0, start + 2.0 - time.monotonic()))
        answers = [warm, ahead.result(), behind.result()]
    assert [answer.status_code for answer in answers] == [202, 202, 202]
    assert _stored(engine) == {answer.json["id"] for answer in answers}

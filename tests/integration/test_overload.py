"""Overload protection (herald.core.admission) around the real api and status apps, on real
PostgreSQL and Redis. Work in flight is held by a table lock, not by timing: every assertion is
about what was answered and stored, never how fast."""

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

import falcon.testing
import pytest
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import Engine, text

from herald.api.app import create_app as create_api
from herald.core.admission import RETRY_AFTER_SECONDS, Admission
from herald.core.settings import Settings
from herald.status.app import create_app as create_status
from herald.status.queries import Reader
from tests.pglocks import BLOCK_INSERTS, held, wait_for_lock_waiters
from tests.queues import queued_ids

MESSAGE = {"destination": "+15550001", "body": "hello"}
BLOCK_READS = "LOCK TABLE messages IN ACCESS EXCLUSIVE MODE"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Not about keys (test_auth is): every request is tenant `default` (HERALD_AUTH=none)."""
    return settings.model_copy(update={"auth": "none"})


def _api(
    settings: Settings, engine: Engine, broker: RedisBroker, limit: int, wait: float = 0.0
) -> Admission:
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE messages, idempotency_keys"))
    return Admission(create_api(settings, engine, broker), limit, wait)


def _post(client: falcon.testing.TestClient, body: str = "hello") -> falcon.testing.Result:
    return client.simulate_post("/messages", json={"destination": "+15550001", "body": body})


@contextmanager
def _posts_stuck(
    client: falcon.testing.TestClient, database_url: str, count: int
) -> Iterator[list[Future[falcon.testing.Result]]]:
    """count POSTs admitted and waiting on a table lock until the block ends."""
    with ThreadPoolExecutor(count) as pool, held(database_url, BLOCK_INSERTS):
        stuck = [pool.submit(_post, client, f"ahead {n}") for n in range(count)]
        # One batch takes the first; the others wait for that batch in the app (in flight).
        wait_for_lock_waiters(database_url, 1)
        yield stuck


def _check_refusal(result: falcon.testing.Result) -> None:
    assert result.status_code == 503
    assert result.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert result.headers["Content-Type"] == "application/json"
    assert set(result.json) == {"title", "description"}


def _bodies(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(conn.execute(text("SELECT body FROM messages")).scalars())


def test_request_beyond_the_bound_is_refused_while_the_admitted_one_waits(
    settings: Settings, engine: Engine, broker: RedisBroker, database_url: str
) -> None:
    app = _api(settings, engine, broker, limit=1)
    client = falcon.testing.TestClient(app)
    with _posts_stuck(client, database_url, 1) as stuck:
        # Answered while the admitted request still waits on the lock: refused, not queued.
        _check_refusal(_post(client, "refused"))
        assert app.in_flight == 1
    ahead = stuck[0].result()
    assert ahead.status_code == 202
    assert _bodies(engine) == ["ahead 0"]  # the refused request stored nothing
    assert queued_ids(broker) == [ahead.json["id"]]  # and enqueued nothing


def test_requests_are_admitted_again_once_work_in_flight_drains(
    settings: Settings, engine: Engine, broker: RedisBroker, database_url: str
) -> None:
    app = _api(settings, engine, broker, limit=2)
    client = falcon.testing.TestClient(app)
    with _posts_stuck(client, database_url, 2):
        _check_refusal(_post(client, "refused"))
    assert app.in_flight == 0
    assert _post(client, "after").status_code == 202
    assert _bodies(engine) == ["after", "ahead 0", "ahead 1"]
    assert app.shed == 1


def test_a_request_waiting_for_a_place_is_stored_once_the_one_ahead_finishes(
    settings: Settings, engine: Engine, broker: RedisBroker, database_url: str
) -> None:
    # A wait far longer than the test: the place is freed by the lock's end, not by time.
    app = _api(settings, engine, broker, limit=1, wait=600.0)
    client = falcon.testing.TestClient(app)
    with ThreadPoolExecutor(1) as pool:
        with _posts_stuck(client, database_url, 1) as stuck:
            behind = pool.submit(_post, client, "behind")
        assert stuck[0].result().status_code == 202
        assert behind.result().status_code == 202
    assert _bodies(engine) == ["ahead 0", "behind"]
    assert app.shed == 0


def test_health_and_readiness_are_answered_when_the_bound_is_reached(
    settings: Settings, engine: Engine, broker: RedisBroker, database_url: str
) -> None:
    app = _api(settings, engine, broker, limit=1)
    client = falcon.testing.TestClient(app)
    with _posts_stuck(client, database_url, 1):
        assert client.simulate_get("/healthz").status_code == 200
        assert client.simulate_get("/readyz").status_code == 200
        assert app.in_flight == 1  # neither counted as work in flight
    assert app.shed == 0


def test_every_202_is_stored_and_every_refusal_stores_nothing(
    settings: Settings, engine: Engine, broker: RedisBroker, database_url: str
) -> None:
    app = _api(settings, engine, broker, limit=3)
    client = falcon.testing.TestClient(app)
    with ThreadPoolExecutor(12) as pool:
        with held(database_url, BLOCK_INSERTS):
            answers = [pool.submit(_post, client, f"m{n}") for n in range(12)]
            wait_for_lock_waiters(database_url, 1)
        results = [answer.result() for answer in answers]
    accepted = {r.json["id"] for r in results if r.status_code == 202}
    for refused in (r for r in results if r.status_code != 202):
        _check_refusal(refused)
    with engine.connect() as conn:
        stored = set(conn.execute(text("SELECT id FROM messages")).scalars())
    assert accepted
    assert stored == accepted
    assert app.shed == 12 - len(accepted)


def test_status_reads_beyond_the_bound_are_refused_while_one_waits(
    settings: Settings, engine: Engine, database_url: str
) -> None:
    app = Admission(create_status(settings, engine, Reader(settings)), 1)
    client = falcon.testing.TestClient(app)
    with ThreadPoolExecutor(1) as pool, held(database_url, BLOCK_READS):
        waiting = pool.submit(client.simulate_get, "/message/list")
        wait_for_lock_waiters(database_url, 1)
        _check_refusal(client.simulate_get("/message/list"))
        assert client.simulate_get("/healthz").status_code == 200
    assert waiting.result().status_code == 200
    assert app.in_flight == 0

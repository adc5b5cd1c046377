"""The ingest API in-process on real PostgreSQL and Redis: storage, enqueueing and bad input."""

import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta

import falcon.testing
import pytest
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import Engine, select, text

from herald.api.app import create_app
from herald.core.broker import make_broker
from herald.core.db import make_engine
from herald.core.ids import drawn_at
from herald.core.schemas import MAX_BODY_CHARS, MAX_DESTINATION_CHARS
from herald.core.settings import Settings
from herald.core.tables import messages
from tests.badinput import BAD_INPUT, GOOD_SEND_AT, JSON, check_error
from tests.pglocks import BLOCK_INSERTS, held, wait_for_lock_waiters
from tests.queues import queued_ids
from tests.stack import wait_for


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Not about keys (test_auth is): every request is tenant `default` (HERALD_AUTH=none)."""
    return settings.model_copy(update={"auth": "none"})


@pytest.fixture
def client(settings: Settings, engine: Engine, broker: RedisBroker) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(settings, engine, broker))


def _post(client: falcon.testing.TestClient, body: object) -> falcon.testing.Result:
    return client.simulate_post("/messages", json=body)


def test_accepted_message_is_stored_then_enqueued(
    client: falcon.testing.TestClient, engine: Engine, broker: RedisBroker
) -> None:
    result = _post(client, {"destination": "+15550001", "body": "hello"})
    assert result.status_code == 202
    message_id = result.json["id"]
    assert result.json == {"id": message_id, "status": "queued"}
    assert result.headers["Location"] == f"/message/{message_id}/status"
    with engine.connect() as conn:
        row = conn.execute(select(messages).where(messages.c.id == message_id)).one()
    assert (row.destination, row.body, row.status, row.attempts) == (
        "+15550001",
        "hello",
        "queued",
        0,
    )
    assert queued_ids(broker) == [message_id]


def test_future_send_at_is_scheduled_and_not_enqueued(
    client: falcon.testing.TestClient, broker: RedisBroker
) -> None:
    later = (datetime.now(UTC) + timedelta(days=10)).isoformat()
    result = _post(client, {"destination": "d", "body": "b", "send_at": later})
    assert (result.status_code, result.json["status"]) == (202, "scheduled")
    assert queued_ids(broker) == []


def test_past_send_at_is_sent_at_once(
    client: falcon.testing.TestClient, broker: RedisBroker
) -> None:
    result = _post(client, {"destination": "d", "body": "b", "send_at": "2001-01-01T00:00:00Z"})
    assert (result.status_code, result.json["status"]) == (202, "queued")
    assert queued_ids(broker) == [result.json["id"]]


# A send_at just ahead of the database's clock when the request arrives, and a database that
# reaches the INSERT only later: by the time the row is written, its send_at has passed.
DUE_IN = timedelta(seconds=0.3)


@contextmanager
def _writes_stalled(client: falcon.testing.TestClient, database_url: str) -> Iterator[None]:
    """Writes queue behind a batch stuck on a table lock until the block ends."""
    with ThreadPoolExecutor(1) as pool:
        with held(database_url, BLOCK_INSERTS):
            ahead = pool.submit(_post, client, {"destination": "d", "body": "ahead"})
            wait_for_lock_waiters(database_url, 1)
            yield
        assert ahead.result().status_code == 202


def _sent_while_stalled(
    engine: Engine,
    stall: AbstractContextManager[object],
    request: Callable[[str], falcon.testing.Result],
) -> falcon.testing.Result:
    """request(send_at) with send_at DUE_IN after the database's now, the database stalled
    until its clock has passed send_at."""
    with engine.connect() as conn:
        send_at = conn.execute(text("SELECT now()")).scalar_one() + DUE_IN
    with ThreadPoolExecutor(1) as pool:
        with stall:
            answer = pool.submit(request, send_at.isoformat())
            wait_for(lambda: _database_clock_passed(engine, send_at), 60, "send_at to pass")
        return answer.result()


def _database_clock_passed(engine: Engine, moment: datetime) -> bool:
    # clock_timestamp(), not now(): now() is the time this statement's transaction began.
    with engine.connect() as conn:
        return bool(conn.execute(text("SELECT clock_timestamp() > :m"), {"m": moment}).scalar())


def _stored_status(engine: Engine, message_id: str) -> str:
    with engine.connect() as conn:
        return str(
            conn.execute(select(messages.c.status).where(messages.c.id == message_id)).scalar_one()
        )


def test_scheduled_or_queued_is_the_databases_decision_when_the_row_is_written(
    client: falcon.testing.TestClient, engine: Engine, broker: RedisBroker, database_url: str
) -> None:
    stall = _writes_stalled(client, database_url)
    result = _sent_while_stalled(
        engine,
        stall,
        lambda send_at: _post(client, {"destination": "d", "body": "b", "send_at": send_at}),
    )
    # Due by the database's clock when written: queued and enqueued, though it was ahead of
    # the api's clock when the request came in.
    assert (result.status_code, result.json["status"]) == (202, "queued")
    assert _stored_status(engine, result.json["id"]) == "queued"
    assert queued_ids(broker)[-1:] == [result.json["id"]]


def test_a_batch_is_scheduled_or_queued_by_the_databases_clock(
    client: falcon.testing.TestClient, engine: Engine, broker: RedisBroker, database_url: str
) -> None:
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()

    def batch(send_at: str) -> falcon.testing.Result:
        items = [{"destination": "d", "body": "b", "send_at": send_at},
                 {"destination": "d", "body": "b"},
                 {"destination": "d", "body": "b", "send_at": later}]  # fmt: skip
        return _batch(client, items)

    result = _sent_while_stalled(engine, _writes_stalled(client, database_url), batch)
    answered = result.json["messages"]
    assert [a["status"] for a in answered] == ["queued", "queued", "scheduled"]
    assert [_stored_status(engine, a["id"]) for a in answered] == ["queued", "queued", "scheduled"]
    assert queued_ids(broker)[-2:] == [a["id"] for a in answered[:2]]


@contextmanager
def _pool_exhausted(engine: Engine) -> Iterator[None]:
    """The engine's only pooled connection is taken until the block ends."""
    with engine.connect():
        yield


def test_an_idempotent_post_is_scheduled_or_queued_by_the_databases_clock(
    settings: Settings, engine: Engine, broker: RedisBroker
) -> None:
    # A pool of one: the keyed POST's transaction starts only once the test lets it go.
    lone = make_engine(settings, pool_size=1)
    client = falcon.testing.TestClient(create_app(settings, lone, broker))
    headers = {"Idempotency-Key": f"due-soon-{uuid.uuid4()}"}

    def post(send_at: str) -> falcon.testing.Result:
        body = {"destination": "d", "body": "b", "send_at": send_at}
        return client.simulate_post("/messages", json=body, headers=headers)

    result = _sent_while_stalled(engine, _pool_exhausted(lone), post)
    lone.dispose()
    assert (result.status_code, result.json["status"]) == (202, "queued")
    assert _stored_status(engine, result.json["id"]) == "queued"
    assert queued_ids(broker) == [result.json["id"]]


def test_ids_of_successive_posts_sort_in_acceptance_order(
    client: falcon.testing.TestClient,
) -> None:
    ids = [_post(client, {"destination": "d", "body": str(i)}).json["id"] for i in range(20)]
    assert len(set(ids)) == 20
    # To the millisecond: ids of different milliseconds sort in order.
    assert ids[0] < ids[-1]


@pytest.mark.parametrize(("send_at", "instant"), GOOD_SEND_AT)
def test_every_rfc_3339_offset_and_form_is_stored_as_its_utc_instant(
    client: falcon.testing.TestClient, engine: Engine, send_at: str, instant: str
) -> None:
    result = _post(client, {"destination": "d", "body": "b", "send_at": send_at})
    assert result.status_code == 202, result.json
    with engine.connect() as conn:
        stored = conn.execute(
            select(messages.c.send_at).where(messages.c.id == result.json["id"])
        ).scalar_one()
    assert stored == datetime.fromisoformat(instant)


@pytest.mark.parametrize(
    "text",
    [
        'quotes " and \\ backslashes',
        "tab\tnew\nline\rcontrol\x01\x1f del\x7f",
        "é ü 中文 emoji 🎉 separators \u2028\u2029 bom \ufeff",
        "x" * MAX_BODY_CHARS,
    ],
)
def test_every_text_is_stored_exactly_as_sent(
    client: falcon.testing.TestClient, engine: Engine, text: str
) -> None:
    single = _post(client, {"destination": text[:MAX_DESTINATION_CHARS], "body": text})
    batch = client.simulate_post(
        "/messages/batch", json={"messages": [{"destination": "d", "body": text}]}
    )
    ids = [single.json["id"], batch.json["messages"][0]["id"]]
    with engine.connect() as conn:
        rows = conn.execute(select(messages.c.body).where(messages.c.id.in_(ids))).scalars()
        assert list(rows) == [text, text]


def test_created_at_is_the_millisecond_the_id_encodes(
    client: falcon.testing.TestClient, engine: Engine
) -> None:
    ids = [_post(client, {"destination": "d", "body": str(i)}).json["id"] for i in range(5)]
    batch = client.simulate_post(
        "/messages/batch", json={"messages": [{"destination": "d", "body": "b"}] * 5}
    )
    ids += [item["id"] for item in batch.json["messages"]]
    with engine.connect() as conn:
        rows = conn.execute(
            select(messages.c.id, messages.c.created_at, messages.c.updated_at)
            .where(messages.c.id.in_(ids))
            .order_by(messages.c.id)
        ).all()
    assert [row.created_at for row in rows] == [drawn_at(row.id) for row in rows]
    assert all(row.updated_at >= row.created_at for row in rows)


def _assert_error(result: falcon.testing.Result, code: int) -> None:
    headers = {k.lower(): v for k, v in result.headers.items()}
    check_error(result.status_code, headers, result.json, code)


@pytest.mark.parametrize(("raw", "headers", "code"), BAD_INPUT)
def test_bad_input_gets_its_4xx_with_a_json_error(
    client: falcon.testing.TestClient, raw: bytes, headers: dict[str, str], code: int
) -> None:
    _assert_error(client.simulate_post("/messages", body=raw, headers=headers), code)


@pytest.mark.parametrize(
    ("destination", "body", "code"),
    [
        ("d" * MAX_DESTINATION_CHARS, "b" * MAX_BODY_CHARS, 202),
        ("d" * (MAX_DESTINATION_CHARS + 1), "b", 422),
        ("d", "b" * (MAX_BODY_CHARS + 1), 422),
        ("   ", "b", 422),
        ("d", "", 422),
    ],
)
def test_documented_lengths(
    client: falcon.testing.TestClient, destination: str, body: str, code: int
) -> None:
    assert _post(client, {"destination": destination, "body": body}).status_code == code


def test_charset_parameter_is_accepted(client: falcon.testing.TestClient) -> None:
    headers = {"Content-Type": "application/json; charset=utf-8"}
    result = client.simulate_post(
        "/messages", body=b'{"destination":"d","body":"b"}', headers=headers
    )
    assert result.status_code == 202


def test_unknown_path_and_wrong_method_are_json(client: falcon.testing.TestClient) -> None:
    _assert_error(client.simulate_get("/nowhere"), 404)
    _assert_error(client.simulate_get("/messages"), 405)
    _assert_error(client.simulate_delete("/messages"), 405)


def test_cancel_queued_then_conflict(client: falcon.testing.TestClient) -> None:
    message_id = _post(client, {"destination": "d", "body": "b"}).json["id"]
    result = client.simulate_post(f"/messages/{message_id}/cancel")
    assert (result.status_code, result.json) == (200, {"id": message_id, "status": "canceled"})
    again = client.simulate_post(f"/messages/{message_id}/cancel")
    _assert_error(again, 409)
    assert "canceled" in again.json["description"]


def test_retry_of_a_message_that_has_not_failed_is_409(client: falcon.testing.TestClient) -> None:
    message_id = _post(client, {"destination": "d", "body": "b"}).json["id"]
    _assert_error(client.simulate_post(f"/messages/{message_id}/retry"), 409)


@pytest.mark.parametrize("action", ["cancel", "retry"])
def test_cancel_and_retry_of_unknown_ids_are_404(
    client: falcon.testing.TestClient, action: str
) -> None:
    _assert_error(client.simulate_post(f"/messages/-P77H0heo8YbSL83y6dCQL/{action}"), 404)
    _assert_error(client.simulate_post(f"/messages/not-an-id/{action}"), 404)


def test_readyz_checks_postgresql_and_redis(client: falcon.testing.TestClient) -> None:
    assert client.simulate_get("/readyz").json == {"status": "ready"}
    assert client.simulate_get("/healthz").status_code == 200


def test_readyz_is_503_when_redis_is_unreachable(engine: Engine, database_url: str) -> None:
    dead = Settings(database_url=database_url, redis_url="redis://127.0.0.1:1/0", auth="none")
    app = create_app(dead, engine, make_broker(dead))
    result = falcon.testing.TestClient(app).simulate_get("/readyz")
    _assert_error(result, 503)
    assert "redis" in result.json["description"]


def test_redis_down_still_accepts_durably(engine: Engine, database_url: str) -> None:
    dead = Settings(database_url=database_url, redis_url="redis://127.0.0.1:1/0", auth="none")
    client = falcon.testing.TestClient(create_app(dead, engine, make_broker(dead)))
    result = _post(client, {"destination": "d", "body": "b"})
    assert result.status_code == 202
    with engine.connect() as conn:
        status = conn.execute(select(messages.c.status).where(messages.c.id == result.json["id"]))
        assert status.scalar() == "queued"


def test_postgresql_down_is_503_with_retry_after(broker: RedisBroker) -> None:
    from herald.core.db import make_engine

    dead = Settings(database_url="postgresql://postgres@127.0.0.1:1/none", auth="none")
    client = falcon.testing.TestClient(create_app(dead, make_engine(dead), broker))
    result = _post(client, {"destination": "d", "body": "b"})
    _assert_error(result, 503)
    assert result.headers["Retry-After"] == "1"


def _batch(client: falcon.testing.TestClient, items: Sequence[object]) -> falcon.testing.Result:
    return client.simulate_post("/messages/batch", json={"messages": items})


def test_batch_answers_ids_in_item_order_and_enqueues_in_that_order(
    client: falcon.testing.TestClient, broker: RedisBroker, engine: Engine
) -> None:
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    items: list[object] = [{"destination": f"d{i}", "body": f"b{i}"} for i in range(5)]
    items.insert(2, {"destination": "s", "body": "later", "send_at": later})
    result = _batch(client, items)
    assert result.status_code == 202
    answered = result.json["messages"]
    assert [a["status"] for a in answered] == ["queued"] * 2 + ["scheduled"] + ["queued"] * 3
    queued = [a["id"] for a in answered if a["status"] == "queued"]
    assert queued_ids(broker) == queued
    with engine.connect() as conn:
        bodies = {row.id: row.body for row in conn.execute(select(messages.c.id, messages.c.body))}
    assert [bodies[a["id"]] for a in answered] == ["b0", "b1", "later", "b2", "b3", "b4"]


def test_batch_validation_is_all_or_nothing_naming_each_bad_index(
    client: falcon.testing.TestClient, engine: Engine
) -> None:
    items = [
        {"destination": "d", "body": "ok"},
        {"destination": "d"},
        {"destination": "", "body": "b"},
    ]
    result = _batch(client, items)
    _assert_error(result, 422)
    assert "messages.1" in result.json["description"]
    assert "messages.2" in result.json["description"]
    with engine.connect() as conn:
        assert conn.execute(select(messages.c.id)).first() is None


@pytest.mark.parametrize("count", [0, 1001])
def test_batch_size_is_1_to_1000(client: falcon.testing.TestClient, count: int) -> None:
    _assert_error(_batch(client, [{"destination": "d", "body": "b"}] * count), 422)


def test_batch_of_1000_is_accepted(client: falcon.testing.TestClient) -> None:
    result = _batch(client, [{"destination": "d", "body": "b"}] * 1000)
    assert result.status_code == 202
    assert len({a["id"] for a in result.json["messages"]}) == 1000


def test_batch_body_over_16_mib_is_413(client: falcon.testing.TestClient) -> None:
    raw = b'{"messages": [{"destination": "d", "body": "' + b"x" * (16 * 1024 * 1024) + b'"}]}'
    _assert_error(client.simulate_post("/messages/batch", body=raw, headers=JSON), 413)

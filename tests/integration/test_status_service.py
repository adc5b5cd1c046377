"""The status service in-process on real PostgreSQL: status, record and the operators' list."""

from datetime import UTC, datetime, timedelta

import falcon.testing
import pytest
from sqlalchemy import Engine, insert, text

from herald.core.db import make_engine
from herald.core.ids import new_id
from herald.core.settings import Settings
from herald.core.statuses import Status
from herald.core.tables import messages
from herald.status.app import create_app
from herald.status.queries import Reader


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Not about keys (test_auth is): every request is tenant `default` (HERALD_AUTH=none)."""
    return settings.model_copy(update={"auth": "none"})


@pytest.fixture
def client(engine: Engine, settings: Settings) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(settings, engine, Reader(settings)))


def _rows(engine: Engine, statuses: list[Status], start: datetime) -> list[str]:
    """One row per status, created a second apart from start; their ids in creation order."""
    ids = []
    with engine.begin() as conn:
        for i, status in enumerate(statuses):
            when = start + timedelta(seconds=i)
            message_id = new_id(now_ms=int(when.timestamp() * 1000))
            conn.execute(
                insert(messages).values(
                    id=message_id,
                    destination="d",
                    body=f"b{i}",
                    status=status,
                    created_at=when,
                    updated_at=when,
                    last_error="HTTP 400" if status == "failed" else None,
                )
            )
            ids.append(message_id)
    return ids


START = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)


def test_status_is_exactly_one_field(client: falcon.testing.TestClient, engine: Engine) -> None:
    [message_id] = _rows(engine, [Status.QUEUED], START)
    result = client.simulate_get(f"/message/{message_id}/status")
    assert result.json == {"status": "queued"}


def test_record_has_every_field_in_utc(client: falcon.testing.TestClient, engine: Engine) -> None:
    [message_id] = _rows(engine, [Status.FAILED], START)
    record = client.simulate_get(f"/message/{message_id}").json
    assert set(record) == {
        "id", "destination", "body", "status", "attempts", "last_error",
        "created_at", "updated_at", "send_at", "sent_at",
    }  # fmt: skip
    assert record["created_at"] == "2030-05-01T12:00:00Z"
    assert record["last_error"] == "HTTP 400"


def test_list_filters_by_status_newest_first(
    client: falcon.testing.TestClient, engine: Engine
) -> None:
    ids = _rows(engine, [Status.FAILED, Status.SENT, Status.FAILED, Status.CANCELED], START)
    page = client.simulate_get("/message/list", params={"status": "failed"}).json
    assert [m["id"] for m in page["messages"]] == [ids[2], ids[0]]
    assert page["next_cursor"] is None
    both = client.simulate_get("/message/list", query_string="status=failed,canceled").json
    assert [m["id"] for m in both["messages"]] == [ids[3], ids[2], ids[0]]


def test_list_pages_by_cursor_without_gaps_or_repeats(
    client: falcon.testing.TestClient, engine: Engine
) -> None:
    ids = _rows(engine, [Status.FAILED] * 7, START)
    seen: list[str] = []
    cursor = None
    while True:
        params = {"status": "failed", "limit": "3", **({"cursor": cursor} if cursor else {})}
        page = client.simulate_get("/message/list", params=params).json
        seen += [m["id"] for m in page["messages"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))


def test_list_filters_by_creation_time(client: falcon.testing.TestClient, engine: Engine) -> None:
    ids = _rows(engine, [Status.FAILED] * 5, START)
    params = {
        "created_after": (START + timedelta(seconds=1)).isoformat(),
        "created_before": (START + timedelta(seconds=3)).isoformat(),
    }
    page = client.simulate_get("/message/list", params=params).json
    assert [m["id"] for m in page["messages"]] == [ids[2], ids[1]]


@pytest.mark.parametrize(
    ("name", "when", "matches"),
    [
        ("created_before", "1969-12-31T23:59:59Z", False),
        ("created_before", "1970-01-01T00:00:00Z", False),
        ("created_after", "1969-12-31T23:59:59.999999Z", True),
        ("created_after", "0001-01-01T00:00:00Z", True),
        ("created_before", "0001-01-01T00:00:00Z", False),
        ("created_after", "9999-12-31T23:59:59.999999Z", False),
        ("created_before", "9999-12-31T23:59:59.999999Z", True),
    ],
)
def test_list_accepts_every_time_before_1970_and_up_to_year_9999(
    client: falcon.testing.TestClient, engine: Engine, name: str, when: str, matches: bool
) -> None:
    ids = _rows(engine, [Status.QUEUED, Status.FAILED], START)
    result = client.simulate_get("/message/list", params={name: when})
    assert result.status_code == 200, result.json
    expected = list(reversed(ids)) if matches else []
    assert [m["id"] for m in result.json["messages"]] == expected


@pytest.mark.parametrize(
    "query",
    ["status=lost", "limit=0", "limit=501", "limit=many", "cursor=../x", "created_after=yesterday",
     "created_after=2030-01-01T00:00:00", "colour=red",
     # RFC 3339 only, as for send_at: no epoch numbers, seconds required, UTC years 1-9999.
     "created_after=-1", "created_before=253402300799", "created_after=2030-01-01T00:00Z",
     "created_after=0001-01-01T00:00:00%2B23:59", "created_before=9999-12-31T23:59:59-23:59"],
)  # fmt: skip
def test_bad_list_queries_are_422(client: falcon.testing.TestClient, query: str) -> None:
    result = client.simulate_get("/message/list", query_string=query)
    assert result.status_code == 422
    assert set(result.json) == {"title", "description"}


def test_readyz_checks_postgresql(client: falcon.testing.TestClient) -> None:
    assert client.simulate_get("/readyz").json == {"status": "ready"}


@pytest.mark.parametrize("path", ["/message/{}/status", "/message/{}"])
def test_a_read_on_a_connection_killed_under_it_is_answered_not_503(
    settings: Settings, path: str
) -> None:
    # As after a PostgreSQL restart: the reader's connection is dead, and no ping precedes use.
    engine = make_engine(settings, pool_size=1, pre_ping=False)
    reader = Reader(settings)
    client = falcon.testing.TestClient(create_app(settings, engine, reader))
    [message_id] = _rows(engine, [Status.QUEUED], START)
    assert client.simulate_get(path.format(message_id)).status_code == 200
    with make_engine(settings, pool_size=1).connect() as admin:
        # Every other session of this database: the reader's connections among them.
        admin.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    result = client.simulate_get(path.format(message_id))
    assert result.status_code == 200
    assert result.json["status"] == "queued"
    engine.dispose()


def test_a_list_on_a_pooled_connection_killed_under_it_is_answered_not_503(
    settings: Settings,
) -> None:
    # The list's pool pings no connection before use: the read runs once more instead.
    engine = make_engine(settings, pool_size=1, pre_ping=False)
    client = falcon.testing.TestClient(create_app(settings, engine, Reader(settings)))
    assert client.simulate_get("/message/list").status_code == 200
    with make_engine(settings, pool_size=1).connect() as admin:
        admin.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    assert client.simulate_get("/message/list").status_code == 200
    engine.dispose()

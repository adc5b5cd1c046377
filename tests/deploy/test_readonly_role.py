"""The status service's database role (migration 0003): it reads messages and keys, writes none,
and never reads a tenant's signing secret (migration 0005)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import falcon.testing
import pytest
from sqlalchemy import Engine, event, insert, text, update
from sqlalchemy.exc import ProgrammingError

from herald.core import keys
from herald.core.connections import DirectConnection
from herald.core.db import make_engine
from herald.core.ids import new_id
from herald.core.settings import Settings
from herald.core.tables import messages
from herald.core.tenants import DEFAULT_TENANT
from herald.status.app import create_app
from herald.status.queries import Reader

READER = "herald_readonly"


@pytest.fixture
def reader(database_url: str) -> Iterator[Engine]:
    """An engine whose every connection acts as herald_readonly from the start.

    Privileges are checked against the session's current role, so this is what a login role in
    herald_readonly gets, without creating a login role on the shared server.
    """
    engine = make_engine(Settings(database_url=database_url), pool_size=1)

    @event.listens_for(engine, "connect")
    def _become_reader(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.execute(f"SET ROLE {READER}")
        dbapi_connection.commit()  # a SET in a rolled-back transaction would be undone

    yield engine
    engine.dispose()


def test_the_status_service_answers_on_the_read_only_role(
    engine: Engine, reader: Engine, database_url: str
) -> None:
    message_id = new_id()
    with engine.begin() as conn:
        conn.execute(
            insert(messages).values(id=message_id, destination="d", body="b", status="queued")
        )
        # The role reads the keys table to authenticate (migration 0005 grants it).
        _, key = keys.create(conn, DEFAULT_TENANT, None, None)
    with reader.connect() as conn:
        assert conn.execute(text("SELECT current_user")).scalar_one() == READER
    # The reads by id connect on their own: the same role, set by the URL's options.
    as_reader = f"{database_url}?options=-c%20role%3D{READER}"
    direct = DirectConnection(Settings(database_url=as_reader))
    assert direct.read("SELECT current_user", ()) == [(READER,)]
    direct.close()
    # The pooled engine keeps the URL's options too, beside its statement timeout.
    pooled = make_engine(Settings(database_url=as_reader), pool_size=1)
    with pooled.connect() as conn:
        who = conn.execute(text("SELECT current_user, current_setting('statement_timeout')"))
        assert tuple(who.one()) == (READER, "4s")
    pooled.dispose()
    by_id = Reader(Settings(database_url=as_reader))
    app = create_app(Settings(database_url=as_reader), reader, by_id)
    client = falcon.testing.TestClient(app, headers={"Authorization": f"Bearer {key}"})
    assert client.get("/readyz").status_code == 200
    assert client.get(f"/message/{message_id}/status").json == {"status": "queued"}
    assert client.get(f"/message/{message_id}").status_code == 200
    assert client.get("/message/list").status_code == 200


@pytest.mark.parametrize(
    "statement",
    [
        insert(messages).values(id=new_id(), destination="d", body="b", status="queued"),
        update(messages).values(status="sent"),
        text("DELETE FROM idempotency_keys"),
        text("UPDATE api_keys SET last_used_at = now()"),
        text("SELECT signing_secret FROM tenants"),
        text("CREATE TABLE intruder (id int)"),
    ],
)
def test_the_read_only_role_can_change_nothing(reader: Engine, statement: object) -> None:
    with pytest.raises(ProgrammingError, match="permission denied"), reader.begin() as conn:
        conn.execute(statement)  # type: ignore[call-overload]  # each is an executable statement

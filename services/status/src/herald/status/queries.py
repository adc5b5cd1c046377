"""The status service's reads. It never writes: deployments give it a read-only role."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import DBAPIError

from herald.core.schemas import MessageRecord
from herald.core.statuses import Status
from herald.core.tables import messages

_m = messages.c
T = TypeVar("T")


def read(engine: Engine, query: Callable[[Connection], T]) -> T:
    """Run a read; once more if its pooled connection had died (PostgreSQL restarted).

    The engine does not ping each connection before use (a round trip per request): a read is
    safe to repeat, so the one that finds a dead connection simply runs again on a fresh one.
    """
    try:
        with engine.connect() as conn:
            return query(conn)
    except DBAPIError as error:
        if not error.connection_invalidated:
            raise
    with engine.connect() as conn:
        return query(conn)


def status_of(engine: Engine, message_id: str) -> Status | None:
    """The message's current status, or None if there is no such message."""
    statement = select(_m.status).where(_m.id == message_id)
    found = read(engine, lambda conn: conn.execute(statement).scalar())
    return None if found is None else Status(found)


def record_of(engine: Engine, message_id: str) -> MessageRecord | None:
    """The message's full record, or None if there is no such message."""
    statement = select(messages).where(_m.id == message_id)
    row = read(engine, lambda conn: conn.execute(statement).mappings().first())
    return None if row is None else MessageRecord.model_validate(dict(row))

"""The status service's reads. It never writes: deployments give it a read-only role."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, LiteralString, TypeVar

import psycopg
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from herald.core.batching import Batcher
from herald.core.db import BATCH_WAIT_SECONDS, DirectConnection
from herald.core.schemas import MessageRecord
from herald.core.settings import Settings
from herald.core.statuses import Status
from herald.core.tables import messages

T = TypeVar("T")

# The two reads every client polls, for many ids at once (id = ANY: one statement text for any
# count, prepared once). Their first column is the id.
_STATUSES: LiteralString = "SELECT id, status FROM messages WHERE id = ANY(%s::text[])"
_RECORD_COLUMNS = tuple(column.name for column in messages.columns)
_RECORDS: LiteralString = (
    f"SELECT {', '.join(_RECORD_COLUMNS)} FROM messages WHERE id = ANY(%s::text[])"
)
# Most ids one read carries.
MAX_IDS_PER_READ = 500


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


class _ByIds:
    """One read by id, batched: the ids asked for while the previous batch ran, in one query.

    Its own psycopg connection, autocommit and server-side prepared. A batch that finds its
    connection dead (PostgreSQL restarted under it) runs once more on a fresh one; a statement
    timeout or a refused connection is not repeated, and a request waits for its batch at most
    BATCH_WAIT_SECONDS, so a 503 stays within the contract's 5 s.
    """

    def __init__(self, settings: Settings, statement: LiteralString, name: str) -> None:
        self._conn = DirectConnection(settings)
        self._statement = statement
        # A read has no effect, so a request may give up on it even once it runs.
        self._batcher: Batcher[str, tuple[Any, ...] | None] = Batcher(
            self._read, MAX_IDS_PER_READ, name, wait_seconds=BATCH_WAIT_SECONDS, effect_free=True
        )

    def get(self, message_id: str) -> tuple[Any, ...] | None:
        """The row of message_id (its first column is the id), or None if there is none."""
        return self._batcher.submit(message_id)

    def _read(self, message_ids: list[str]) -> list[tuple[Any, ...] | None]:
        rows = {row[0]: row for row in self.one_by_one(self._statement, (message_ids,))}
        return [rows.get(message_id) for message_id in message_ids]

    def one_by_one(self, statement: LiteralString, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """statement's rows on this reader's connection, retried once on a dead connection."""
        reused = self._conn.connected
        try:
            return self._conn.execute(statement, params).fetchall()
        except psycopg.errors.QueryCanceled:
            raise
        except psycopg.OperationalError:
            if not reused:
                raise
        return self._conn.execute(statement, params).fetchall()


class Reader:
    """Reads by id: statuses and full records, each kind batched on a connection of its own.

    Measured here: a primary-key read through SQLAlchemy's pool cost ~600 µs of CPU, the same
    prepared statement on a plain psycopg connection ~100 µs; read in batches, PostgreSQL's
    own cost per statement (parse of the message, planning a prepared statement, the round
    trip, the commit of the implicit transaction) is shared by every read of the batch.
    """

    def __init__(self, settings: Settings) -> None:
        self._statuses = _ByIds(settings, _STATUSES, "status-reads")
        self._records = _ByIds(settings, _RECORDS, "record-reads")

    def one(self, statement: LiteralString, params: Sequence[Any]) -> tuple[Any, ...] | None:
        """The first row of any read, on the status reads' connection (diagnostics, tests)."""
        rows = self._statuses.one_by_one(statement, params)
        return rows[0] if rows else None

    def status_of(self, message_id: str) -> Status | None:
        """The message's current status, or None if there is no such message."""
        row = self._statuses.get(message_id)
        return None if row is None else Status(row[1])

    def record_of(self, message_id: str) -> MessageRecord | None:
        """The message's full record, or None if there is no such message."""
        row = self._records.get(message_id)
        if row is None:
            return None
        return MessageRecord.model_validate(dict(zip(_RECORD_COLUMNS, row, strict=True)))

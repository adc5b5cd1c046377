"""The status service's reads. It never writes: deployments give it a read-only role."""

from __future__ import annotations

from typing import Any, LiteralString

from herald.core.batching import Batcher
from herald.core.connections import DirectConnection
from herald.core.db import BATCH_WAIT_SECONDS
from herald.core.schemas import MessageRecord
from herald.core.settings import Settings
from herald.core.statuses import Status
from herald.core.tables import messages

# The two reads every client polls, for many ids at once (id = ANY: one statement text for any
# count, prepared once). Their first column is the id.
_STATUSES: LiteralString = "SELECT id, status FROM messages WHERE id = ANY(%s::text[])"
_RECORD_COLUMNS = tuple(column.name for column in messages.columns)
_RECORDS: LiteralString = (
    f"SELECT {', '.join(_RECORD_COLUMNS)} FROM messages WHERE id = ANY(%s::text[])"
)
# Most ids one read carries.
MAX_IDS_PER_READ = 500


class _ByIds:
    """One read by id, batched: the ids asked for while the previous batch ran, in one query.

    Its own psycopg connection, autocommit and server-side prepared. A batch that finds its
    connection dead (PostgreSQL restarted under it) runs once more on a fresh one
    (DirectConnection.read); a statement timeout or a refused connection is not repeated, and a
    request waits for its batch at most BATCH_WAIT_SECONDS, so a 503 stays within the 5 s.
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
        rows = {row[0]: row for row in self._conn.read(self._statement, (message_ids,))}
        return [rows.get(message_id) for message_id in message_ids]


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

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

# The two reads every client polls, for many (tenant, id) pairs at once: one statement text for
# any count, prepared once. Each id is found only as its asker's tenant's, in the query itself
# (another tenant's is not found, as an unknown id), one index lookup per pair. A batch mixes
# tenants' reads, so its rows are matched back by (tenant, id), their first two columns.
_ASKED: LiteralString = (
    " FROM unnest(%s::text[], %s::text[]) AS asked(tenant, id)"
    " JOIN messages m ON m.id = asked.id AND m.tenant = asked.tenant"
)
_STATUSES: LiteralString = "SELECT m.id, m.tenant, m.status" + _ASKED
_RECORD_COLUMNS = (
    "id",
    "tenant",
    *(c.name for c in messages.columns if c.name not in ("id", "tenant")),
)
_RECORDS: LiteralString = f"SELECT {', '.join(f'm.{name}' for name in _RECORD_COLUMNS)}" + _ASKED
# Most ids one read carries.
MAX_IDS_PER_READ = 500


# What a read by id is asked for: (tenant, message id).
Asked = tuple[str, str]


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
        self._batcher: Batcher[Asked, tuple[Any, ...] | None] = Batcher(
            self._read, MAX_IDS_PER_READ, name, wait_seconds=BATCH_WAIT_SECONDS, effect_free=True
        )

    def get(self, tenant: str, message_id: str) -> tuple[Any, ...] | None:
        """The row of tenant's message_id (first the id, then the tenant), or None if tenant
        has no such message."""
        return self._batcher.submit((tenant, message_id))

    def _read(self, asked: list[Asked]) -> list[tuple[Any, ...] | None]:
        tenants = [tenant for tenant, _ in asked]
        ids = [message_id for _, message_id in asked]
        rows = {(row[1], row[0]): row for row in self._conn.read(self._statement, (tenants, ids))}
        return [rows.get(pair) for pair in asked]


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

    def status_of(self, tenant: str, message_id: str) -> Status | None:
        """The current status of tenant's message, or None if tenant has no such message."""
        row = self._statuses.get(tenant, message_id)
        return None if row is None else Status(row[2])

    def record_of(self, tenant: str, message_id: str) -> MessageRecord | None:
        """The full record of tenant's message, or None if tenant has no such message."""
        row = self._records.get(tenant, message_id)
        if row is None:
            return None
        return MessageRecord.model_validate(dict(zip(_RECORD_COLUMNS, row, strict=True)))

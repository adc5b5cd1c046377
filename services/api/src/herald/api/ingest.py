"""Accepting messages: store them durably, then hand their ids to the senders.

Rows from concurrent requests are written together by a Batcher (one INSERT, one COMMIT per
batch: group commit) and enqueued after that COMMIT in acceptance order; each request waits
for its own rows' commit before it answers 202. Whether a row is scheduled or queued is decided
by that INSERT on the database's clock, the one the promoter of scheduled rows runs on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, LiteralString

import orjson
from dramatiq.brokers.redis import RedisBroker
from redis.exceptions import RedisError
from sqlalchemy import Connection, Engine, select

from herald.core import idempotency, transitions
from herald.core.batching import Batcher
from herald.core.broker import enqueue_sends
from herald.core.connections import DirectConnection
from herald.core.db import BATCH_WAIT_SECONDS
from herald.core.ids import drawn_at, new_id
from herald.core.schemas import MAX_BATCH_ITEMS, Accepted, NewBatch, NewMessage
from herald.core.settings import Settings
from herald.core.statuses import Status
from herald.core.tables import messages

log = logging.getLogger(__name__)

Row = dict[str, Any]


# One statement text for any number of rows, all in one JSON parameter: prepared once per
# connection, and serialized by orjson in one call (psycopg's array dumpers quote element by
# element in Python, a large share of the API's CPU per message). Each row names its tenant:
# one batch holds the requests of many.
# Scheduled or queued is decided here, on the database's clock, as the promoter's `send_at <=
# now()` is: an api host whose clock runs ahead can never queue a row before its send_at.
# One small row comes back whatever the count: the ids it scheduled (NULL when none).
_INSERT_ROWS: LiteralString = f"""
    WITH inserted AS (
        INSERT INTO messages (id, tenant, destination, body, status, send_at, created_at)
        SELECT id, tenant, destination, body,
            CASE WHEN send_at > now() THEN '{Status.SCHEDULED.value}'
                ELSE '{Status.QUEUED.value}' END,
            send_at, created_at
        FROM json_to_recordset(%s::json) AS r(
            id text, tenant text, destination text, body text, send_at timestamptz,
            created_at timestamptz
        )
        RETURNING id, status
    )
    SELECT array_agg(id) FILTER (WHERE status = '{Status.SCHEDULED.value}') FROM inserted
"""


class KeyReused(Exception):
    """The Idempotency-Key already names a message with a different payload."""


def _row(tenant: str, new: NewMessage) -> Row:
    message_id = new_id()
    return {
        "id": message_id,
        "tenant": tenant,
        "destination": new.destination,
        "body": new.body,
        "send_at": new.send_at,
        # The id's own millisecond: ids and creation times sort alike. updated_at stays the
        # database's clock, which every timeout of the sweeper is measured on.
        "created_at": drawn_at(message_id),
    }


def _accepted(row: Row, status: Status) -> Accepted:
    # Built from our own row, nothing to validate: model_construct skips pydantic's checks.
    return Accepted.model_construct(id=row["id"], status=status)


def _statuses(rows: list[Row], scheduled: Sequence[str] | None) -> list[Status]:
    """Each row's status as _INSERT_ROWS decided it, from the ids it scheduled."""
    if not scheduled:
        return [Status.QUEUED] * len(rows)
    later = set(scheduled)
    return [Status.SCHEDULED if row["id"] in later else Status.QUEUED for row in rows]


def _queued(rows: list[Row], statuses: list[Status]) -> list[str]:
    """The ids to enqueue, in acceptance order: those the database did not schedule."""
    return [
        row["id"] for row, status in zip(rows, statuses, strict=True) if status is Status.QUEUED
    ]


def _insert(conn: Connection, rows: list[Row]) -> list[Status]:
    """INSERT rows in the caller's transaction (the Idempotency-Key path); their statuses."""
    scheduled = conn.exec_driver_sql(_INSERT_ROWS, (orjson.dumps(rows).decode(),)).scalar()
    return _statuses(rows, scheduled)


def _status_now(conn: Connection, tenant: str, message_id: str) -> Status | None:
    """The status of tenant's message; None for another tenant's, as for an unknown id."""
    query = select(messages.c.status).where(
        messages.c.tenant == tenant, messages.c.id == message_id
    )
    found = conn.execute(query).scalar()
    return None if found is None else Status(found)


class Ingest:
    """The ingest API's logic over one engine and broker (one instance per worker process)."""

    def __init__(self, settings: Settings, engine: Engine, broker: RedisBroker) -> None:
        self._engine = engine
        self._broker = broker
        self._writer_conn = DirectConnection(settings)
        self._writer: Batcher[Row, Status] = Batcher(
            self._write, MAX_BATCH_ITEMS, "ingest-writer", wait_seconds=BATCH_WAIT_SECONDS
        )

    def accept(self, tenant: str, new: NewMessage, key: str | None = None) -> Accepted:
        """Store tenant's new message and enqueue it unless scheduled; once this returns, it is
        durable.

        With a key tenant used in the last 24 h for the same payload, the earlier message is
        answered and nothing is created; for another payload, KeyReused.
        """
        row = _row(tenant, new)
        if key is None:
            return _accepted(row, self._writer.submit(row))
        digest = idempotency.fingerprint(new)
        with self._engine.begin() as conn:
            earlier = idempotency.remember(conn, tenant, key, digest, row["id"])
            if earlier is None:
                statuses = _insert(conn, [row])
            elif not earlier.same_payload:
                raise KeyReused(key)
            else:
                status = _status_now(conn, tenant, earlier.message_id)
                return Accepted(id=earlier.message_id, status=status)
        self._enqueue(_queued([row], statuses))
        return _accepted(row, statuses[0])

    def accept_batch(self, tenant: str, batch: NewBatch) -> list[Accepted]:
        """Store every message of tenant's batch in one transaction, then enqueue them in item
        order."""
        rows = [_row(tenant, new) for new in batch.messages]
        statuses = self._writer.submit_all(rows)
        return [_accepted(row, status) for row, status in zip(rows, statuses, strict=True)]

    def cancel(self, tenant: str, message_id: str) -> tuple[bool, Status | None]:
        """Cancel tenant's message before any sender claims it: (moved, status now), status None
        if tenant has no such message."""
        with self._engine.begin() as conn:
            if transitions.cancel(conn, tenant, message_id):
                return True, Status.CANCELED
            return False, _status_now(conn, tenant, message_id)

    def retry(self, tenant: str, message_id: str) -> tuple[bool, Status | None]:
        """Send tenant's failed message again: (moved, status now), status None if tenant has
        no such message."""
        with self._engine.begin() as conn:
            if not transitions.requeue_failed(conn, tenant, message_id):
                return False, _status_now(conn, tenant, message_id)
        self._enqueue([message_id])
        return True, Status.QUEUED

    def _write(self, rows: list[Row]) -> list[Status]:
        # Texts are free of NUL and lone surrogates (schemas), so JSON carries them exactly.
        inserted = self._writer_conn.execute(_INSERT_ROWS, (orjson.dumps(rows).decode(),))
        (scheduled,) = inserted.fetchone() or (None,)
        statuses = _statuses(rows, scheduled)
        # Enqueue after COMMIT: a worker must never get an id the table lacks.
        self._enqueue(_queued(rows, statuses))
        return statuses

    def _enqueue(self, queued: list[str]) -> None:
        try:
            enqueue_sends(self._broker, queued)
        except RedisError as error:
            # The rows are committed and queued: the sweeper enqueues them when Redis is back.
            log.warning("enqueue of %d failed (%s); the sweeper will send them", len(queued), error)

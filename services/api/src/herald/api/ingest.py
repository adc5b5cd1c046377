"""Accepting messages: store them durably, then hand their ids to the senders.

Rows from concurrent requests are written together by a Batcher (one INSERT, one COMMIT per
batch: group commit) and enqueued after that COMMIT in acceptance order; each request waits
for its own rows' commit before it answers 202.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, LiteralString

import orjson
from dramatiq.brokers.redis import RedisBroker
from redis.exceptions import RedisError
from sqlalchemy import Connection, Engine, insert, select

from herald.core import idempotency, transitions
from herald.core.batching import Batcher
from herald.core.broker import enqueue_sends
from herald.core.db import BATCH_WAIT_SECONDS, DirectConnection
from herald.core.ids import drawn_at, new_id
from herald.core.schemas import MAX_BATCH_ITEMS, Accepted, NewBatch, NewMessage
from herald.core.settings import Settings
from herald.core.statuses import Status
from herald.core.tables import messages

log = logging.getLogger(__name__)

Row = dict[str, Any]


# One statement text for any number of rows, all in one JSON parameter: prepared once per
# connection, and serialized by orjson in one call (psycopg's array dumpers quote element by
# element in Python, a large share of the API's CPU per message).
_INSERT_ROWS: LiteralString = """
    INSERT INTO messages (id, destination, body, status, send_at, created_at)
    SELECT id, destination, body, status, send_at, created_at
    FROM json_to_recordset(%s::json) AS r(
        id text, destination text, body text, status text, send_at timestamptz,
        created_at timestamptz
    )
"""


class KeyReused(Exception):
    """The Idempotency-Key already names a message with a different payload."""


def _row(new: NewMessage, now: datetime) -> Row:
    due_later = new.send_at is not None and new.send_at > now
    message_id = new_id()
    return {
        "id": message_id,
        "destination": new.destination,
        "body": new.body,
        "status": Status.SCHEDULED if due_later else Status.QUEUED,
        "send_at": new.send_at,
        # The id's own millisecond: ids and creation times sort alike. updated_at stays the
        # database's clock, which every timeout of the sweeper is measured on.
        "created_at": drawn_at(message_id),
    }


def _accepted(row: Row) -> Accepted:
    # Built from our own row, nothing to validate: model_construct skips pydantic's checks.
    return Accepted.model_construct(id=row["id"], status=row["status"])


def _status_now(conn: Connection, message_id: str) -> Status | None:
    found = conn.execute(select(messages.c.status).where(messages.c.id == message_id)).scalar()
    return None if found is None else Status(found)


class Ingest:
    """The ingest API's logic over one engine and broker (one instance per worker process)."""

    def __init__(self, settings: Settings, engine: Engine, broker: RedisBroker) -> None:
        self._engine = engine
        self._broker = broker
        self._writer_conn = DirectConnection(settings)
        self._writer: Batcher[Row, None] = Batcher(
            self._write, MAX_BATCH_ITEMS, "ingest-writer", wait_seconds=BATCH_WAIT_SECONDS
        )

    def accept(self, new: NewMessage, key: str | None = None) -> Accepted:
        """Store a new message and enqueue it unless scheduled; once this returns, it is durable.

        With a key seen in the last 24 h for the same payload, the earlier message is answered
        and nothing is created; for another payload, KeyReused.
        """
        row = _row(new, datetime.now(UTC))
        if key is None:
            self._writer.submit(row)
            return _accepted(row)
        with self._engine.begin() as conn:
            earlier = idempotency.remember(conn, key, idempotency.fingerprint(new), row["id"])
            if earlier is None:
                conn.execute(insert(messages), [row])
            elif not earlier.same_payload:
                raise KeyReused(key)
            else:
                return Accepted(id=earlier.message_id, status=_status_now(conn, earlier.message_id))
        self._enqueue([row])
        return _accepted(row)

    def accept_batch(self, batch: NewBatch) -> list[Accepted]:
        """Store every message of the batch in one transaction, then enqueue them in item order."""
        now = datetime.now(UTC)
        rows = [_row(new, now) for new in batch.messages]
        self._writer.submit_all(rows)
        return [_accepted(row) for row in rows]

    def cancel(self, message_id: str) -> tuple[bool, Status | None]:
        """Cancel before any sender claims it: (moved, status now), status None if unknown."""
        with self._engine.begin() as conn:
            if transitions.cancel(conn, message_id):
                return True, Status.CANCELED
            return False, _status_now(conn, message_id)

    def retry(self, message_id: str) -> tuple[bool, Status | None]:
        """Send a failed message again: (moved, status now), status None if unknown."""
        with self._engine.begin() as conn:
            if not transitions.requeue_failed(conn, message_id):
                return False, _status_now(conn, message_id)
        self._enqueue([{"id": message_id, "status": Status.QUEUED}])
        return True, Status.QUEUED

    def _write(self, rows: list[Row]) -> list[None]:
        # Texts are free of NUL and lone surrogates (schemas), so JSON carries them exactly.
        self._writer_conn.execute(_INSERT_ROWS, (orjson.dumps(rows).decode(),))
        # Enqueue after COMMIT: a worker must never get an id the table lacks.
        self._enqueue(rows)
        return [None] * len(rows)

    def _enqueue(self, rows: list[Row]) -> None:
        queued = [row["id"] for row in rows if row["status"] is Status.QUEUED]
        try:
            enqueue_sends(self._broker, queued)
        except RedisError as error:
            # The rows are committed and queued: the sweeper enqueues them when Redis is back.
            log.warning("enqueue of %d failed (%s); the sweeper will send them", len(queued), error)

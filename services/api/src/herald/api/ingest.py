"""Accepting a message: store it durably, then hand its id to the senders."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import dramatiq
from redis.exceptions import RedisError
from sqlalchemy import Connection, Engine, insert, select

from herald.core import idempotency, transitions
from herald.core.broker import enqueue_send
from herald.core.ids import new_id
from herald.core.schemas import Accepted, NewBatch, NewMessage
from herald.core.statuses import Status
from herald.core.tables import messages

log = logging.getLogger(__name__)


def _enqueue(broker: dramatiq.Broker, message_id: str) -> None:
    try:
        enqueue_send(broker, message_id)
    except RedisError as error:
        # The row is committed: the sweeper enqueues queued rows that no queue message reached.
        log.warning(
            "enqueue failed (%s); the sweeper will send it", error, extra={"message_id": message_id}
        )


class KeyReused(Exception):
    """The Idempotency-Key already names a message with a different payload."""


def _store(conn: Connection, message_id: str, new: NewMessage, status: Status) -> None:
    conn.execute(
        insert(messages).values(
            id=message_id,
            destination=new.destination,
            body=new.body,
            status=status,
            send_at=new.send_at,
        )
    )


def _initial_status(new: NewMessage, now: datetime) -> Status:
    return Status.SCHEDULED if new.send_at is not None and new.send_at > now else Status.QUEUED


def _status_now(conn: Connection, message_id: str) -> Status:
    return Status(
        conn.execute(select(messages.c.status).where(messages.c.id == message_id)).scalar_one()
    )


def accept(
    engine: Engine, broker: dramatiq.Broker, new: NewMessage, key: str | None = None
) -> Accepted:
    """Store a new message and enqueue it unless scheduled; once this returns, it is durable.

    With a key seen in the last 24 h for the same payload, the earlier message is answered and
    nothing is created; for another payload, KeyReused.
    """
    message_id = new_id()
    status = _initial_status(new, datetime.now(UTC))
    with engine.begin() as conn:
        if key is not None:
            earlier = idempotency.remember(conn, key, idempotency.fingerprint(new), message_id)
            if earlier is not None:
                if not earlier.same_payload:
                    raise KeyReused(key)
                return Accepted(id=earlier.message_id, status=_status_now(conn, earlier.message_id))
        _store(conn, message_id, new, status)
    # Enqueue after COMMIT: a worker must never get an id the table lacks.
    if status is Status.QUEUED:
        _enqueue(broker, message_id)
    return Accepted(id=message_id, status=status)


def accept_batch(engine: Engine, broker: dramatiq.Broker, batch: NewBatch) -> list[Accepted]:
    """Store every message of the batch in one transaction, then enqueue them in item order."""
    now = datetime.now(UTC)
    accepted = [Accepted(id=new_id(), status=_initial_status(new, now)) for new in batch.messages]
    rows = [
        {
            "id": item.id,
            "destination": new.destination,
            "body": new.body,
            "status": item.status,
            "send_at": new.send_at,
        }
        for item, new in zip(accepted, batch.messages, strict=True)
    ]
    with engine.begin() as conn:
        conn.execute(insert(messages), rows)
    for item in accepted:
        if item.status is Status.QUEUED:
            _enqueue(broker, item.id)
    return accepted


def _current_status(engine: Engine, message_id: str) -> Status | None:
    with engine.connect() as conn:
        found = conn.execute(select(messages.c.status).where(messages.c.id == message_id)).scalar()
    return None if found is None else Status(found)


def cancel(engine: Engine, message_id: str) -> tuple[bool, Status | None]:
    """Cancel before any sender claims it: (moved, status now), status None for unknown ids."""
    with engine.begin() as conn:
        if transitions.cancel(conn, message_id):
            return True, Status.CANCELED
    return False, _current_status(engine, message_id)


def retry(engine: Engine, broker: dramatiq.Broker, message_id: str) -> tuple[bool, Status | None]:
    """Send a failed message again: (moved, status now), status None for unknown ids."""
    with engine.begin() as conn:
        moved = transitions.requeue_failed(conn, message_id)
    if not moved:
        return False, _current_status(engine, message_id)
    _enqueue(broker, message_id)
    return True, Status.QUEUED

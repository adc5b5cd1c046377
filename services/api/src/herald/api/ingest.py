"""Accepting a message: store it durably, then hand its id to the senders."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import dramatiq
from redis.exceptions import RedisError
from sqlalchemy import Engine, insert, select

from herald.core import transitions
from herald.core.broker import enqueue_send
from herald.core.ids import new_id
from herald.core.schemas import Accepted, NewMessage
from herald.core.statuses import Status
from herald.core.tables import messages

log = logging.getLogger(__name__)


def _enqueue(broker: dramatiq.Broker, message_id: str) -> None:
    try:
        enqueue_send(broker, message_id)
    except RedisError as error:
        # The row is committed: the sweeper enqueues queued rows that no queue message reached.
        log.warning("enqueue of %s failed (%s); the sweeper will send it", message_id, error)


def accept(engine: Engine, broker: dramatiq.Broker, new: NewMessage) -> Accepted:
    """Store a new message and enqueue it unless scheduled; once this returns, it is durable."""
    message_id = new_id()
    due_later = new.send_at is not None and new.send_at > datetime.now(UTC)
    status = Status.SCHEDULED if due_later else Status.QUEUED
    with engine.begin() as conn:
        conn.execute(
            insert(messages).values(
                id=message_id,
                destination=new.destination,
                body=new.body,
                status=status,
                send_at=new.send_at,
            )
        )
    # Enqueue after COMMIT: a worker must never get an id the table lacks.
    if status is Status.QUEUED:
        _enqueue(broker, message_id)
    return Accepted(id=message_id, status=status)


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

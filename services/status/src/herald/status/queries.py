"""The status service's reads. It never writes: deployments give it a read-only role."""

from __future__ import annotations

from sqlalchemy import Engine, select

from herald.core.schemas import MessageRecord
from herald.core.statuses import Status
from herald.core.tables import messages

_m = messages.c


def status_of(engine: Engine, message_id: str) -> Status | None:
    """The message's current status, or None if there is no such message."""
    with engine.connect() as conn:
        found = conn.execute(select(_m.status).where(_m.id == message_id)).scalar()
    return None if found is None else Status(found)


def record_of(engine: Engine, message_id: str) -> MessageRecord | None:
    """The message's full record, or None if there is no such message."""
    with engine.connect() as conn:
        row = conn.execute(select(messages).where(_m.id == message_id)).mappings().first()
    return None if row is None else MessageRecord.model_validate(dict(row))

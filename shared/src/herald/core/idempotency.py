"""Idempotency keys: the same key and payload within the window name the first message only.

Safe under concurrent repeats because (tenant, key) is the table's primary key: a second INSERT
waits for the first transaction and then sees its row (no read-then-write race). Two tenants'
same key are two bindings.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC

import orjson
from sqlalchemy import Connection, delete, func, literal_column, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.sql.dml import ReturningInsert

from herald.core.schemas import MAX_IDEMPOTENCY_KEY_CHARS, NewMessage
from herald.core.tables import idempotency_keys

WINDOW_HOURS = 24
IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
INVALID_KEY_DESCRIPTION = (
    f"{IDEMPOTENCY_KEY_HEADER} must be 1-{MAX_IDEMPOTENCY_KEY_CHARS} printable ASCII characters"
)
_KEY = re.compile(rf"[\x20-\x7e]{{1,{MAX_IDEMPOTENCY_KEY_CHARS}}}")
_k = idempotency_keys.c


def is_valid_key(key: str) -> bool:
    """1-255 printable ASCII characters."""
    return _KEY.fullmatch(key) is not None


def fingerprint(new: NewMessage) -> str:
    """A digest of what makes two submissions the same: destination, body and send_at instant."""
    send_at = None if new.send_at is None else new.send_at.astimezone(UTC).isoformat()
    return hashlib.sha256(orjson.dumps([new.destination, new.body, send_at])).hexdigest()


@dataclass(frozen=True, slots=True)
class Earlier:
    """The message a live key already names, and whether the payload matches it."""

    message_id: str
    same_payload: bool


def remember(
    conn: Connection, tenant: str, key: str, digest: str, message_id: str
) -> Earlier | None:
    """Bind tenant's key to message_id unless a live binding exists: None if bound now, else the
    earlier."""
    expired = _k.created_at < func.now() - func.make_interval(0, 0, 0, 0, WINDOW_HOURS)
    values = insert(idempotency_keys).values(
        tenant=tenant, key=key, message_id=message_id, fingerprint=digest
    )
    # An expired binding is taken over, as if the key were new.
    statement: ReturningInsert[tuple[int]] = values.on_conflict_do_update(
        index_elements=[_k.tenant, _k.key],
        set_={"message_id": message_id, "fingerprint": digest, "created_at": func.now()},
        where=expired,
    ).returning(literal_column("1"))
    if conn.execute(statement).first() is not None:
        return None
    earlier = conn.execute(
        select(_k.message_id, _k.fingerprint).where(_k.tenant == tenant, _k.key == key)
    ).one()
    return Earlier(earlier.message_id, earlier.fingerprint == digest)


def purge_expired(conn: Connection, limit: int) -> int:
    """Delete up to limit bindings older than the window, oldest first; how many."""
    cutoff = func.now() - func.make_interval(0, 0, 0, 0, WINDOW_HOURS)
    # Oldest first by the created_at index, so each batch costs its own size, not the table's.
    expired = (
        select(_k.tenant, _k.key)
        .where(_k.created_at < cutoff)
        .order_by(_k.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    # By the whole primary key: another tenant's live binding of the same key stays.
    pairs = tuple_(_k.tenant, _k.key).in_(expired)
    return conn.execute(delete(idempotency_keys).where(pairs)).rowcount

"""API keys: their format, and the api_keys table that stores a hash of each, never the key.

A key is `hk_<key id>_<secret>`: 64 random bits of id in hex, then 256 random bits of secret
(base64url). The id is not secret: it finds the row (`herald-keys list` shows it), and the
SHA-256 of the whole key, compared in constant time, proves the rest. A hash suffices, with no
salt or stretching, because the secret is random and long: there is no dictionary to try.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, func, insert, select, update

from herald.core.tables import api_keys
from herald.core.tenants import check_tenant

KEY_PREFIX = "hk_"
_ID_BYTES = 8
_SECRET_BYTES = 32  # 256 bits
_ID = rf"[0-9a-f]{{{_ID_BYTES * 2}}}"
KEY_ID_PATTERN = re.compile(_ID)
# token_urlsafe(32): 43 characters of base64url without padding.
KEY_PATTERN = re.compile(rf"{KEY_PREFIX}({_ID})_[A-Za-z0-9_-]{{43}}")
_k = api_keys.c


def key_id_of(key: str) -> str | None:
    """The id a well-formed key embeds; None for anything that is not a key."""
    match = KEY_PATTERN.fullmatch(key)
    return None if match is None else match.group(1)


def digest(key: str) -> bytes:
    """What the table stores of a key: SHA-256 of the whole key (id and secret)."""
    return hashlib.sha256(key.encode("ascii")).digest()


def matches(key: str, stored: bytes) -> bool:
    """Whether key hashes to stored, compared in constant time."""
    return hmac.compare_digest(digest(key), stored)


def _new_key() -> tuple[str, str]:
    key_id = secrets.token_hex(_ID_BYTES)
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(_SECRET_BYTES)}"


@dataclass(frozen=True, slots=True)
class StoredKey:
    """What authenticating a key needs from its row."""

    id: str
    tenant: str
    rate: int | None
    secret_hash: bytes
    revoked: bool


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A key as `herald-keys list` shows it: everything but its hash."""

    id: str
    tenant: str
    label: str | None
    rate: int | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def create(conn: Connection, tenant: str, label: str | None, rate: int | None) -> tuple[str, str]:
    """Store a new key's hash for tenant; (key id, key). The key is never stored or shown again."""
    check_tenant(tenant)
    if rate is not None and rate < 1:
        raise ValueError("a rate is a whole number of messages per second, at least 1")
    key_id, key = _new_key()
    conn.execute(
        insert(api_keys).values(
            id=key_id, tenant=tenant, label=label, rate=rate, secret_hash=digest(key)
        )
    )
    return key_id, key


def _info(tenant: str | None = None, key_id: str | None = None) -> Select[Any]:
    statement = select(
        _k.id, _k.tenant, _k.label, _k.rate, _k.created_at, _k.last_used_at, _k.revoked_at
    ).order_by(_k.created_at, _k.id)
    if tenant is not None:
        statement = statement.where(_k.tenant == tenant)
    if key_id is not None:
        statement = statement.where(_k.id == key_id)
    return statement


def listed(conn: Connection, tenant: str | None = None) -> list[KeyInfo]:
    """Every key (of tenant, if given), oldest first, without hashes."""
    return [KeyInfo(*row) for row in conn.execute(_info(tenant))]


def revoke(conn: Connection, key_id: str) -> KeyInfo | None:
    """Revoke the key (a no-op if it already is); the key as it now stands, None if unknown."""
    conn.execute(
        update(api_keys)
        .where(_k.id == key_id, _k.revoked_at.is_(None))
        .values(revoked_at=func.now())
    )
    row = conn.execute(_info(key_id=key_id)).first()
    return None if row is None else KeyInfo(*row)


def find(conn: Connection, key_ids: list[str]) -> dict[str, StoredKey]:
    """The rows of those of key_ids that exist, by id (one statement for any number)."""
    statement = select(_k.id, _k.tenant, _k.rate, _k.secret_hash, _k.revoked_at.is_not(None)).where(
        _k.id.in_(key_ids)
    )
    return {row[0]: StoredKey(*row) for row in conn.execute(statement)}


def touch(conn: Connection, key_ids: list[str]) -> None:
    """Record that the keys were used now (the api's view; the status service never writes)."""
    conn.execute(update(api_keys).where(_k.id.in_(key_ids)).values(last_used_at=func.now()))

"""Tenants: who a message belongs to, and each tenant's callback signing secret.

A tenant exists as soon as a key names it; the tenants table holds only what a tenant owns
beyond its keys (the secret that signs its status callbacks).
"""

from __future__ import annotations

import re
import secrets

from sqlalchemy import Connection, func, select
from sqlalchemy.dialects.postgresql import insert

from herald.core.tables import DEFAULT_TENANT, tenants

__all__ = ["DEFAULT_TENANT", "TENANT_PATTERN", "check_tenant", "signing_secret"]

# Short and plain: a tenant's name goes into every log line of its requests.
TENANT_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
SECRET_PREFIX = "hs_"
_t = tenants.c


def check_tenant(name: str) -> None:
    """ValueError unless name is a valid tenant name."""
    if TENANT_PATTERN.fullmatch(name) is None:
        raise ValueError(
            "a tenant name is 1-64 characters of letters, digits, '_', '.' and '-',"
            " starting with a letter or digit"
        )


def signing_secret(conn: Connection, tenant: str, rotate: bool = False) -> tuple[str, bool]:
    """The tenant's callback signing secret, made on first use or replaced when rotate;
    (secret, whether it is new)."""
    check_tenant(tenant)
    fresh = SECRET_PREFIX + secrets.token_urlsafe(32)
    statement = insert(tenants).values(name=tenant, signing_secret=fresh)
    if rotate:
        statement = statement.on_conflict_do_update(
            index_elements=[_t.name],
            set_={"signing_secret": fresh, "secret_created_at": func.now()},
        )
    else:
        statement = statement.on_conflict_do_nothing(index_elements=[_t.name])
    if conn.execute(statement.returning(_t.name)).first() is not None:
        return fresh, True
    existing = conn.execute(select(_t.signing_secret).where(_t.name == tenant)).scalar_one()
    return str(existing), False

"""Who is asking: `Authorization: Bearer <key>` on every route but the public ones.

The key's tenant becomes the request's principal (req.context.principal), which every read and
change of a message names in its query, and which every log line of the request carries. A key
never appears in an answer, a log line or a metric: errors say what is wrong, never with what.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import falcon
from sqlalchemy import Engine

from herald.core import keys
from herald.core.connections import pooled_read
from herald.core.health import HEALTH_PATH, READY_PATH
from herald.core.keycache import KeyCache, LastUsed
from herald.core.logs import bind_tenant, unbind_tenant
from herald.core.settings import Settings
from herald.core.tenants import DEFAULT_TENANT

# Answered without a key: probes, scrapes and the API's own description.
PUBLIC_ROUTES = frozenset({HEALTH_PATH, READY_PATH, "/metrics", "/openapi.json", "/docs"})
AUTHORIZATION_HEADER = "Authorization"
_NO_HASH = bytes(32)


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller: its tenant, and its key's id and own rate (None: unset)."""

    tenant: str
    key_id: str | None
    rate: int | None


# HERALD_AUTH=none: a gateway in front has authenticated the caller already.
ANONYMOUS = Principal(DEFAULT_TENANT, None, None)


def principal_of(req: falcon.Request) -> Principal:
    """The principal of a request to a protected route (set by Authenticate)."""
    principal: Principal = req.context.principal
    return principal


def _refused(title: str, description: str) -> falcon.HTTPUnauthorized:
    return falcon.HTTPUnauthorized(title=title, description=description, challenges=["Bearer"])


class Authenticator:
    """Turns an Authorization header into a Principal, or refuses it (401)."""

    def __init__(self, cache: KeyCache, last_used: LastUsed | None) -> None:
        self._cache = cache
        self._last_used = last_used

    def principal(self, header: str | None) -> Principal:
        """The key's principal; falcon.HTTPUnauthorized for a missing, malformed, unknown or
        revoked key, or a wrong secret."""
        if header is None:
            raise _refused(
                "Authentication required", "send the header 'Authorization: Bearer <key>'"
            )
        scheme, _, credentials = header.partition(" ")
        key = credentials.strip()
        key_id = keys.key_id_of(key) if scheme.lower() == "bearer" else None
        if key_id is None:
            raise _refused(
                "Malformed credentials", "the Authorization header must be 'Bearer <key>'"
            )
        stored = self._cache.stored(key_id)
        # The hash is compared whether or not the id exists, in constant time.
        right = keys.matches(key, _NO_HASH if stored is None else stored.secret_hash)
        if stored is None or stored.revoked or not right:
            raise _refused("Invalid key", "the key is unknown or revoked")
        if self._last_used is not None:
            self._last_used.used(key_id)
        return Principal(stored.tenant, key_id, stored.rate)


class Authenticate:
    """Falcon middleware: the principal of every request to a protected route, or a 401."""

    def __init__(self, authenticator: Authenticator | None) -> None:
        self._authenticator = authenticator  # None: HERALD_AUTH=none

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, params: dict[str, Any]
    ) -> None:
        if resource is None or req.uri_template in PUBLIC_ROUTES:
            return  # no route (404) or a public one
        principal = ANONYMOUS
        if self._authenticator is not None:
            principal = self._authenticator.principal(req.get_header(AUTHORIZATION_HEADER))
        req.context.principal = principal
        req.context.tenant_token = bind_tenant(principal.tenant)

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        token = getattr(req.context, "tenant_token", None)
        if token is not None:
            unbind_tenant(token)


def _read_keys(engine: Engine, key_ids: list[str]) -> dict[str, keys.StoredKey]:
    # The status service's pool does not ping before use: a dead connection's read runs again.
    return pooled_read(engine, lambda conn: keys.find(conn, key_ids))


def _write_uses(engine: Engine, key_ids: list[str]) -> None:
    with engine.begin() as conn:
        keys.touch(conn, key_ids)


def authentication(settings: Settings, engine: Engine, *, records_use: bool) -> Authenticate:
    """The middleware HERALD_AUTH asks for, reading keys through engine's pool; records_use:
    also write each key's last use (the api; the status service's role is read-only)."""
    if settings.auth == "none":
        return Authenticate(None)
    last_used = LastUsed(lambda ids: _write_uses(engine, ids)) if records_use else None
    return Authenticate(Authenticator(KeyCache(lambda ids: _read_keys(engine, ids)), last_used))

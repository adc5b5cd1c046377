"""Database engine construction, and the one error type services turn into 503."""

from __future__ import annotations

import logging
from typing import Any, LiteralString

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from herald.core.batching import BatchTimeout
from herald.core.settings import Settings

log = logging.getLogger(__name__)

# PostgreSQL unreachable, the pool exhausted or a write's outcome late: answer 503.
DatabaseUnavailable = (DBAPIError, PoolTimeout, BatchTimeout, psycopg.OperationalError)


STATEMENT_TIMEOUT_MS = 4_000
# How long a request waits for a batch to take its work before a 503 (nothing done). A write
# once taken is waited for to its end (its COMMIT may succeed); a read is given up on.
BATCH_WAIT_SECONDS = 4.5
# A server that vanished without a word (host down, network cut) is only noticed by TCP: without
# these the kernel's defaults wait about two hours (idle) or fifteen minutes (unacknowledged
# data), and a statement_timeout the server can no longer enforce holds its callers that long.
DEAD_PEER_DETECTION = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}
# What `SET TimeZone = 'UTC'` leaves, and the name PostgreSQL's packages default to.
_UTC_NAMES = frozenset({"UTC", "Etc/UTC"})
_SESSION_DEFAULTS: LiteralString = (
    "SELECT current_setting('TimeZone'), setting::int FROM pg_settings"
    " WHERE name = 'statement_timeout'"
)


class MissingSessionDefaults(psycopg.OperationalError):
    """Behind a transaction pooler, the role lacks the session defaults Herald relies on."""


def prepares(settings: Settings) -> bool:
    """Whether connections use named prepared statements: a transaction pooler may not keep
    them, as the next transaction of the same client may run on another server connection."""
    if settings.database_prepared_statements is None:
        return not settings.database_transaction_pooling
    return settings.database_prepared_statements


def _connect_options(settings: Settings, statement_timeout_ms: int) -> dict[str, Any]:
    """libpq connection options: fail fast when PostgreSQL is down, bound each statement.

    Options already in the database URL (e.g. `-c role=...`) are kept: passed on their own,
    the statement timeout would replace them. Behind a transaction pooler none are added
    (PgBouncer refuses the `options` startup parameter): the role's defaults give the same.
    """
    connect: dict[str, Any] = {
        "connect_timeout": max(1, round(settings.db_connect_timeout)),
        **DEAD_PEER_DETECTION,
    }
    if settings.database_transaction_pooling:
        return connect
    # Times come back in UTC whatever the server's zone: answers give UTC, and a year-1 instant
    # never has to be shown in a zone where it is still year 0 (beyond Python's datetime).
    # A hung server must not hold a request past the 5 s the contract allows (0: no limit).
    ours = ["-c TimeZone=UTC", f"-c statement_timeout={statement_timeout_ms}"]
    theirs = str(conninfo_to_dict(settings.libpq_url).get("options") or "")
    return {**connect, "options": " ".join([theirs, *ours]).strip()}


def _session_defaults_problem(row: tuple[Any, ...] | None) -> str | None:
    zone, timeout_ms = row or ("?", 0)
    if zone in _UTC_NAMES and 0 < timeout_ms <= STATEMENT_TIMEOUT_MS:
        return None
    return (
        "behind a transaction pooler the database role's own defaults must set TimeZone to"
        f" UTC and statement_timeout to at most {STATEMENT_TIMEOUT_MS} ms; this role has"
        f" {zone!r} and {timeout_ms} ms: ALTER ROLE ... IN DATABASE ... SET (docs/operations.md)"
    )


def _require_session_defaults(row: tuple[Any, ...] | None) -> None:
    """Raise MissingSessionDefaults unless row (_SESSION_DEFAULTS' answer) has Herald's."""
    problem = _session_defaults_problem(row)
    if problem is not None:
        log.error("database: %s", problem)
        raise MissingSessionDefaults(problem)


def check_session_defaults(conn: psycopg.Connection[Any]) -> None:
    """Raise MissingSessionDefaults (closing conn) unless its session has Herald's defaults."""
    try:
        row = conn.execute(_SESSION_DEFAULTS, prepare=False).fetchone()
        conn.rollback()  # outside autocommit: leave no transaction open to pin a server
        _require_session_defaults(row)
    except psycopg.Error:
        conn.close()
        raise


async def check_session_defaults_async(conn: psycopg.AsyncConnection[Any]) -> None:
    """check_session_defaults for an async connection (always in autocommit here)."""
    try:
        row = await (await conn.execute(_SESSION_DEFAULTS, prepare=False)).fetchone()
        _require_session_defaults(row)
    except psycopg.Error:
        await conn.close()
        raise


def make_engine(
    settings: Settings,
    pool_size: int | None = None,
    statement_timeout_ms: int = STATEMENT_TIMEOUT_MS,
    pre_ping: bool = True,
) -> Engine:
    """A pooled engine that fails fast (seconds, not minutes) when PostgreSQL is down."""
    connect_args = _connect_options(settings, statement_timeout_ms)
    if not prepares(settings):
        connect_args["prepare_threshold"] = None  # psycopg would prepare after 5 executions
    engine = create_engine(
        settings.sqlalchemy_url,
        pool_size=pool_size or settings.db_pool_size,
        max_overflow=0,
        pool_timeout=settings.db_pool_timeout,
        # A restarted PostgreSQL leaves dead connections in the pool: test each before use,
        # unless the caller retries reads itself (a round trip saved per request).
        pool_pre_ping=pre_ping,
        connect_args=connect_args,
    )
    if settings.database_transaction_pooling:
        event.listen(engine, "connect", lambda conn, _record: check_session_defaults(conn))
    return engine


def session_settings(settings: Settings) -> Settings:
    """settings for connections that keep a session (session advisory locks, migrations):
    HERALD_DATABASE_SESSION_URL reaches PostgreSQL itself, so no pooler's rules apply.
    ValueError behind a transaction pooler without it."""
    if settings.database_session_url is None:
        if settings.database_transaction_pooling:
            raise ValueError(
                "HERALD_DATABASE_TRANSACTION_POOLING needs HERALD_DATABASE_SESSION_URL: the"
                " sweeper's advisory lock and herald-migrate need a session of their own,"
                " which a transaction pooler does not keep"
            )
        return settings
    return settings.model_copy(
        update={
            "database_url": settings.database_session_url,
            "database_transaction_pooling": False,
            "database_prepared_statements": None,
        }
    )


def make_session_engine(
    settings: Settings, pool_size: int = 1, statement_timeout_ms: int = STATEMENT_TIMEOUT_MS
) -> Engine:
    """An engine whose connections are sessions of their own on PostgreSQL, never a pooler's."""
    return make_engine(session_settings(settings), pool_size, statement_timeout_ms)


def direct_conninfo(settings: Settings) -> str:
    """libpq settings for a connection of Herald's own: fail fast, bound each statement."""
    return make_conninfo(settings.libpq_url, **_connect_options(settings, STATEMENT_TIMEOUT_MS))


def watched_conninfo(settings: Settings, silent_after_s: float) -> str:
    """libpq settings for a session that ends within about silent_after_s of its client going
    silent: frozen (idle_session_timeout), or cut off (TCP keepalives and tcp_user_timeout, on
    both ends). A session lock held on it, such as the sweepers' leadership, goes with it.

    Without them PostgreSQL keeps a vanished client's session, and its locks, until the
    kernel's TCP keepalive gives up: about two hours by default.
    """
    silent_ms = max(1000, round(silent_after_s * 1000))
    probe_s = max(1, round(silent_after_s / 6))  # three unanswered probes: half the time
    tcp = {"tcp_keepalives_idle": probe_s, "tcp_keepalives_interval": probe_s}
    server = {**tcp, "tcp_keepalives_count": 3, "tcp_user_timeout": silent_ms}
    options = _connect_options(settings, STATEMENT_TIMEOUT_MS)
    options["options"] += "".join(f" -c {name}={value}" for name, value in server.items())
    options["options"] += f" -c idle_session_timeout={silent_ms}"
    client = {
        "keepalives_idle": probe_s,
        "keepalives_interval": probe_s,
        "tcp_user_timeout": silent_ms,
    }
    return make_conninfo(settings.libpq_url, **{**options, **client})


def ping_database(engine: Engine) -> None:
    """Raise unless PostgreSQL answers a trivial query."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))

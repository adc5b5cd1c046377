"""Database engine construction, and the one error type services turn into 503."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from herald.core.batching import BatchTimeout
from herald.core.settings import Settings

# PostgreSQL unreachable, the pool exhausted or a write's outcome late: answer 503.
DatabaseUnavailable = (DBAPIError, PoolTimeout, BatchTimeout)


STATEMENT_TIMEOUT_MS = 4_000
# How long a request waits for its batch's COMMIT before answering 503.
WRITE_WAIT_SECONDS = 4.5


def make_engine(
    settings: Settings,
    pool_size: int | None = None,
    statement_timeout_ms: int | None = STATEMENT_TIMEOUT_MS,
) -> Engine:
    """A pooled engine that fails fast (seconds, not minutes) when PostgreSQL is down."""
    options = {} if statement_timeout_ms is None else {
        # A hung server must not hold a request past the 5 s the contract allows.
        "options": f"-c statement_timeout={statement_timeout_ms}"
    }  # fmt: skip
    return create_engine(
        settings.sqlalchemy_url,
        pool_size=pool_size or settings.db_pool_size,
        max_overflow=0,
        pool_timeout=settings.db_pool_timeout,
        # A restarted PostgreSQL leaves dead connections in the pool; test each before use.
        pool_pre_ping=True,
        connect_args={
            "connect_timeout": max(1, round(settings.db_connect_timeout)),
            **options,
        },
    )


def ping_database(engine: Engine) -> None:
    """Raise unless PostgreSQL answers a trivial query."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))

"""Database engine construction, and the one error type services turn into 503."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from herald.core.settings import Settings

# PostgreSQL unreachable or the pool exhausted: answer 503, and nothing is half-done.
DatabaseUnavailable = (DBAPIError, PoolTimeout)


def make_engine(settings: Settings, pool_size: int | None = None) -> Engine:
    """A pooled engine that fails fast (seconds, not minutes) when PostgreSQL is down."""
    return create_engine(
        settings.sqlalchemy_url,
        pool_size=pool_size or settings.db_pool_size,
        max_overflow=0,
        pool_timeout=settings.db_pool_timeout,
        # A restarted PostgreSQL leaves dead connections in the pool; test each before use.
        pool_pre_ping=True,
        connect_args={"connect_timeout": max(1, round(settings.db_connect_timeout))},
    )


def ping_database(engine: Engine) -> None:
    """Raise unless PostgreSQL answers a trivial query."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))

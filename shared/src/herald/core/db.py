"""Database engine construction, and the one error type services turn into 503."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, LiteralString

import psycopg
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from herald.core.batching import BatchTimeout
from herald.core.settings import Settings

# PostgreSQL unreachable, the pool exhausted or a write's outcome late: answer 503.
DatabaseUnavailable = (DBAPIError, PoolTimeout, BatchTimeout, psycopg.OperationalError)


STATEMENT_TIMEOUT_MS = 4_000
# How long a request waits for its batch's COMMIT before answering 503.
WRITE_WAIT_SECONDS = 4.5


def make_engine(
    settings: Settings,
    pool_size: int | None = None,
    statement_timeout_ms: int | None = STATEMENT_TIMEOUT_MS,
    pre_ping: bool = True,
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
        # A restarted PostgreSQL leaves dead connections in the pool: test each before use,
        # unless the caller retries reads itself (a round trip saved per request).
        pool_pre_ping=pre_ping,
        connect_args={
            "connect_timeout": max(1, round(settings.db_connect_timeout)),
            **options,
        },
    )


class DirectConnection:
    """One psycopg connection for one thread (a Batcher's): no pool, no ping before each use.

    Each execute() is one statement in autocommit mode, so it commits in the same round trip.
    A hot batch writer thus pays neither SQLAlchemy's per-statement work, nor a pool's
    pre-ping, nor a separate COMMIT. A connection that fails is dropped and the next call
    connects afresh, so a restarted PostgreSQL costs one failed batch.
    """

    def __init__(self, settings: Settings) -> None:
        self._url = str(settings.database_url)
        self._connect_timeout = max(1, round(settings.db_connect_timeout))
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None

    def execute(self, statement: LiteralString, params: Sequence[Any]) -> None:
        """Run one statement as its own transaction (prepared after a few uses)."""
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(
                self._url,
                autocommit=True,
                connect_timeout=self._connect_timeout,
                options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
            )
        try:
            self._conn.execute(statement, params, prepare=True)
        except psycopg.OperationalError:
            self.close()
            raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def ping_database(engine: Engine) -> None:
    """Raise unless PostgreSQL answers a trivial query."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))

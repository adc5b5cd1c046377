"""The connections Herald's hot paths hold themselves, and how a read outlives a dead one.

A direct connection is one psycopg connection, no pool, no ping before use: the ingest writer
and the status reads (DirectConnection, under gevent) and the sender's claims and outcomes
(AsyncDirectConnection, on its event loop). What they share (where they connect, when to
connect again) is written once, in _Direct; each keeps only its own connect, execute and close.
A read that meets a dead connection runs once more on a fresh one, by one rule (_again_if_dead)
for direct connections and for SQLAlchemy's pool alike.
"""

from __future__ import annotations

import select
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, LiteralString, TypeVar

import psycopg
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from herald.core.db import (
    check_session_defaults,
    check_session_defaults_async,
    direct_conninfo,
    prepares,
)
from herald.core.settings import Settings


def _ended_by_server(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    """Whether the server has ended an idle connection (it sends FATAL, then closes).

    An idle autocommit connection has nothing to read otherwise. A restarted PostgreSQL ends
    every session this way, so the next statement is sent on a fresh connection instead of
    failing on the dead one (a needless 503 per process after every restart).
    """
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    return bool(poller.poll(0))


Row = tuple[Any, ...]
Conn = TypeVar("Conn", psycopg.Connection[Row], psycopg.AsyncConnection[Row])
T = TypeVar("T")


class _Direct(Generic[Conn]):
    """What both direct connections share: where they connect, and when to connect again.

    Each statement runs in autocommit mode, so it commits in the same round trip. A hot path
    (the ingest writer, status reads, the sender's claims and outcomes) thus pays neither
    SQLAlchemy's per-statement work, nor a pool's pre-ping, nor a separate COMMIT. A connection
    the server ended is replaced before the next statement; one that fails is dropped and the
    next statement connects afresh, so a restarted PostgreSQL costs at most one failure.
    """

    def __init__(self, settings: Settings) -> None:
        self._conninfo = direct_conninfo(settings)
        self._prepare = prepares(settings)
        self._pooled = settings.database_transaction_pooling
        self._conn: Conn | None = None

    def _stale(self) -> bool:
        """Whether the connection held can serve no statement: closed, or ended by the server."""
        conn = self._conn
        return conn is not None and (conn.closed or _ended_by_server(conn))

    def _keep(self, conn: Conn) -> Conn:
        self._conn = conn
        return conn

    def _detach(self) -> Conn | None:
        conn, self._conn = self._conn, None
        return conn


class DirectConnection(_Direct[psycopg.Connection[Row]]):
    """One psycopg connection for one thread (or greenlet): no pool, no ping before each use."""

    def execute(self, statement: LiteralString, params: Sequence[Any]) -> psycopg.Cursor[Row]:
        """Run one statement as its own transaction (prepared unless pooled); its cursor."""
        if self._stale():
            self.close()
        conn = self._conn or self._keep(self._connect())
        try:
            return conn.execute(statement, params, prepare=self._prepare)
        except psycopg.OperationalError:
            self.close()
            raise

    def read(self, statement: LiteralString, params: Sequence[Any]) -> list[Row]:
        """A read's rows; run once more on a fresh connection if the one it reused was dead."""
        reused = self._conn is not None and not self._conn.closed
        return _again_if_dead(
            lambda: self.execute(statement, params).fetchall(),
            lambda error: reused and _lost_connection(error),
        )

    def close(self) -> None:
        """Close the connection if one is open; the next statement connects afresh."""
        conn = self._detach()
        if conn is not None:
            conn.close()

    def _connect(self) -> psycopg.Connection[Row]:
        conn = psycopg.connect(self._conninfo, autocommit=True)
        if self._pooled:
            check_session_defaults(conn)
        return conn


class AsyncDirectConnection(_Direct[psycopg.AsyncConnection[Row]]):
    """DirectConnection for an event loop: each statement's round trip is awaited on the loop,
    with no thread hand-off. For one coroutine at a time (e.g. one AsyncBatcher)."""

    async def execute(
        self, statement: LiteralString, params: Mapping[str, Any]
    ) -> psycopg.AsyncCursor[Row]:
        """Run one statement as its own transaction (prepared unless pooled); its cursor."""
        if self._stale():
            await self.close()
        conn = self._conn or self._keep(await self._connect())
        try:
            return await conn.execute(statement, params, prepare=self._prepare)
        except psycopg.OperationalError:
            await self.close()
            raise

    async def close(self) -> None:
        """Close the connection if one is open; the next statement connects afresh."""
        conn = self._detach()
        if conn is not None:
            await conn.close()

    async def _connect(self) -> psycopg.AsyncConnection[Row]:
        conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        if self._pooled:
            await check_session_defaults_async(conn)
        return conn


def _lost_connection(error: Exception) -> bool:
    """Whether a statement failed for want of a connection, not for what it asked."""
    # A statement timeout is an OperationalError too, but the server is alive: repeating it
    # would only double the wait.
    return isinstance(error, psycopg.OperationalError) and not isinstance(
        error, psycopg.errors.QueryCanceled
    )


def _again_if_dead(run: Callable[[], T], dead: Callable[[Exception], bool]) -> T:
    """run(), and once more if it failed on a connection found dead (reads: safe to repeat).

    Neither kind of read connection is pinged before use (a round trip per read): a restarted
    PostgreSQL is noticed by the read that meets it, and that read alone runs twice.
    """
    try:
        return run()
    except Exception as error:
        if not dead(error):
            raise
    return run()


def pooled_read(engine: Engine, query: Callable[[Connection], T]) -> T:
    """Run a read on a pooled connection; once more on a fresh one if that one had died."""

    def run() -> T:
        with engine.connect() as conn:
            return query(conn)

    return _again_if_dead(
        run, lambda error: isinstance(error, DBAPIError) and error.connection_invalidated
    )

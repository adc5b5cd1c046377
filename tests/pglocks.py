"""Slowing the app's statements for real: locks held by a test's own PostgreSQL session."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, LiteralString

import psycopg

from tests.stack import wait_for

# Blocks every INSERT into messages (ROW EXCLUSIVE) and conflicts with itself, so a second
# holder queues behind the INSERTs already waiting.
BLOCK_INSERTS: LiteralString = "LOCK TABLE messages IN SHARE ROW EXCLUSIVE MODE"


@contextmanager
def held(
    database_url: str, statement: LiteralString, params: tuple[Any, ...] = ()
) -> Iterator[psycopg.Connection[Any]]:
    """A transaction holding what statement locks, open until the block ends (rolled back)."""
    with psycopg.connect(database_url) as conn:
        conn.execute(statement, params)
        try:
            yield conn
        finally:
            conn.rollback()


def hold_until(database_url: str, statement: LiteralString, until: float) -> None:
    """Take statement's locks (waiting for them as long as it takes), keep them to `until`."""
    with held(database_url, statement):
        time.sleep(max(0.0, until - time.monotonic()))


def wait_for_lock_waiters(database_url: str, count: int) -> None:
    """Return once `count` sessions of this database wait on a lock (fail after a minute)."""
    # Autocommit: within one transaction pg_stat_activity is a snapshot that never changes.
    with psycopg.connect(database_url, autocommit=True) as conn:

        def waiting() -> bool:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).fetchone()
            return row is not None and row[0] >= count

        wait_for(waiting, 60, f"{count} sessions waiting on a lock", interval=0.01)

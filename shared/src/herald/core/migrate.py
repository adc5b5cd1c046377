"""herald-migrate: create or upgrade the schema to the newest revision (safe to run again)."""

from __future__ import annotations

import argparse
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, text

from herald.core.db import make_session_engine
from herald.core.settings import Settings

# Two deployables starting together may both migrate: one waits for the other.
_LOCK_KEY = 0x6865_7261_6C64  # "herald"


def alembic_config(conn: Connection) -> Config:
    """Alembic's configuration for Herald's migrations, run on conn (outside a transaction)."""
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    config.attributes["connection"] = conn
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database to `revision`, holding an advisory lock so concurrent runs queue."""
    # A session lock, not a transaction's: each revision commits on its own, and one that
    # builds indexes CONCURRENTLY commits within itself (env.py). It ends with the session.
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _LOCK_KEY})
        conn.commit()
        try:
            command.upgrade(alembic_config(conn), revision)
        finally:
            conn.rollback()  # whatever a failed revision left open
            conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _LOCK_KEY})
            conn.commit()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="herald-migrate", description=__doc__)
    parser.add_argument("--revision", default="head", help="target revision (default: head)")
    args = parser.parse_args(argv)
    # No statement timeout (0), whatever the role's default: building an index on a large
    # table takes what it takes. A session of its own: DDL and its lock never go through a
    # transaction pooler.
    try:
        engine = make_session_engine(Settings(), pool_size=1, statement_timeout_ms=0)
    except ValueError as error:
        parser.error(str(error))
    try:
        upgrade(engine, args.revision)
    finally:
        engine.dispose()
    print(f"herald-migrate: database at {args.revision}")

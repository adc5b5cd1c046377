"""herald-migrate: create or upgrade the schema to the newest revision (safe to run again)."""

from __future__ import annotations

import argparse
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

from herald.core.db import make_session_engine
from herald.core.settings import Settings

# Two deployables starting together may both migrate: one waits for the other.
_LOCK_KEY = 0x6865_7261_6C64  # "herald"


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database to `revision`, holding an advisory lock so concurrent runs queue."""
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


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

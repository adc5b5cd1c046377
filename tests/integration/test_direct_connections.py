"""Direct connections on a real PostgreSQL: a session the server ended costs no failed statement."""

import asyncio
import threading

from sqlalchemy import Engine, text

from herald.core.connections import AsyncDirectConnection, DirectConnection
from herald.core.db import make_engine
from herald.core.settings import Settings
from tests.stack import wait_for

BACKEND_PID = "SELECT pg_backend_pid()"


def _end_session(engine: Engine, pid: int) -> None:
    """What a restart does to every session: the server ends it (FATAL, then close)."""
    # Autocommit: within one transaction pg_stat_activity is a snapshot that never changes.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as admin:
        admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        gone = text("SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = :pid")
        wait_for(lambda: admin.execute(gone, {"pid": pid}).scalar(), 60, f"backend {pid} to end")


def test_a_statement_after_the_server_ended_the_session_runs_on_a_new_one(
    settings: Settings, engine: Engine
) -> None:
    conn = DirectConnection(settings)
    first = conn.execute(BACKEND_PID, ()).fetchone()
    assert first is not None
    _end_session(engine, first[0])
    second = conn.execute(BACKEND_PID, ()).fetchone()
    assert second is not None
    assert second[0] != first[0]
    conn.close()


def _end_session_once_busy(engine: Engine, pid: int) -> None:
    """End the session while it runs a statement (a crash mid-read), once it has begun."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as admin:
        busy = text("SELECT state = 'active' FROM pg_stat_activity WHERE pid = :pid")
        wait_for(lambda: admin.execute(busy, {"pid": pid}).scalar(), 60, f"backend {pid} busy")
    _end_session(engine, pid)


def test_a_read_whose_session_ends_under_it_runs_once_more_on_a_new_one(
    settings: Settings, engine: Engine
) -> None:
    conn = DirectConnection(settings)
    [(first,)] = conn.read(BACKEND_PID, ())
    killer = threading.Thread(target=_end_session_once_busy, args=(engine, first))
    killer.start()
    [(second,)] = conn.read("SELECT pg_backend_pid() FROM pg_sleep(0.5)", ())
    killer.join()
    assert second != first
    conn.close()


def test_the_async_connection_also_replaces_a_session_the_server_ended(
    settings: Settings, engine: Engine
) -> None:
    async def backend_pid(conn: AsyncDirectConnection) -> int:
        row = await (await conn.execute(BACKEND_PID, {})).fetchone()
        assert row is not None
        return int(row[0])

    async def main() -> tuple[int, int]:
        conn = AsyncDirectConnection(settings)
        first = await backend_pid(conn)
        await asyncio.to_thread(_end_session, engine, first)
        return first, await backend_pid(conn)

    first, second = asyncio.run(main())
    assert second != first


def test_every_spelling_of_the_database_url_reaches_both_kinds_of_connection(
    settings: Settings,
) -> None:
    location = str(settings.database_url).split("://", 1)[1]
    for scheme in ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2"):
        spelled = settings.model_copy(update={"database_url": f"{scheme}://{location}"})
        direct = DirectConnection(spelled)
        assert direct.execute("SELECT 1", ()).fetchone() == (1,)
        direct.close()
        engine = make_engine(spelled)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
        engine.dispose()

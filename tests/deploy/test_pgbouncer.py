"""Herald's real processes through the real PgBouncer (Debian's), in transaction mode, with
deploy/pgbouncer/pgbouncer.ini: what needs a session bypasses it, everything else shares a few
server connections, and sessions keep UTC and the statement timeout from the role's defaults.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from herald.core.connections import DirectConnection
from herald.core.db import MissingSessionDefaults, make_engine
from herald.core.migrate import upgrade
from herald.core.settings import Settings
from herald.sender.sweeper import LOCK_KEY
from tests.deploy.servers import pgbouncer
from tests.servers import POSTGRES_URL, REDIS_URL
from tests.stack import BIN, running_stack, wait_for

# PgBouncer checks it (SCRAM, as shipped) and logs in to the server with it: the server's own
# password if the test server has one, else any (the server trusts the local user).
SERVER = psycopg.conninfo.conninfo_to_dict(POSTGRES_URL)
PASSWORD = str(SERVER.get("password") or "pooled-secret")
# Server connections PgBouncer may open for the whole of Herald: api, status, sender, sweeper.
POOL = 3
SESSION_APP = "herald-session-test"
SESSION = "SELECT current_setting('TimeZone'), current_setting('statement_timeout')"
# The backend holding the sweepers' leadership lock (a bigint key: high and low 32 bits).
LEADER = """
    SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid)
    WHERE l.locktype = 'advisory' AND l.granted AND l.database = a.datid AND a.datname = %s
      AND l.classid = (%s >> 32)::oid AND l.objid = (%s & 4294967295)::oid
"""


def _admin() -> psycopg.Connection[tuple[Any, ...]]:
    return psycopg.connect(f"{POSTGRES_URL}/postgres", autocommit=True)


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A fresh, migrated database whose own default zone is not UTC, and whose role has the
    session defaults deploy/postgres/initdb.sql gives Herald's roles."""
    name = f"herald_pgb_{uuid.uuid4().hex[:12]}"
    with _admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        # Times still come back in UTC below: from the role's default, not the server's.
        admin.execute(f"ALTER DATABASE \"{name}\" SET TimeZone = 'America/New_York'")
        admin.execute(f"ALTER ROLE CURRENT_USER IN DATABASE \"{name}\" SET TimeZone = 'UTC'")
        admin.execute(
            f"ALTER ROLE CURRENT_USER IN DATABASE \"{name}\" SET statement_timeout = '4s'"
        )
    engine = make_engine(Settings(database_url=f"{POSTGRES_URL}/{name}"), pool_size=1)
    upgrade(engine)
    engine.dispose()
    yield name
    with _admin() as admin:  # its role settings go with it
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_herald_sends_and_reads_through_pgbouncer_in_transaction_mode(
    database: str, namespace: str
) -> None:
    user = str(SERVER["user"])
    upstream = (str(SERVER.get("host") or "127.0.0.1"), int(SERVER.get("port") or 5432))
    with pgbouncer(database, upstream, {user: PASSWORD}, POOL) as port:
        settings = Settings(
            database_url=f"postgresql://{user}:{PASSWORD}@127.0.0.1:{port}/{database}",
            database_transaction_pooling=True,
            database_session_url=f"{POSTGRES_URL}/{database}?application_name={SESSION_APP}",
            redis_url=REDIS_URL,
            redis_namespace=namespace,
            provider_timeout=1.0,
        )
        with running_stack(settings) as stack:
            # Ingest's group commit (direct connection) and its Idempotency-Key path (pool),
            # each more often than psycopg's prepare threshold: no prepared statement is left
            # behind on a server connection the next transaction may not get.
            answers = [
                stack.http.post(
                    f"{stack.api}/messages",
                    json={"destination": "+15550100", "body": f"pooled {n}"},
                    headers={"Idempotency-Key": f"pgb-{n}"} if n % 2 else {},
                )
                for n in range(12)
            ]
            assert {a.status_code for a in answers} == {202}, [a.text for a in answers]
            ids = [answer.json()["id"] for answer in answers]
            for message_id in ids:
                stack.wait_status(message_id, "sent")
            record = stack.http.get(f"{stack.status}/message/{ids[0]}").json()
            for field in ("created_at", "updated_at", "sent_at"):
                assert record[field].endswith(("Z", "+00:00")), record
            listed = stack.http.get(
                f"{stack.status}/message/list", params={"status": "sent"}
            ).json()
            assert len(listed["messages"]) == len(ids)

            # Each kind of pooled connection gets the role's session defaults.
            direct = DirectConnection(settings)  # the status reads' kind of connection
            assert direct.read(SESSION, ()) == [("UTC", "4s")]
            direct.close()
            engine = make_engine(settings, pool_size=1)
            with engine.connect() as conn:
                assert tuple(conn.execute(text(SESSION)).one()) == ("UTC", "4s")
            engine.dispose()

            # The sweeper leads on a session of its own, straight to PostgreSQL...
            def leader() -> str | None:
                with _admin() as admin:
                    row = admin.execute(LEADER, (database, LOCK_KEY, LOCK_KEY)).fetchone()
                return None if row is None else str(row[0])

            assert wait_for(leader, 10, "a sweeper leading") == SESSION_APP
            # ...and everything else went through at most POOL server connections.
            with _admin() as admin:
                (servers,) = admin.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = %s AND application_name <> %s",
                    (database, SESSION_APP),
                ).fetchone() or (0,)
            assert 1 <= int(servers) <= POOL, stack.logs()


def test_a_pooled_connection_without_the_role_defaults_is_refused(database_url: str) -> None:
    # The test database's role has no defaults: its zone is the server's, its timeout none.
    settings = Settings(
        database_url=database_url,
        database_transaction_pooling=True,
        database_session_url=database_url,
    )
    with pytest.raises(MissingSessionDefaults, match="ALTER ROLE"):
        DirectConnection(settings).execute("SELECT 1", ())
    engine = make_engine(settings, pool_size=1)
    with pytest.raises(DBAPIError) as refused, engine.connect():
        pass  # SQLAlchemy wraps it: a DBAPIError, which every service answers 503
    assert isinstance(refused.value.orig, MissingSessionDefaults)
    engine.dispose()


def test_the_sender_will_not_start_pooled_without_a_session_url() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    done = subprocess.run(
        [str(BIN / "herald-sender")],
        env={**env, "HERALD_DATABASE_TRANSACTION_POOLING": "true"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "needs HERALD_DATABASE_SESSION_URL" in done.stderr

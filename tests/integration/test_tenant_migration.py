"""Migration 0005 on real PostgreSQL: old rows become tenant `default`, without long locks."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from alembic import command
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError

from herald.core.db import make_engine
from herald.core.migrate import alembic_config, upgrade
from herald.core.settings import Settings
from tests.servers import POSTGRES_URL

READER = "herald_readonly"


@pytest.fixture
def fresh() -> Iterator[Engine]:
    """An engine on a database of this test's own, with no schema yet; dropped afterwards."""
    name = f"herald_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{POSTGRES_URL}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    # As herald-migrate: no statement timeout, only the migration's own lock timeout.
    engine = make_engine(
        Settings(database_url=f"{POSTGRES_URL}/{name}"), pool_size=2, statement_timeout_ms=0
    )
    yield engine
    engine.dispose()
    with psycopg.connect(f"{POSTGRES_URL}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _before_tenants(engine: Engine) -> None:
    """Schema 0004 holding two messages and an Idempotency-Key, as a live system had them."""
    upgrade(engine, "0004")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO messages (id, destination, body, status) VALUES"
                " ('aaaaaaaaaaaaaaaaaaaaaa', 'd', 'b', 'queued'),"
                " ('bbbbbbbbbbbbbbbbbbbbbb', 'd', 'b', 'failed')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO idempotency_keys (key, message_id, fingerprint)"
                " VALUES ('k1', 'aaaaaaaaaaaaaaaaaaaaaa', 'f')"
            )
        )


def _indexes(engine: Engine, table: str) -> dict[str, tuple[str, bool]]:
    """index name -> (definition, valid)."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT c.relname, pg_get_indexdef(i.indexrelid), i.indisvalid"
                " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                " WHERE i.indrelid = to_regclass(:table)"
            ),
            {"table": table},
        )
        return {name: (definition, valid) for name, definition, valid in rows}


def test_rows_from_before_tenants_belong_to_the_default_tenant(fresh: Engine) -> None:
    _before_tenants(fresh)
    upgrade(fresh)
    with fresh.connect() as conn:
        tenants = conn.execute(text("SELECT DISTINCT tenant FROM messages")).scalars().all()
        keys = conn.execute(text("SELECT tenant, key FROM idempotency_keys")).all()
    assert tenants == ["default"]
    assert [tuple(row) for row in keys] == [("default", "k1")]


def test_the_new_indexes_are_valid_and_the_idempotency_key_is_per_tenant(fresh: Engine) -> None:
    _before_tenants(fresh)
    upgrade(fresh)
    messages = _indexes(fresh, "messages")
    assert all(valid for _, valid in messages.values())
    assert "(tenant, id)" in messages["messages_by_tenant_id"][0]
    assert "(tenant, status, id)" in messages["messages_by_tenant_status_id"][0]
    assert "messages_by_status_id" not in messages
    keys = _indexes(fresh, "idempotency_keys")
    assert set(keys) == {"idempotency_keys_pkey", "idempotency_keys_by_created"}
    assert "(tenant, key)" in keys["idempotency_keys_pkey"][0]
    with fresh.begin() as conn:  # the same key in another tenant is another binding
        conn.execute(
            text(
                "INSERT INTO idempotency_keys (tenant, key, message_id, fingerprint)"
                " VALUES ('acme', 'k1', 'bbbbbbbbbbbbbbbbbbbbbb', 'f')"
            )
        )


def test_the_reader_role_reads_keys_but_never_signing_secrets(fresh: Engine) -> None:
    upgrade(fresh)
    with fresh.connect() as conn:
        if conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": READER}).first():

            def can(table: str) -> bool:
                query = text("SELECT has_table_privilege(:r, :t, 'SELECT')")
                return bool(conn.execute(query, {"r": READER, "t": table}).scalar_one())

            assert can("api_keys")
            assert can("messages")
            assert not can("tenants")
        else:
            pytest.fail(f"{READER} should exist: migration 0003 creates it on this server")


def test_an_index_an_interrupted_run_left_invalid_is_built_again(fresh: Engine) -> None:
    _before_tenants(fresh)
    # A CONCURRENTLY build that fails leaves its index behind, invalid, under the name the
    # migration uses (here: a unique index over duplicate values).
    with (
        fresh.connect().execution_options(isolation_level="AUTOCOMMIT") as conn,
        pytest.raises(IntegrityError, match="could not create unique index"),
    ):
        conn.execute(
            text("CREATE UNIQUE INDEX CONCURRENTLY messages_by_tenant_id ON messages (body)")
        )
    assert _indexes(fresh, "messages")["messages_by_tenant_id"][1] is False
    upgrade(fresh)
    definition, valid = _indexes(fresh, "messages")["messages_by_tenant_id"]
    assert valid
    assert "(tenant, id)" in definition


def test_a_long_transaction_in_the_way_fails_the_migration_instead_of_queueing_writes(
    fresh: Engine,
) -> None:
    _before_tenants(fresh)
    outcome: list[BaseException | None] = []
    with fresh.connect() as blocker:
        # An open transaction that has read the table holds a lock ADD COLUMN must wait for.
        blocker.execute(text("SELECT count(*) FROM messages"))

        def migrate() -> None:
            try:
                upgrade(fresh)
                outcome.append(None)
            except BaseException as error:  # kept for the assertion below
                outcome.append(error)

        started = time.monotonic()
        thread = threading.Thread(target=migrate)
        thread.start()
        thread.join(30)
        waited = time.monotonic() - started
        blocker.rollback()
    [error] = outcome
    assert "lock timeout" in str(error)
    assert waited < 10
    upgrade(fresh)  # once the transaction has ended, running it again succeeds
    with fresh.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0005"


def test_downgrade_then_upgrade_again(fresh: Engine) -> None:
    _before_tenants(fresh)
    upgrade(fresh)
    with fresh.connect() as conn:
        config = alembic_config(conn)
        command.downgrade(config, "0004")
        conn.commit()
    assert "messages_by_status_id" in _indexes(fresh, "messages")
    upgrade(fresh)
    assert "messages_by_tenant_id" in _indexes(fresh, "messages")

"""Tenants: every message and Idempotency-Key belongs to one; API keys and signing secrets.

Rows from before tenants belong to tenant 'default'. Written for a live table of millions of
rows (docs/operations.md, "Upgrading to tenants"):
- ADD COLUMN ... NOT NULL DEFAULT 'default' is a catalog change since PostgreSQL 11: the
  default is stored once, no row is rewritten or scanned; its ACCESS EXCLUSIVE lock lasts
  milliseconds.
- Indexes are built CONCURRENTLY, outside any transaction: writes go on meanwhile.
- idempotency_keys' primary key becomes (tenant, key) from a unique index built concurrently
  (ADD PRIMARY KEY USING INDEX: no scan, its columns are NOT NULL already).
- Every lock is waited for at most LOCK_TIMEOUT: behind a long transaction the migration fails
  (run it again) instead of queueing every query on the table behind its lock.
It runs again safely after failing at any point: an index an interrupted CONCURRENTLY left
invalid is dropped and built again.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

READER = "herald_readonly"
LOCK_TIMEOUT = "5s"

_TABLES = """
CREATE TABLE IF NOT EXISTS api_keys (
    id text COLLATE "C" PRIMARY KEY,
    tenant text COLLATE "C" NOT NULL,
    label text,
    rate integer CONSTRAINT api_keys_rate_positive CHECK (rate > 0),
    secret_hash bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at timestamptz
);
CREATE TABLE IF NOT EXISTS tenants (
    name text COLLATE "C" PRIMARY KEY,
    signing_secret text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    secret_created_at timestamptz NOT NULL DEFAULT now()
);
"""

_TENANT_COLUMN = """ADD COLUMN IF NOT EXISTS tenant text COLLATE "C" NOT NULL DEFAULT 'default'"""

# The status service reads keys to authenticate (0003's default privileges cover tables this
# owner creates; a reader role made later by an administrator may lack them), and never the
# tenants' signing secrets, which only the services that sign need.
_GRANTS = f"""
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{READER}') THEN
        GRANT SELECT ON api_keys TO {READER};
        REVOKE ALL ON tenants FROM {READER};
    END IF;
END $$
"""

# name -> (kind, table and columns): each built CONCURRENTLY.
_INDEXES = {
    "messages_by_tenant_id": ("INDEX", "messages (tenant, id)"),
    "messages_by_tenant_status_id": ("INDEX", "messages (tenant, status, id)"),
    "idempotency_keys_by_tenant_key": ("UNIQUE INDEX", "idempotency_keys (tenant, key)"),
}
# What downgrade() builds back.
_OLD_INDEXES = {
    "messages_by_status_id": ("INDEX", "messages (status, id)"),
    "idempotency_keys_by_key": ("UNIQUE INDEX", "idempotency_keys (key)"),
}

# The unique index becomes the primary key (and takes its name); done once.
_SWAP_PRIMARY_KEY = """
DO $$
BEGIN
    IF to_regclass('idempotency_keys_by_tenant_key') IS NOT NULL THEN
        ALTER TABLE idempotency_keys
            DROP CONSTRAINT idempotency_keys_pkey,
            ADD CONSTRAINT idempotency_keys_pkey
                PRIMARY KEY USING INDEX idempotency_keys_by_tenant_key;
    END IF;
END $$
"""


def _drop_if_invalid(name: str) -> None:
    # CREATE INDEX CONCURRENTLY that fails or is interrupted leaves an invalid index behind,
    # which IF NOT EXISTS would take for a finished one.
    invalid = op.get_bind().exec_driver_sql(
        "SELECT 1 FROM pg_index WHERE indexrelid = to_regclass(%(name)s) AND NOT indisvalid",
        {"name": name},
    )
    if invalid.first() is not None:
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")


def _build_concurrently(indexes: dict[str, tuple[str, str]]) -> None:
    for name, (kind, on) in indexes.items():
        _drop_if_invalid(name)
        op.execute(f"CREATE {kind} CONCURRENTLY IF NOT EXISTS {name} ON {on}")


def upgrade() -> None:
    op.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    op.execute(_TABLES)
    op.execute(_GRANTS)
    op.execute(f"ALTER TABLE messages {_TENANT_COLUMN}")
    op.execute(f"ALTER TABLE idempotency_keys {_TENANT_COLUMN}")
    # Commits the above; no lock_timeout here: a concurrent build waits for older
    # transactions without blocking anyone.
    with op.get_context().autocommit_block():
        _build_concurrently(_INDEXES)
        # The list now starts from the tenant: this index would only slow every INSERT.
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS messages_by_status_id")
    op.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    op.execute(_SWAP_PRIMARY_KEY)


def downgrade() -> None:
    # Fails if two tenants hold the same Idempotency-Key: which one to keep is not ours to say.
    with op.get_context().autocommit_block():
        _build_concurrently(_OLD_INDEXES)
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS messages_by_tenant_id")
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS messages_by_tenant_status_id")
    op.execute(
        "ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_pkey,"
        " ADD CONSTRAINT idempotency_keys_pkey PRIMARY KEY USING INDEX idempotency_keys_by_key"
    )
    op.execute("ALTER TABLE idempotency_keys DROP COLUMN tenant")
    op.execute("ALTER TABLE messages DROP COLUMN tenant")
    op.execute("DROP TABLE tenants")
    op.execute("DROP TABLE api_keys")

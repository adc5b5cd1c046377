"""herald_readonly: the role the status service reads with (SELECT only, on every table).

The status service logs in as a member of this NOLOGIN role (docs/operations.md), so a bug or a
breach there can read messages but never change one. Roles belong to the whole server, not to
one database: the role is created once and later runs (other databases, concurrent test
databases) find it. Creating it needs CREATEROLE; an owner without it gets a notice instead,
and an administrator creates the role and applies the grants (docs/operations.md).

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

READER = "herald_readonly"

_CREATE_ROLE = f"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{READER}') THEN
        CREATE ROLE {READER} NOLOGIN;
    END IF;
EXCEPTION
    -- Another database's migration created it at the same moment.
    WHEN duplicate_object OR unique_violation THEN NULL;
    WHEN insufficient_privilege THEN
        RAISE NOTICE 'herald: no CREATEROLE, role {READER} not created; see docs/operations.md';
END $$
"""

# The schema's USAGE is PUBLIC's by default; granting it can fail for a non-owner of the schema
# (PostgreSQL 14 and older), which then changes nothing.
_GRANTS = f"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{READER}') THEN
        RETURN;
    END IF;
    BEGIN
        GRANT USAGE ON SCHEMA public TO {READER};
    EXCEPTION WHEN insufficient_privilege THEN NULL;
    END;
    GRANT SELECT ON ALL TABLES IN SCHEMA public TO {READER};
    -- Tables that later migrations (run by this same owner) create are readable too.
    ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {READER};
END $$
"""

_REVOKES = f"""
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{READER}') THEN
        ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE SELECT ON TABLES FROM {READER};
        REVOKE SELECT ON ALL TABLES IN SCHEMA public FROM {READER};
    END IF;
END $$
"""


def upgrade() -> None:
    op.execute(_CREATE_ROLE)
    op.execute(_GRANTS)


def downgrade() -> None:
    # The role stays: other databases on the server may still grant it their tables.
    op.execute(_REVOKES)

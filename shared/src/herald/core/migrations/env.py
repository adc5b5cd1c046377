"""Alembic environment: runs with the connection herald-migrate hands it."""

from __future__ import annotations

from alembic import context

from herald.core.tables import metadata

connection = context.config.attributes["connection"]
# A transaction per revision: a revision may need to commit within itself (CREATE INDEX
# CONCURRENTLY runs outside any transaction, in an autocommit_block).
context.configure(connection=connection, target_metadata=metadata, transaction_per_migration=True)
with context.begin_transaction():
    context.run_migrations()

"""Alembic environment: runs with the connection herald-migrate hands it."""

from __future__ import annotations

from alembic import context

from herald.core.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()

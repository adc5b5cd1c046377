"""The messages table: PostgreSQL is the source of truth for every message and its status."""

from __future__ import annotations

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    func,
    text,
)

from herald.core.ids import ID_LENGTH
from herald.core.statuses import DUE, PENDING, Status, sql_list

# Rows from before tenants belong to this tenant (migration 0005), as does every request when
# HERALD_AUTH=none. Every write names its tenant; the server default only serves old writers
# during a rolling upgrade.
DEFAULT_TENANT = "default"
_DEFAULT_TENANT_SQL = text(f"'{DEFAULT_TENANT}'")

metadata = MetaData()


messages = Table(
    "messages",
    metadata,
    # COLLATE "C": ids sort by byte, which is creation order (see ids.py).
    Column("id", String(ID_LENGTH, collation="C"), primary_key=True),
    # The tenant of the key that created it: every client-facing read and change names it.
    Column("tenant", Text(collation="C"), nullable=False, server_default=_DEFAULT_TENANT_SQL),
    Column("destination", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    # attempts when an operator last retried it by hand: the retry budget counts from there.
    Column("attempts_at_retry", Integer, nullable=False, server_default=text("0")),
    Column("last_error", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("send_at", DateTime(timezone=True)),
    Column("sent_at", DateTime(timezone=True)),
    CheckConstraint(f"status IN ({sql_list(tuple(Status))})", name="messages_status_valid"),
    # The sweeper's scan: only rows still owed a delivery, oldest change first. Partial, so it
    # stays as small as the backlog however many millions of sent rows the table holds.
    Index(
        "messages_pending_by_updated",
        "updated_at",
        postgresql_where=text(f"status IN ({sql_list(PENDING)})"),
    ),
    # The due-time promoter's scan: scheduled rows by the time they come due.
    Index(
        "messages_scheduled_by_send_at",
        "send_at",
        postgresql_where=text(f"status IN ({sql_list(DUE)})"),
    ),
    # A tenant lists its messages newest first, by status or not (dead letters first of all);
    # ids are time-ordered, so a time window is an id range of either index.
    Index("messages_by_tenant_id", "tenant", "id"),
    Index("messages_by_tenant_status_id", "tenant", "status", "id"),
)


# A client's Idempotency-Key names the message it first created, for idempotency.WINDOW_HOURS.
# No foreign key: the key row is written first, in the same transaction as the message.
# Keys are scoped to their tenant: two tenants may use the same key independently.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("tenant", Text(collation="C"), nullable=False, server_default=_DEFAULT_TENANT_SQL),
    Column("key", Text(collation="C"), nullable=False),
    Column("message_id", String(ID_LENGTH, collation="C"), nullable=False),
    Column("fingerprint", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("tenant", "key", name="idempotency_keys_pkey"),
    Index("idempotency_keys_by_created", "created_at"),
)


# API keys (herald.core.keys): only a hash of each key is stored. The status service's
# read-only role may read this table; last_used_at is written by the api alone.
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Text(collation="C"), primary_key=True),
    Column("tenant", Text(collation="C"), nullable=False),
    Column("label", Text),
    # Accepted messages per second; NULL: HERALD_TENANT_RATE.
    Column("rate", Integer, CheckConstraint("rate > 0", name="api_keys_rate_positive")),
    Column("secret_hash", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_used_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
)


# A tenant's own settings: its callback signing secret (herald.core.tenants). Kept in clear,
# as an HMAC needs it: the status service's read-only role is refused this table.
tenants = Table(
    "tenants",
    metadata,
    Column("name", Text(collation="C"), primary_key=True),
    Column("signing_secret", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("secret_created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

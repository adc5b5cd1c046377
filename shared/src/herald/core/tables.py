"""The messages table: PostgreSQL is the source of truth for every message and its status."""

from __future__ import annotations

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    text,
)

from herald.core.ids import ID_LENGTH
from herald.core.statuses import DUE, PENDING, Status, sql_list

metadata = MetaData()


messages = Table(
    "messages",
    metadata,
    # COLLATE "C": ids sort by byte, which is creation order (see ids.py).
    Column("id", String(ID_LENGTH, collation="C"), primary_key=True),
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
    # Operators list messages by status over time (dead letters first of all); ids are
    # time-ordered, so a time window is an id range.
    Index("messages_by_status_id", "status", "id"),
)


# A client's Idempotency-Key names the message it first created, for idempotency.WINDOW_HOURS.
# No foreign key: the key row is written first, in the same transaction as the message.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("key", Text(collation="C"), primary_key=True),
    Column("message_id", String(ID_LENGTH, collation="C"), nullable=False),
    Column("fingerprint", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("idempotency_keys_by_created", "created_at"),
)

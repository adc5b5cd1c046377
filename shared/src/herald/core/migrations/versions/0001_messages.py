"""The messages table and the indexes of its read paths and the sweeper.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_STATUSES = "'scheduled', 'queued', 'sending', 'retrying', 'sent', 'failed', 'canceled'"


def upgrade() -> None:
    op.create_table(
        "messages",
        sa.Column("id", sa.String(22, collation="C"), primary_key=True),
        sa.Column("destination", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("last_error", sa.Text),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("send_at", sa.DateTime(timezone=True)),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint(f"status IN ({_STATUSES})", name="messages_status_valid"),
    )
    op.create_index(
        "messages_pending_by_updated",
        "messages",
        ["updated_at"],
        postgresql_where=sa.text("status IN ('queued', 'retrying', 'sending')"),
    )
    op.create_index(
        "messages_scheduled_by_send_at",
        "messages",
        ["send_at"],
        postgresql_where=sa.text("status IN ('scheduled')"),
    )
    op.create_index("messages_by_status_id", "messages", ["status", "id"])


def downgrade() -> None:
    op.drop_table("messages")

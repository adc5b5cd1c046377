"""messages.attempts_at_retry: the attempts already spent when an operator last retried by hand.

The sender judges the last attempt by the row (attempts - attempts_at_retry > HERALD_MAX_RETRIES),
never by the queue message's own count, which a re-enqueue starts over. A manual retry of a
failed message gives it a full budget again, while `attempts` keeps counting every call.

ADD COLUMN with a constant default is a catalog change since PostgreSQL 11: no table rewrite,
only a brief ACCESS EXCLUSIVE lock, however many rows the table holds.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "messages",
        sa.Column("attempts_at_retry", sa.Integer, nullable=False, server_default=sa.text("0")),
    )


def downgrade() -> None:
    op.drop_column("messages", "attempts_at_retry")

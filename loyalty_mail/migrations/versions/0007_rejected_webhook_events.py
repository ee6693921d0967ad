"""rejected_webhook_events: provider events kept aside, with the reason, while their batch is applied

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

from loyalty_mail.models import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "rejected_webhook_events",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("event_key", sa.String(200), nullable=False),
        sa.Column("reason", sa.String(300), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_key"),
    )


def downgrade() -> None:
    op.drop_table("rejected_webhook_events")

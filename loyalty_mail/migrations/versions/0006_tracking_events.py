"""tracking_events: opens, clicks and provider events for each send, raw, with machine/bot flags

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from loyalty_mail.models import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

JSON_DOC = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "tracking_events",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("send_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column("url", sa.String(2000), nullable=True),
        sa.Column("link", sa.Integer(), nullable=True),
        sa.Column("user_agent", sa.String(500), nullable=True),
        sa.Column("ip", sa.String(64), nullable=True),
        sa.Column("machine", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("bot", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("provider_event_id", sa.String(200), nullable=True),
        sa.Column("detail", JSON_DOC, server_default="{}", nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("provider_event_id"),
    )
    op.create_index("ix_tracking_events_send", "tracking_events", ["send_id", "kind"])
    op.create_index("ix_tracking_events_time", "tracking_events", ["occurred_at"])


def downgrade() -> None:
    op.drop_index("ix_tracking_events_time", table_name="tracking_events")
    op.drop_index("ix_tracking_events_send", table_name="tracking_events")
    op.drop_table("tracking_events")

"""the send ledger (sends) and the suppression list

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from loyalty_mail.models import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

JSON_DOC = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "sends",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("send_id", sa.String(32), nullable=False),
        sa.Column("member_ref", sa.Integer(), nullable=False),
        sa.Column("flow", sa.String(64), nullable=False),
        sa.Column("occurrence_key", sa.String(200), nullable=False),
        sa.Column("template", sa.String(64), nullable=False),
        sa.Column("segment", sa.String(64), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(300), nullable=False),
        sa.Column("occurrence", JSON_DOC, server_default="{}", nullable=False),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column("scheduled_for", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("sent_at", UTCDateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.String(1000), nullable=True),
        sa.ForeignKeyConstraint(["member_ref"], ["members.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("send_id"),
        sa.UniqueConstraint("member_ref", "flow", "occurrence_key", name="uq_sends_occurrence"),
    )
    op.create_index("ix_sends_due", "sends", ["state", "scheduled_for"])
    op.create_index("ix_sends_member_time", "sends", ["member_ref", "scheduled_for"])
    op.create_index("ix_sends_flow_time", "sends", ["flow", "scheduled_for"])
    op.create_table(
        "suppressions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("detail", sa.String(300), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("email"),
    )


def downgrade() -> None:
    op.drop_table("suppressions")
    op.drop_index("ix_sends_flow_time", table_name="sends")
    op.drop_index("ix_sends_member_time", table_name="sends")
    op.drop_index("ix_sends_due", table_name="sends")
    op.drop_table("sends")

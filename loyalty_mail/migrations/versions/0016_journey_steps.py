"""journey_steps: where each member is in each multi-step flow (journey)

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

from loyalty_mail.models import UTCDateTime

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "journey_steps",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("member_ref", sa.Integer(), nullable=False),
        sa.Column("flow", sa.String(64), nullable=False),
        sa.Column("instance", sa.String(200), nullable=False),
        sa.Column("step", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(24), nullable=False),
        sa.Column("reached_at", UTCDateTime(), nullable=False),
        sa.Column("ready_at", UTCDateTime(), nullable=True),
        sa.Column("detail", sa.String(300), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["member_ref"], ["members.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("member_ref", "flow", "instance", "step", name="uq_journey_steps_step"),
    )
    op.create_index("ix_journey_steps_flow_member", "journey_steps", ["flow", "member_ref"])


def downgrade() -> None:
    op.drop_index("ix_journey_steps_flow_member", "journey_steps")
    op.drop_table("journey_steps")

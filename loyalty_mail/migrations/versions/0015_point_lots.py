"""point_lots: the points each member still holds per earning event, and when they expire

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

from loyalty_mail.models import UTCDateTime

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "point_lots",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("member_ref", sa.Integer(), nullable=False),
        sa.Column("earned_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("remaining", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["member_ref"], ["members.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_point_lots_expiry", "point_lots", ["expires_at", "member_ref", "remaining"])
    op.create_index("ix_point_lots_member", "point_lots", ["member_ref", "expires_at"])


def downgrade() -> None:
    op.drop_index("ix_point_lots_member", table_name="point_lots")
    op.drop_index("ix_point_lots_expiry", table_name="point_lots")
    op.drop_table("point_lots")

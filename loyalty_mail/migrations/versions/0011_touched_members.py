"""touched_members: members an import changed, queued for the daemon to plan within a second

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

from loyalty_mail.models import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "touched_members",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("member_ref", sa.Integer(), nullable=False),
        sa.Column("touched_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["member_ref"], ["members.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    op.drop_table("touched_members")

"""members.tier_period_start, members.tier_review_at: tiers that must be kept (tiers.qualification)

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

from loyalty_mail.models import UTCDateTime

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTER TABLE (no batch copy: on SQLite that would lose the expression indexes of 0003).
    op.add_column("members", sa.Column("tier_period_start", UTCDateTime(), nullable=True))
    op.add_column("members", sa.Column("tier_review_at", UTCDateTime(), nullable=True))
    op.create_index("ix_members_tier_review_at", "members", ["tier_review_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_members_tier_review_at", table_name="members")
    op.drop_column("members", "tier_review_at")  # SQLite 3.35+ drops columns in place
    op.drop_column("members", "tier_period_start")

"""A/B variants and one-off campaigns: sends.variant, variant_winners, campaign_schedules

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30
"""

import warnings

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from loyalty_mail.models import UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

JSON_DOC = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.add_column("sends", sa.Column("variant", sa.String(length=32), nullable=True))
    op.create_table(
        "variant_winners",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("flow", sa.String(length=64), nullable=False),
        sa.Column("variant", sa.String(length=32), nullable=False),
        sa.Column("metric", sa.String(length=32), nullable=False),
        sa.Column("figures", JSON_DOC, server_default="{}", nullable=False),
        sa.Column("decided_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("flow"),
    )
    op.create_table(
        "campaign_schedules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("definition", JSON_DOC, server_default="{}", nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("scheduled_at", UTCDateTime(), nullable=False),
        sa.Column("cancelled_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("campaign_schedules")
    op.drop_table("variant_winners")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Skipped unsupported reflection", sa.exc.SAWarning)
        with op.batch_alter_table("sends", schema=None) as batch_op:
            batch_op.drop_column("variant")

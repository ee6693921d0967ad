"""sends.claimed_at (dispatcher lease) and sends.provider_id (the provider's message id)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

import warnings

import sqlalchemy as sa
from alembic import op

from loyalty_mail.models import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sends", sa.Column("claimed_at", UTCDateTime(), nullable=True))
    op.add_column("sends", sa.Column("provider_id", sa.String(200), nullable=True))


def downgrade() -> None:
    # SQLite rebuilds the table; reflecting `members` (referenced) meets its expression indexes,
    # which SQLAlchemy cannot reflect and does not need here.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Skipped unsupported reflection", sa.exc.SAWarning)
        with op.batch_alter_table("sends", schema=None) as batch_op:
            batch_op.drop_column("provider_id")
            batch_op.drop_column("claimed_at")

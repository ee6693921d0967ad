"""sends.handed_over_at: when a claimed send was handed to the transport

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

import warnings

import sqlalchemy as sa
from alembic import op

from loyalty_mail.models import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sends", sa.Column("handed_over_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    # SQLite rebuilds the table; reflecting `members` (referenced) meets its expression indexes,
    # which SQLAlchemy cannot reflect and does not need here.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Skipped unsupported reflection", sa.exc.SAWarning)
        with op.batch_alter_table("sends", schema=None) as batch_op:
            batch_op.drop_column("handed_over_at")

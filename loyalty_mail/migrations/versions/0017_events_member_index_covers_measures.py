"""events: the per-member index also holds amount and points, so a member's spend or points
earned over a period (needed_to_keep_tier, the tier review) is read from the index alone

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-30
"""

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

NAME = "ix_events_member_type_time"


def upgrade() -> None:
    op.drop_index(NAME, "events")
    op.create_index(NAME, "events", ["member_ref", "type", "occurred_at", "amount", "points"])


def downgrade() -> None:
    op.drop_index(NAME, "events")
    op.create_index(NAME, "events", ["member_ref", "type", "occurred_at"])

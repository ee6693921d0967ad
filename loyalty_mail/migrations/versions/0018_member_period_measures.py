"""members.period_spend, period_points_earned, period_last_event_at: the measures of the tier
period kept on the member (needed_to_keep_tier reads them instead of the member's events),
counted here from the events of members who have a period; ix_members_period covers the read

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from loyalty_mail.models import MONEY, UTCDateTime

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTER TABLE (no batch copy: on SQLite that would lose the expression indexes of 0003);
    # a constant default adds the column without rewriting the table on PostgreSQL.
    op.add_column("members", sa.Column("period_spend", MONEY, nullable=False, server_default="0"))
    op.add_column("members", sa.Column("period_points_earned", sa.BigInteger(), nullable=False, server_default="0"))
    op.add_column("members", sa.Column("period_last_event_at", UTCDateTime(), nullable=True))
    # One pass over the events of members with a period, grouped by member (the per-member index
    # of 0017 covers it), then one UPDATE ... FROM: the same values as tier_review.period_values.
    # SQLite sums amounts as floating point: rounded to the cent, as the importers' sums are.
    spend = "COALESCE(ROUND(SUM(CASE WHEN e.type = 'purchase' THEN e.amount END), 2), 0)"
    op.execute(
        "UPDATE members SET period_spend = counted.spend, period_points_earned = counted.earned, "
        "period_last_event_at = counted.latest "
        f"FROM (SELECT e.member_ref AS ref, {spend} AS spend, "
        "COALESCE(SUM(CASE WHEN e.points > 0 THEN e.points END), 0) AS earned, MAX(e.occurred_at) AS latest "
        "FROM members p JOIN events e ON e.member_ref = p.id "
        "WHERE p.tier_period_start IS NOT NULL AND e.occurred_at > p.tier_period_start "
        "AND (e.type = 'purchase' OR e.points > 0) "
        "GROUP BY e.member_ref) AS counted "
        "WHERE members.id = counted.ref")
    # Built after the UPDATE, not kept up during it (models.Member: ix_members_period).
    op.create_index("ix_members_period", "members", ["tier_period_start", "tier", "period_spend",
                                                     "period_points_earned", "period_last_event_at"],
                    postgresql_include=["id"], sqlite_where=sa.text("tier_period_start IS NOT NULL"),
                    postgresql_where=sa.text("tier_period_start IS NOT NULL"))


def downgrade() -> None:
    op.drop_index("ix_members_period", table_name="members")
    op.drop_column("members", "period_last_event_at")  # SQLite 3.35+ drops columns in place
    op.drop_column("members", "period_points_earned")
    op.drop_column("members", "period_spend")

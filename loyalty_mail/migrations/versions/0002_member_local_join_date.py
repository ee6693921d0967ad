"""members.joined_on: the join date in the member's time zone (for anniversaries in SQL)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from datetime import timezone
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from alembic import op

from loyalty_mail.models import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("members", schema=None) as batch_op:
        batch_op.add_column(sa.Column("joined_on", sa.Date(), nullable=True))
    # Fill it for existing members. Members without a time zone of their own get UTC here; the
    # next import that touches them applies the program's default zone.
    members = sa.table("members", sa.column("id", sa.Integer), sa.column("joined_at", UTCDateTime()),
                       sa.column("timezone", sa.String), sa.column("joined_on", sa.Date))
    connection = op.get_bind()
    rows = connection.execute(sa.select(members.c.id, members.c.joined_at, members.c.timezone)
                              .where(members.c.joined_at.is_not(None))).all()
    updates = [{"b_id": r.id, "b_on": r.joined_at.astimezone(ZoneInfo(r.timezone) if r.timezone else timezone.utc).date()}
               for r in rows]
    if updates:
        connection.execute(members.update().where(members.c.id == sa.bindparam("b_id"))
                           .values(joined_on=sa.bindparam("b_on")), updates)


def downgrade() -> None:
    with op.batch_alter_table("members", schema=None) as batch_op:
        batch_op.drop_column("joined_on")

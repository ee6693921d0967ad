"""topics and consent: members' topic choices, the append-only consent log, pausing email, double
opt-in

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

from loyalty_mail.models import UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # Not in batch mode: on SQLite that copies the table and loses 0003's expression indexes.
    op.add_column("members", sa.Column("paused_until", UTCDateTime(), nullable=True))
    op.add_column("members", sa.Column("unconfirmed_since", UTCDateTime(), nullable=True))
    op.create_table(
        "member_topics",
        sa.Column("member_ref", sa.Integer(), nullable=False),
        sa.Column("topic", sa.String(length=64), nullable=False),
        sa.Column("subscribed", sa.Boolean(), nullable=False),
        sa.Column("changed_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["member_ref"], ["members.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("member_ref", "topic"),
    )
    op.create_table(
        "consent_log",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("member_ref", sa.Integer(), nullable=False),
        sa.Column("topic", sa.String(length=64), nullable=True),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.String(length=300), nullable=True),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["member_ref"], ["members.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_consent_log_member_time", "consent_log", ["member_ref", "occurred_at"])
    op.create_index("ix_consent_log_time", "consent_log", ["occurred_at"])
    # Append-only: the database refuses to change an entry (entries go only with their member).
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE FUNCTION consent_log_append_only() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN RAISE EXCEPTION 'the consent log is append-only'; END $$")
        op.execute("CREATE TRIGGER consent_log_append_only BEFORE UPDATE ON consent_log "
                   "FOR EACH ROW EXECUTE FUNCTION consent_log_append_only()")
    else:
        op.execute("CREATE TRIGGER consent_log_append_only BEFORE UPDATE ON consent_log "
                   "BEGIN SELECT RAISE(ABORT, 'the consent log is append-only'); END")
    # Members who left before the log existed: their unsubscribe, as the first entry.
    op.execute("INSERT INTO consent_log (member_ref, topic, action, source, detail, occurred_at) "
               "SELECT id, NULL, 'unsubscribe', 'manual', 'before the consent log', "
               "COALESCE(unsubscribed_at, updated_at) FROM members WHERE NOT subscribed")


def downgrade() -> None:
    op.execute("DROP TRIGGER consent_log_append_only" +
               (" ON consent_log" if op.get_bind().dialect.name == "postgresql" else ""))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION consent_log_append_only()")
    op.drop_index("ix_consent_log_time", table_name="consent_log")
    op.drop_index("ix_consent_log_member_time", table_name="consent_log")
    op.drop_table("consent_log")
    op.drop_table("member_topics")
    op.drop_column("members", "unconfirmed_since")
    op.drop_column("members", "paused_until")  # SQLite 3.35+ drops a column in place

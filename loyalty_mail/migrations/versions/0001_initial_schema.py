"""initial schema: members, events, tier history

Revision ID: 0001
Revises: 
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from loyalty_mail.models import UTCDateTime

JSON_DOC = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('members',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('member_id', sa.String(length=64), nullable=False),
    sa.Column('email', sa.String(length=254), nullable=False),
    sa.Column('first_name', sa.String(length=100), nullable=True),
    sa.Column('last_name', sa.String(length=100), nullable=True),
    sa.Column('locale', sa.String(length=16), nullable=True),
    sa.Column('timezone', sa.String(length=64), nullable=True),
    sa.Column('joined_at', UTCDateTime(), nullable=True),
    sa.Column('birthday', sa.Date(), nullable=True),
    sa.Column('points', sa.Integer(), server_default='0', nullable=False),
    sa.Column('tier', sa.String(length=32), nullable=False),
    sa.Column('total_spend', sa.Numeric(precision=18, scale=2), server_default='0', nullable=False),
    sa.Column('purchase_count', sa.Integer(), server_default='0', nullable=False),
    sa.Column('last_purchase_at', UTCDateTime(), nullable=True),
    sa.Column('nps_score', sa.SmallInteger(), nullable=True),
    sa.Column('subscribed', sa.Boolean(), server_default=sa.true(), nullable=False),
    sa.Column('unsubscribed_at', UTCDateTime(), nullable=True),
    sa.Column('attributes', JSON_DOC, server_default='{}', nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('updated_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('member_id')
    )
    with op.batch_alter_table('members', schema=None) as batch_op:
        batch_op.create_index('ix_members_email', ['email'], unique=False)
        batch_op.create_index('ix_members_joined_at', ['joined_at'], unique=False)
        batch_op.create_index('ix_members_last_purchase_at', ['last_purchase_at'], unique=False)
        batch_op.create_index('ix_members_tier', ['tier'], unique=False)

    op.create_table('events',
    sa.Column('id', BIG_ID, nullable=False),
    sa.Column('event_id', sa.String(length=128), nullable=True),
    sa.Column('member_ref', sa.Integer(), nullable=False),
    sa.Column('type', sa.String(length=64), nullable=False),
    sa.Column('occurred_at', UTCDateTime(), nullable=False),
    sa.Column('amount', sa.Numeric(precision=18, scale=2), nullable=True),
    sa.Column('currency', sa.String(length=3), nullable=True),
    sa.Column('points', sa.Integer(), nullable=True),
    sa.Column('properties', JSON_DOC, server_default='{}', nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['member_ref'], ['members.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('event_id')
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index('ix_events_member_type_time', ['member_ref', 'type', 'occurred_at'], unique=False)
        batch_op.create_index('ix_events_type_time_member', ['type', 'occurred_at', 'member_ref'], unique=False)

    op.create_table('tier_changes',
    sa.Column('id', BIG_ID, nullable=False),
    sa.Column('member_ref', sa.Integer(), nullable=False),
    sa.Column('from_tier', sa.String(length=32), nullable=True),
    sa.Column('to_tier', sa.String(length=32), nullable=False),
    sa.Column('changed_at', UTCDateTime(), nullable=False),
    sa.Column('reason', sa.String(length=300), nullable=False),
    sa.Column('event_ref', BIG_ID, nullable=True),
    sa.ForeignKeyConstraint(['event_ref'], ['events.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['member_ref'], ['members.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('tier_changes', schema=None) as batch_op:
        batch_op.create_index('ix_tier_changes_changed_at', ['changed_at'], unique=False)
        batch_op.create_index('ix_tier_changes_member_time', ['member_ref', 'changed_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('tier_changes', schema=None) as batch_op:
        batch_op.drop_index('ix_tier_changes_member_time')
        batch_op.drop_index('ix_tier_changes_changed_at')

    op.drop_table('tier_changes')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_type_time_member')
        batch_op.drop_index('ix_events_member_type_time')

    op.drop_table('events')
    with op.batch_alter_table('members', schema=None) as batch_op:
        batch_op.drop_index('ix_members_tier')
        batch_op.drop_index('ix_members_last_purchase_at')
        batch_op.drop_index('ix_members_joined_at')
        batch_op.drop_index('ix_members_email')

    op.drop_table('members')

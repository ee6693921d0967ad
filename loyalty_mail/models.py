"""The tables: members, their events, and their tier history.

One definition serves SQLite and PostgreSQL. Every timestamp is stored in UTC (`UTCDateTime`
refuses naive datetimes, so a local time can never slip in unconverted). Schema changes go
through the migrations in `loyalty_mail/migrations/`; a test keeps the two in step.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlmodel import Field, SQLModel

MONEY = sa.Numeric(18, 2)
JSON_DOC = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class UTCDateTime(sa.TypeDecorator[datetime]):
    """An aware datetime stored as UTC: `timestamptz` on PostgreSQL, naive UTC text on SQLite."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: attach a time zone before storing it")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def bind_processor(self, dialect: sa.Dialect) -> Any:
        """On SQLite, write SQLAlchemy's own storage format ('YYYY-MM-DD HH:MM:SS.ffffff') in one
        C call; the generic path formats through a dict and dominates bulk imports. The UTC wall
        time is the first 26 characters of the UTC time's ISO form (as in `sqlite_texts`), and a
        time already in UTC is not converted again: each step is as long as the formatting."""
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)
        utc = timezone.utc

        def process(value: datetime | None) -> str | None:
            if value is None:
                return None
            zone = value.tzinfo
            if zone is None:
                raise ValueError(f"naive datetime {value!r}: attach a time zone before storing it")
            return (value if zone is utc else value.astimezone(utc)).isoformat(" ", "microseconds")[:26]

        return process

    @staticmethod
    def sqlite_texts(values: list[datetime | None]) -> list[str | None]:
        """The SQLite bind processor over a whole column, for bulk imports: the UTC wall time
        is the first 26 characters of the UTC time's ISO form, which saves a replace() call
        (it parses keywords: 0.7 us, as much as the rest together)."""
        utc = timezone.utc
        for value in values:
            if value is not None and value.tzinfo is None:
                raise ValueError(f"naive datetime {value!r}: attach a time zone before storing it")
        return [None if value is None else value.astimezone(utc).isoformat(" ", "microseconds")[:26]
                for value in values]

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def _utc(nullable: bool = True, **kwargs: Any) -> Any:
    return Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=nullable, **kwargs))


class Member(SQLModel, table=True):
    """A loyalty member, with the aggregates segments read most."""

    __tablename__ = "members"
    __table_args__ = (
        sa.Index("ix_members_tier", "tier"),
        sa.Index("ix_members_last_purchase_at", "last_purchase_at"),
        sa.Index("ix_members_joined_at", "joined_at"),
        sa.Index("ix_members_email", "email"),
        sa.Index("ix_members_tier_review_at", "tier_review_at"),
        # needed_to_keep_tier reads the members with a period from this index alone (its
        # condition, tier_period_start IS NOT NULL, comes first), not from their wide rows.
        sa.Index("ix_members_period", "tier_period_start", "tier", "period_spend", "period_points_earned",
                 "period_last_event_at", postgresql_include=["id"],
                 sqlite_where=sa.text("tier_period_start IS NOT NULL"),
                 postgresql_where=sa.text("tier_period_start IS NOT NULL")),
    )

    id: int | None = Field(default=None, primary_key=True)
    member_id: str = Field(sa_column=sa.Column(sa.String(64), nullable=False, unique=True))
    email: str = Field(sa_column=sa.Column(sa.String(254), nullable=False))
    first_name: str | None = Field(default=None, sa_column=sa.Column(sa.String(100)))
    last_name: str | None = Field(default=None, sa_column=sa.Column(sa.String(100)))
    locale: str | None = Field(default=None, sa_column=sa.Column(sa.String(16)))
    timezone: str | None = Field(default=None, sa_column=sa.Column(sa.String(64)))
    joined_at: datetime | None = _utc()
    # The calendar date of joined_at in the member's own time zone, kept by the imports, so that
    # membership anniversaries can be matched in SQL on databases without time zone support.
    joined_on: date | None = Field(default=None, sa_column=sa.Column(sa.Date()))
    birthday: date | None = Field(default=None, sa_column=sa.Column(sa.Date()))
    points: int = Field(default=0, sa_column=sa.Column(sa.Integer(), nullable=False, server_default="0"))
    tier: str = Field(sa_column=sa.Column(sa.String(32), nullable=False))
    total_spend: Decimal = Field(
        default=Decimal(0), sa_column=sa.Column(MONEY, nullable=False, server_default="0")
    )
    purchase_count: int = Field(
        default=0, sa_column=sa.Column(sa.Integer(), nullable=False, server_default="0")
    )
    last_purchase_at: datetime | None = _utc()
    nps_score: int | None = Field(default=None, sa_column=sa.Column(sa.SmallInteger()))
    subscribed: bool = Field(
        default=True, sa_column=sa.Column(sa.Boolean(), nullable=False, server_default=sa.true())
    )
    unsubscribed_at: datetime | None = _utc()
    # Set from the preference centre ("pause all email for 30 days"): no email until then.
    paused_until: datetime | None = _utc()
    # Double opt-in: set when the member was created with `program.double_opt_in` on, cleared when
    # they confirm their address; while set they get service email only.
    unconfirmed_since: datetime | None = _utc()
    # With tiers.qualification: the rolling period the member re-qualifies over for their tier
    # (it starts when they reached the tier, or at their last review) and its end, the review.
    # Kept by the tier review (tier_review.py); null below the lowest paid tier.
    tier_period_start: datetime | None = _utc()
    tier_review_at: datetime | None = _utc()
    # The period's measures so far, for `needed_to_keep_tier` without reading events: the amounts
    # of purchases and the positive points of events after tier_period_start (at any time, also
    # ahead of a pinned `now`), both measures whichever is configured, and the latest time among
    # those events (null: none). 0 without a period. Every event writer adds to them; the tier
    # review counts them afresh when it starts a period (tier_review.period_values).
    period_spend: Decimal = Field(
        default=Decimal(0), sa_column=sa.Column(MONEY, nullable=False, server_default="0")
    )
    period_points_earned: int = Field(
        default=0, sa_column=sa.Column(sa.BigInteger(), nullable=False, server_default="0")
    )
    period_last_event_at: datetime | None = _utc()
    attributes: dict[str, Any] = Field(
        default_factory=dict, sa_column=sa.Column(JSON_DOC, nullable=False, server_default="{}")
    )
    created_at: datetime | None = _utc(nullable=False)
    updated_at: datetime | None = _utc(nullable=False)


class Event(SQLModel, table=True):
    """Something a member did: signed up, purchased, earned or redeemed points, or a custom type."""

    __tablename__ = "events"
    __table_args__ = (
        # Event-window segments ("3+ purchases in 30 days") read only this index.
        sa.Index("ix_events_type_time_member", "type", "occurred_at", "member_ref"),
        # Per-member probes; amount and points make it cover a member's spend or points earned
        # over a period (needed_to_keep_tier, the tier review) without reading the rows.
        sa.Index("ix_events_member_type_time", "member_ref", "type", "occurred_at", "amount", "points"),
    )

    id: int | None = Field(default=None, sa_column=sa.Column(BIG_ID, primary_key=True))
    event_id: str | None = Field(default=None, sa_column=sa.Column(sa.String(128), unique=True))
    member_ref: int = Field(
        sa_column=sa.Column(sa.Integer(), sa.ForeignKey("members.id", ondelete="CASCADE"),
                            nullable=False)
    )
    type: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    occurred_at: datetime | None = _utc(nullable=False)
    amount: Decimal | None = Field(default=None, sa_column=sa.Column(MONEY))
    currency: str | None = Field(default=None, sa_column=sa.Column(sa.String(3)))
    points: int | None = Field(default=None, sa_column=sa.Column(sa.Integer()))
    properties: dict[str, Any] = Field(
        default_factory=dict, sa_column=sa.Column(JSON_DOC, nullable=False, server_default="{}")
    )
    created_at: datetime | None = _utc(nullable=False)


class TierChange(SQLModel, table=True):
    """One move on the tier ladder: from, to, when (the causing event's time) and why."""

    __tablename__ = "tier_changes"
    __table_args__ = (
        sa.Index("ix_tier_changes_changed_at", "changed_at"),
        sa.Index("ix_tier_changes_member_time", "member_ref", "changed_at"),
    )

    id: int | None = Field(default=None, sa_column=sa.Column(BIG_ID, primary_key=True))
    member_ref: int = Field(
        sa_column=sa.Column(sa.Integer(), sa.ForeignKey("members.id", ondelete="CASCADE"),
                            nullable=False)
    )
    from_tier: str | None = Field(default=None, sa_column=sa.Column(sa.String(32)))
    to_tier: str = Field(sa_column=sa.Column(sa.String(32), nullable=False))
    changed_at: datetime | None = _utc(nullable=False)
    reason: str = Field(sa_column=sa.Column(sa.String(300), nullable=False))
    event_ref: int | None = Field(
        default=None,
        sa_column=sa.Column(BIG_ID, sa.ForeignKey("events.id", ondelete="SET NULL")),
    )


class PointLot(SQLModel, table=True):
    """Points a member still holds from one earning event, and when they expire: derived from the
    member's events under program.points.expiry (see loyalty_mail/points/), rebuilt by every
    import that touches the member. Only lots with points left are kept."""

    __tablename__ = "point_lots"
    __table_args__ = (
        # The expiry job and the points_expiring segment read a range of expiry times, covered.
        sa.Index("ix_point_lots_expiry", "expires_at", "member_ref", "remaining"),
        sa.Index("ix_point_lots_member", "member_ref", "expires_at"),
    )

    id: int | None = Field(default=None, sa_column=sa.Column(BIG_ID, primary_key=True))
    member_ref: int = Field(
        sa_column=sa.Column(sa.Integer(), sa.ForeignKey("members.id", ondelete="CASCADE"),
                            nullable=False)
    )
    earned_at: datetime | None = _utc(nullable=False)
    expires_at: datetime | None = _utc(nullable=False)
    points: int = Field(sa_column=sa.Column(sa.Integer(), nullable=False))      # as earned
    remaining: int = Field(sa_column=sa.Column(sa.Integer(), nullable=False))   # not yet redeemed


SEND_STATES = ("planned", "sending", "sent", "failed", "retry", "unknown", "suppressed",
               "held_out", "skipped")


class Send(SQLModel, table=True):
    """The send ledger and outbox: one row per (member, flow, occurrence), ever.

    The unique constraint is what makes "never twice" true whatever happens to the processes:
    an occurrence can be recorded once. `state` moves planned -> sending -> sent (or failed,
    retry, unknown); held_out, suppressed and skipped rows record decisions not to send.
    """

    __tablename__ = "sends"
    __table_args__ = (
        sa.UniqueConstraint("member_ref", "flow", "occurrence_key", name="uq_sends_occurrence"),
        sa.Index("ix_sends_due", "state", "scheduled_for"),
        sa.Index("ix_sends_member_time", "member_ref", "scheduled_for"),
        sa.Index("ix_sends_flow_time", "flow", "scheduled_for"),
    )

    id: int | None = Field(default=None, sa_column=sa.Column(BIG_ID, primary_key=True))
    send_id: str = Field(sa_column=sa.Column(sa.String(32), nullable=False, unique=True))
    member_ref: int = Field(
        sa_column=sa.Column(sa.Integer(), sa.ForeignKey("members.id", ondelete="CASCADE"),
                            nullable=False)
    )
    flow: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    occurrence_key: str = Field(sa_column=sa.Column(sa.String(200), nullable=False))
    template: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    segment: str | None = Field(default=None, sa_column=sa.Column(sa.String(64)))
    state: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    reason: str = Field(sa_column=sa.Column(sa.String(300), nullable=False))
    occurrence: dict[str, Any] = Field(
        default_factory=dict, sa_column=sa.Column(JSON_DOC, nullable=False, server_default="{}"))
    occurred_at: datetime | None = _utc(nullable=False)
    scheduled_for: datetime | None = _utc(nullable=False)
    created_at: datetime | None = _utc(nullable=False)
    sent_at: datetime | None = _utc()
    attempts: int = Field(default=0, sa_column=sa.Column(sa.Integer(), nullable=False, server_default="0"))
    last_error: str | None = Field(default=None, sa_column=sa.Column(sa.String(1000)))
    claimed_at: datetime | None = _utc()
    provider_id: str | None = Field(default=None, sa_column=sa.Column(sa.String(200)))
    handed_over_at: datetime | None = _utc()
    variant: str | None = Field(default=None, sa_column=sa.Column(sa.String(32)))  # A/B variant sent


class Suppression(SQLModel, table=True):
    """An address that must not get email (marketing or service): unsubscribed, bounced, complained, manual."""

    __tablename__ = "suppressions"

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(sa_column=sa.Column(sa.String(254), nullable=False, unique=True))
    reason: str = Field(sa_column=sa.Column(sa.String(32), nullable=False))
    detail: str | None = Field(default=None, sa_column=sa.Column(sa.String(300)))
    created_at: datetime | None = _utc(nullable=False)


class TrackingEvent(SQLModel, table=True):
    """Something that happened to a send: delivered, opened, clicked, bounced, complained,
    unsubscribed. Every hit is kept, with flags instead of being dropped: `machine` (a proxy or
    prefetch opened it, e.g. Apple Mail Privacy Protection) and `bot` (a link scanner clicked)."""

    __tablename__ = "tracking_events"
    __table_args__ = (
        sa.Index("ix_tracking_events_send", "send_id", "kind"),
        sa.Index("ix_tracking_events_time", "occurred_at"),
    )

    id: int | None = Field(default=None, sa_column=sa.Column(BIG_ID, primary_key=True))
    send_id: str = Field(sa_column=sa.Column(sa.String(32), nullable=False))
    kind: str = Field(sa_column=sa.Column(sa.String(24), nullable=False))
    source: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    occurred_at: datetime | None = _utc(nullable=False)
    url: str | None = Field(default=None, sa_column=sa.Column(sa.String(2000)))
    link: int | None = Field(default=None, sa_column=sa.Column(sa.Integer()))
    user_agent: str | None = Field(default=None, sa_column=sa.Column(sa.String(500)))
    ip: str | None = Field(default=None, sa_column=sa.Column(sa.String(64)))
    machine: bool = Field(default=False, sa_column=sa.Column(sa.Boolean(), nullable=False, server_default=sa.false()))
    bot: bool = Field(default=False, sa_column=sa.Column(sa.Boolean(), nullable=False, server_default=sa.false()))
    provider_event_id: str | None = Field(default=None, sa_column=sa.Column(sa.String(200), unique=True))
    detail: dict[str, Any] = Field(
        default_factory=dict, sa_column=sa.Column(JSON_DOC, nullable=False, server_default="{}"))


class RejectedWebhookEvent(SQLModel, table=True):
    """A provider webhook event that could not be applied (a NUL byte, an address that is not one,
    ...), kept with the reason while the rest of its batch is applied. `event_key` is the
    provider's event id, or a digest of the event's content: a retried batch stores it once."""

    __tablename__ = "rejected_webhook_events"

    id: int | None = Field(default=None, sa_column=sa.Column(BIG_ID, primary_key=True))
    source: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    event_key: str = Field(sa_column=sa.Column(sa.String(200), nullable=False, unique=True))
    reason: str = Field(sa_column=sa.Column(sa.String(300), nullable=False))
    raw: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))  # the event as ASCII JSON
    received_at: datetime | None = _utc(nullable=False)


class RejectedHit(SQLModel, table=True):
    """An open or click the database refused (a URL longer than the column, ...), kept with the
    reason so that one bad hit never stops the others from being written."""

    __tablename__ = "rejected_hits"

    id: int | None = Field(default=None, sa_column=sa.Column(BIG_ID, primary_key=True))
    kind: str = Field(sa_column=sa.Column(sa.String(24), nullable=False))
    reason: str = Field(sa_column=sa.Column(sa.String(300), nullable=False))
    raw: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))  # the hit as ASCII JSON
    occurred_at: datetime | None = _utc(nullable=False)


class ApiKey(SQLModel, table=True):
    """A key for the HTTP API. Only the SHA-256 digest of the key is stored (see api/keys.py);
    `prefix` is its first characters, to tell keys apart in listings."""

    __tablename__ = "api_keys"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=sa.Column(sa.String(64), nullable=False, unique=True))
    prefix: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    key_hash: str = Field(sa_column=sa.Column(sa.String(64), nullable=False, unique=True))
    scope: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    created_at: datetime | None = _utc(nullable=False)
    revoked_at: datetime | None = _utc()


class TouchedMember(SQLModel, table=True):
    """A member whose data an import changed, waiting for the daemon to plan them at once (see
    loyalty_mail/touched.py): written in the import's transaction, deleted as it is taken."""

    __tablename__ = "touched_members"
    __table_args__ = {"sqlite_autoincrement": True}  # ids never reused: a waiter compares the newest

    id: int | None = Field(default=None, sa_column=sa.Column(BIG_ID, primary_key=True))
    member_ref: int = Field(
        sa_column=sa.Column(sa.Integer(), sa.ForeignKey("members.id", ondelete="CASCADE"),
                            nullable=False)
    )
    touched_at: datetime | None = _utc(nullable=False)


class VariantWinner(SQLModel, table=True):
    """The end of a flow's (or campaign's) A/B test: which variant won, when, and on what figures
    (written by loyalty_mail/flows/variants.py only). From `decided_at` on, new members get it."""

    __tablename__ = "variant_winners"

    id: int | None = Field(default=None, primary_key=True)
    flow: str = Field(sa_column=sa.Column(sa.String(64), nullable=False, unique=True))
    variant: str = Field(sa_column=sa.Column(sa.String(32), nullable=False))
    metric: str = Field(sa_column=sa.Column(sa.String(32), nullable=False))
    figures: dict[str, Any] = Field(
        default_factory=dict, sa_column=sa.Column(JSON_DOC, nullable=False, server_default="{}"))
    decided_at: datetime | None = _utc(nullable=False)


class CampaignSchedule(SQLModel, table=True):
    """A one-off campaign as it was scheduled: the validated campaign file (`definition`), and
    whether it is scheduled or cancelled (written by loyalty_mail/campaigns/schedule.py only)."""

    __tablename__ = "campaign_schedules"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=sa.Column(sa.String(64), nullable=False, unique=True))
    state: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    definition: dict[str, Any] = Field(
        default_factory=dict, sa_column=sa.Column(JSON_DOC, nullable=False, server_default="{}"))
    digest: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    scheduled_at: datetime | None = _utc(nullable=False)
    cancelled_at: datetime | None = _utc()
class MemberTopic(SQLModel, table=True):
    """A member's own choice for one topic (config.yaml `topics`): subscribed or not, and since
    when. Without a row the topic's `default` holds. Written by consent.py alone."""

    __tablename__ = "member_topics"

    member_ref: int = Field(
        sa_column=sa.Column(sa.Integer(), sa.ForeignKey("members.id", ondelete="CASCADE"),
                            primary_key=True)
    )
    topic: str = Field(sa_column=sa.Column(sa.String(64), primary_key=True))
    subscribed: bool = Field(sa_column=sa.Column(sa.Boolean(), nullable=False))
    changed_at: datetime | None = _utc(nullable=False)


class ConsentEntry(SQLModel, table=True):
    """The consent log: every change of what a member agreed to receive, append-only. `topic`
    is None for all email; `action` is subscribe, unsubscribe, pause, resume, suppress (a hard
    bounce or a complaint), await_confirm or confirm (double opt-in); `source` says who asked (consent.SOURCES)."""

    __tablename__ = "consent_log"
    __table_args__ = (
        sa.Index("ix_consent_log_member_time", "member_ref", "occurred_at"),
        sa.Index("ix_consent_log_time", "occurred_at"),
    )

    id: int | None = Field(default=None, sa_column=sa.Column(BIG_ID, primary_key=True))
    member_ref: int = Field(
        sa_column=sa.Column(sa.Integer(), sa.ForeignKey("members.id", ondelete="CASCADE"),
                            nullable=False)
    )
    topic: str | None = Field(default=None, sa_column=sa.Column(sa.String(64)))
    action: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    source: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    detail: str | None = Field(default=None, sa_column=sa.Column(sa.String(300)))
    occurred_at: datetime | None = _utc(nullable=False)


class JourneyStep(SQLModel, table=True):
    """Where a member is in a journey: one row per step reached in one journey instance (the
    trigger occurrence that started it), ever. `$end` and `$exit` rows close an instance. A send
    step's row is written in the same transaction as its `sends` row (see flows/ledger.py)."""

    __tablename__ = "journey_steps"
    __table_args__ = (
        sa.UniqueConstraint("member_ref", "flow", "instance", "step", name="uq_journey_steps_step"),
        sa.Index("ix_journey_steps_flow_member", "flow", "member_ref"),
    )

    id: int | None = Field(default=None, sa_column=sa.Column(BIG_ID, primary_key=True))
    member_ref: int = Field(
        sa_column=sa.Column(sa.Integer(), sa.ForeignKey("members.id", ondelete="CASCADE"),
                            nullable=False)
    )
    flow: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    instance: str = Field(sa_column=sa.Column(sa.String(200), nullable=False))
    step: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    outcome: str = Field(sa_column=sa.Column(sa.String(24), nullable=False))
    reached_at: datetime | None = _utc(nullable=False)
    ready_at: datetime | None = _utc()       # when the member may go on to the next step
    detail: str | None = Field(default=None, sa_column=sa.Column(sa.String(300)))
    created_at: datetime | None = _utc(nullable=False)


# SQLModel sets __table__ on table models at class creation; its type hints do not declare it.
members_table: sa.Table = Member.__table__  # type: ignore[attr-defined]
events_table: sa.Table = Event.__table__  # type: ignore[attr-defined]
tier_changes_table: sa.Table = TierChange.__table__  # type: ignore[attr-defined]
sends_table: sa.Table = Send.__table__  # type: ignore[attr-defined]
suppressions_table: sa.Table = Suppression.__table__  # type: ignore[attr-defined]
tracking_events_table: sa.Table = TrackingEvent.__table__  # type: ignore[attr-defined]
rejected_webhook_events_table: sa.Table = RejectedWebhookEvent.__table__  # type: ignore[attr-defined]
rejected_hits_table: sa.Table = RejectedHit.__table__  # type: ignore[attr-defined]
api_keys_table: sa.Table = ApiKey.__table__  # type: ignore[attr-defined]
touched_members_table: sa.Table = TouchedMember.__table__  # type: ignore[attr-defined]
variant_winners_table: sa.Table = VariantWinner.__table__  # type: ignore[attr-defined]
campaign_schedules_table: sa.Table = CampaignSchedule.__table__  # type: ignore[attr-defined]
member_topics_table: sa.Table = MemberTopic.__table__  # type: ignore[attr-defined]
consent_log_table: sa.Table = ConsentEntry.__table__  # type: ignore[attr-defined]
point_lots_table: sa.Table = PointLot.__table__  # type: ignore[attr-defined]
journey_steps_table: sa.Table = JourneyStep.__table__  # type: ignore[attr-defined]

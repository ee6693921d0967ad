"""Tiers that must be kept (`tiers.qualification`): the rolling measure, the review, the moves.

A member holds a tier for a period (`period`, 12 months by default) that starts when they reach
it. The period ends at the review (`members.tier_review_at`). Activity counts towards the period
until the grace ends (review + `grace`); if by then the measure (spend, or points earned) reaches
the tier's threshold, the tier is kept and a new period starts at the review; if not, at review
+ grace the member moves down one level (`downgrade: one_level`) or to the level the measure earns
(`to_qualified`), and a period for that tier starts then. Upward moves happen as soon as the
measure over the period ending now reaches a higher threshold. Every move is recorded in the tier
history with its reason.

`apply` writes through the caller's connection (the dry run rolls it back) and is idempotent: it
reads the state it writes, so running it twice at one instant moves no one twice.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from .config import Settings, TierQualification
from .durations import Duration, add_months
from .models import UTCDateTime, events_table, members_table, tier_changes_table
from .tiers import TierLadder

CHUNK = 500


@dataclass(frozen=True)
class Decision:
    """What the review did to one member: moved up, down, or kept the tier at a review."""

    member_id: str
    kind: str            # up | down | kept
    from_tier: str
    to_tier: str
    at: datetime         # when it took effect (the end of the grace for a review)
    measure: Decimal     # spend or points earned over the period counted
    reason: str


@dataclass
class ReviewReport:
    """Every decision of one `apply`, and how many members had their period (re)started."""

    at: datetime
    decisions: list[Decision] = field(default_factory=list)
    started: int = 0

    def count(self, kind: str) -> int:
        return sum(1 for d in self.decisions if d.kind == kind)


def period_after(start: datetime, period: Duration) -> datetime:
    """The end of a period starting at `start`: calendar months and years (29 February plus a
    year is 28 February), fixed days and weeks."""
    if period.unit in ("month", "year"):
        return add_months(start, period.amount * (12 if period.unit == "year" else 1))
    return start + period.span()


def period_before(end: datetime, period: Duration) -> datetime:
    """The start of the period that ends at `end`."""
    if period.unit in ("month", "year"):
        return add_months(end, -period.amount * (12 if period.unit == "year" else 1))
    return end - period.span()


def measure_column(q: TierQualification) -> sa.ColumnElement[Any]:
    """What one event adds to the measure: a purchase's amount, or the points an event added."""
    e = events_table
    if q.measure == "spend":
        return sa.case((e.c.type == "purchase", e.c.amount), else_=None)
    return sa.case((e.c.points > 0, e.c.points), else_=None)


def period_values(start: sa.ColumnElement[Any]) -> dict[str, sa.ColumnElement[Any]]:
    """The members columns that keep a period's measures (models.Member.period_spend, ...) as the
    member's events after `start` give them: scalar subqueries correlated to members, for an
    UPDATE of members. A null `start` (no period) gives 0, 0 and null."""
    e, m = events_table, members_table
    mine = (e.c.member_ref == m.c.id, e.c.occurred_at > start)
    # to the cent: SQLite sums amounts as floating point, the importers add them as decimals
    spend = sa.func.coalesce(sa.func.round(sa.func.sum(e.c.amount), 2), 0)
    return {
        # a purchase's type narrows the seek in (member_ref, type, occurred_at, amount, points)
        "period_spend": sa.select(spend).where(*mine, e.c.type == "purchase").scalar_subquery(),
        "period_points_earned": sa.select(sa.func.coalesce(sa.func.sum(e.c.points), 0))
        .where(*mine, e.c.points > 0).scalar_subquery(),
        "period_last_event_at": sa.select(sa.func.max(e.c.occurred_at))
        .where(*mine, sa.or_(e.c.type == "purchase", e.c.points > 0)).scalar_subquery(),
    }


def recount_periods(conn: sa.Connection, refs: Collection[int]) -> None:
    """Count these members' period measures afresh from their events after their
    tier_period_start (as the review does when it starts a period): for periods or events
    written into the tables by other means than loyalty-mail's writers."""
    m = members_table
    ordered = sorted(refs)
    for first in range(0, len(ordered), CHUNK):
        conn.execute(m.update().where(m.c.id.in_(ordered[first:first + CHUNK]))
                     .values(**period_values(m.c.tier_period_start)))


def measure_between(conn: sa.Connection, q: TierQualification, refs: Collection[int],
                    start: datetime, end: datetime) -> dict[int, Decimal]:
    """Each member's measure over events after `start` up to and including `end`."""
    e = events_table
    rows = conn.execute(
        sa.select(e.c.member_ref, sa.func.coalesce(sa.func.sum(measure_column(q)), 0))
        .where(e.c.member_ref.in_(sorted(refs)), e.c.occurred_at > start, e.c.occurred_at <= end)
        .group_by(e.c.member_ref))
    found = {ref: Decimal(str(value)) for ref, value in rows}
    return {ref: found.get(ref, Decimal(0)) for ref in refs}


def unit(q: TierQualification) -> str:
    return "spend" if q.measure == "spend" else "points earned"


def _amount(value: Decimal) -> str:
    return f"{value:,.2f}".rstrip("0").rstrip(".") if value != value.to_integral_value() else f"{int(value):,}"


class _Reviewer:
    def __init__(self, conn: sa.Connection, settings: Settings, now: datetime) -> None:
        assert settings.tiers.qualification is not None
        self.conn, self.now = conn, now
        self.q = settings.tiers.qualification
        self.ladder = TierLadder.from_settings(settings.tiers)
        self.lowest = self.ladder.names[0]
        self.report = ReviewReport(now)

    def move(self, ref: int, member_id: str, kind: str, old: str, new: str, at: datetime,
             measure: Decimal, reason: str) -> None:
        self.conn.execute(tier_changes_table.insert().values(
            member_ref=ref, from_tier=old, to_tier=new, changed_at=at, reason=reason[:300]))
        self.report.decisions.append(Decision(member_id, kind, old, new, at, measure, reason))

    def store(self, ref: int, tier: str, start: datetime | None, review: datetime | None) -> None:
        """Set the member's tier and period, and count the period's measures afresh."""
        m = members_table
        self.conn.execute(m.update().where(m.c.id == ref).values(
            tier=tier, tier_period_start=start, tier_review_at=review, updated_at=self.now,
            **period_values(sa.literal(start, UTCDateTime()))))

    # -- up ----------------------------------------------------------------------------------

    def upgrades(self, members: Collection[int] | None, since: datetime | None) -> None:
        """Members whose measure over the period ending now reaches a higher tier move up."""
        e, m = events_table, members_table
        candidates = sa.select(m.c.id, m.c.member_id, m.c.tier).order_by(m.c.id)
        if since is not None:
            counted = e.c.type == "purchase" if self.q.measure == "spend" else e.c.points > 0
            active = sa.select(e.c.member_ref).where(e.c.occurred_at > since, e.c.occurred_at <= self.now,
                                                     counted)
            candidates = candidates.where(m.c.id.in_(active))
        if members is not None:
            candidates = candidates.where(m.c.id.in_(sorted(members)))
        start = period_before(self.now, self.q.period)
        last = 0
        while True:  # a page of members at a time: memory stays flat however many there are
            chunk = list(self.conn.execute(candidates.where(m.c.id > last).limit(CHUNK)).all())
            if not chunk:
                return
            last = chunk[-1].id
            measures = measure_between(self.conn, self.q, [r.id for r in chunk], start, self.now)
            for row in chunk:
                current = self.ladder.rank(row.tier) if row.tier in self.ladder.names else 0
                earned = self.ladder.qualified_rank(measures[row.id])
                if earned <= current:
                    continue
                new = self.ladder.names[earned]
                self.move(row.id, row.member_id, "up", row.tier, new, self.now, measures[row.id],
                          f"qualified: {_amount(measures[row.id])} {unit(self.q)} in the {self.q.period} "
                          f"to {self.now:%Y-%m-%d}")
                self.store(row.id, new, self.now, period_after(self.now, self.q.period))

    # -- periods -----------------------------------------------------------------------------

    def start_periods(self, members: Collection[int] | None, since: datetime | None) -> None:
        """A member above the lowest tier whose period is unknown, or older than their latest
        move to the tier, gets the period running now among those starting at that move (else
        when they joined, else now) and each anniversary of it, so turning qualification on never
        reviews a member before their next anniversary; a member at the lowest tier has none. With `since` (a tick), only unknown periods are
        looked for: with qualification every move is the review's, which starts the period."""
        m, t = members_table, tier_changes_table
        reached = (sa.select(sa.func.max(t.c.changed_at))
                   .where(t.c.member_ref == m.c.id, t.c.to_tier == m.c.tier, t.c.changed_at <= self.now)
                   .scalar_subquery())
        stale = m.c.tier_period_start.is_(None) if since is not None else sa.or_(
            m.c.tier_period_start.is_(None), m.c.tier_period_start < reached)
        query = sa.select(m.c.id, m.c.tier, m.c.joined_at, reached.label("reached")).where(
            sa.or_(sa.and_(m.c.tier != self.lowest, stale),
                   sa.and_(m.c.tier == self.lowest, m.c.tier_review_at.is_not(None))))
        if members is not None:
            query = query.where(m.c.id.in_(sorted(members)))
        for row in _pages(self.conn, query):
            if row.tier == self.lowest:
                self.store(row.id, row.tier, None, None)
                continue
            start = row.reached or row.joined_at or self.now
            while period_after(start, self.q.period) <= self.now:  # reached long ago: the coming
                start = period_after(start, self.q.period)           # anniversary is the review
            self.store(row.id, row.tier, start, period_after(start, self.q.period))
            self.report.started += 1

    # -- down --------------------------------------------------------------------------------

    def reviews(self, members: Collection[int] | None) -> None:
        """Every review whose grace has ended: kept, or a move down; missed reviews in turn."""
        m = members_table
        query = (sa.select(m.c.id, m.c.member_id, m.c.tier, m.c.tier_period_start, m.c.tier_review_at)
                 .where(m.c.tier != self.lowest, m.c.tier_review_at.is_not(None),
                        m.c.tier_review_at <= self.now - self.q.grace))
        if members is not None:
            query = query.where(m.c.id.in_(sorted(members)))
        for row in _pages(self.conn, query):
            if row.tier in self.ladder.names:  # a tier no longer on the ladder is left as it is
                self.review(row)

    def review(self, row: Any) -> None:
        tier, start, review = row.tier, row.tier_period_start, row.tier_review_at
        grace, ladder = self.q.grace, self.ladder
        while tier != self.lowest and review + grace <= self.now:
            measure = measure_between(self.conn, self.q, [row.id], start, review + grace)[row.id]
            rank = ladder.rank(tier)
            needed = ladder.levels[rank].threshold
            if measure >= needed:
                self.report.decisions.append(Decision(
                    row.member_id, "kept", tier, tier, review, measure,
                    f"re-qualified: {_amount(measure)} of {_amount(needed)} {unit(self.q)} by the review "
                    f"on {review:%Y-%m-%d}"))
                start, review = review, period_after(review, self.q.period)
                continue
            target = rank - 1 if self.q.downgrade == "one_level" else min(ladder.qualified_rank(measure), rank - 1)
            new, at = ladder.names[target], review + grace
            self.move(row.id, row.member_id, "down", tier, new, at, measure,
                      f"not re-qualified: {_amount(measure)} of {_amount(needed)} {unit(self.q)} by the "
                      f"review on {review:%Y-%m-%d} (grace {_days(grace)})")
            tier, start, review = new, at, period_after(at, self.q.period)
        if tier == self.lowest:
            start = review = None
        self.store(row.id, tier, start, review)


def _pages(conn: sa.Connection, query: sa.Select[Any]) -> Iterator[Any]:
    """The rows of a query over members, a page at a time by member id (the caller may update
    the rows of a page before the next is read)."""
    m = members_table
    last = 0
    while True:
        page = conn.execute(query.where(m.c.id > last).order_by(m.c.id).limit(CHUNK)).all()
        if not page:
            return
        last = page[-1].id
        yield from page


def _days(span: timedelta) -> str:
    return f"{span.days} day{'' if span.days == 1 else 's'}"


def apply(conn: sa.Connection, settings: Settings, now: datetime, *,
          members: Collection[int] | None = None, since: datetime | None = None) -> ReviewReport:
    """Move members up who qualify, start the periods of members who reached a tier, and apply
    every review whose grace ended by `now`. `members` (their ids) limits it to them; `since`
    limits the upward check to members with qualifying activity after it (None: everyone)."""
    if settings.tiers.qualification is None:
        return ReviewReport(now)
    reviewer = _Reviewer(conn, settings, now)
    reviewer.upgrades(members, since)
    reviewer.start_periods(members, since)
    reviewer.reviews(members)
    return reviewer.report


def period_measures(conn: sa.Connection, q: TierQualification, refs: Collection[int],
                    end: datetime) -> dict[int, Decimal]:
    """Each member's measure over their own period: events after members.tier_period_start up to
    and including `end` (one query a page of members; 0 without a period or events)."""
    e, m = events_table, members_table
    found: dict[int, Decimal] = {}
    ordered = sorted(refs)
    for first in range(0, len(ordered), CHUNK):
        rows = conn.execute(
            sa.select(e.c.member_ref, sa.func.coalesce(sa.func.sum(measure_column(q)), 0))
            .select_from(e.join(m, m.c.id == e.c.member_ref))
            .where(m.c.id.in_(ordered[first:first + CHUNK]), e.c.occurred_at > m.c.tier_period_start,
                   e.c.occurred_at <= end)
            .group_by(e.c.member_ref))
        found.update((ref, Decimal(str(value))) for ref, value in rows)
    return {ref: found.get(ref, Decimal(0)) for ref in refs}


def needed_to_keep(conn: sa.Connection, settings: Settings, member_ref: int, tier: str,
                   start: datetime, now: datetime) -> Decimal:
    """What the member still needs, from `now`, to keep `tier` at its review (0 when kept)."""
    q = settings.tiers.qualification
    assert q is not None
    ladder = TierLadder.from_settings(settings.tiers)
    measure = measure_between(conn, q, [member_ref], start, now)[member_ref]
    return max(ladder.levels[ladder.rank(tier)].threshold - measure, Decimal(0))


def needed_to_keep_each(conn: sa.Connection, settings: Settings, members: Collection[tuple[int, str]],
                        now: datetime) -> dict[int, Decimal]:
    """`needed_to_keep` for many (member_ref, tier) at once, each over their own period."""
    q = settings.tiers.qualification
    assert q is not None
    ladder = TierLadder.from_settings(settings.tiers)
    measures = period_measures(conn, q, [ref for ref, _ in members], now)
    return {ref: max(ladder.levels[ladder.rank(tier)].threshold - measures[ref], Decimal(0))
            for ref, tier in members}


def needed_to_regain_each(conn: sa.Connection, settings: Settings,
                          members: Collection[tuple[int, str, int, Decimal]], now: datetime) -> dict[int, Decimal]:
    """What each (member_ref, tier, points, spend) needs to reach `tier` again: over the period
    ending now with qualification (one query a page of members), else from their points (or
    spend) today."""
    ladder = TierLadder.from_settings(settings.tiers)
    q = settings.tiers.qualification
    if q is None:
        have = {ref: Decimal(points) if ladder.basis == "points" else Decimal(spend)
                for ref, _, points, spend in members}
    else:
        refs, start = sorted(ref for ref, *_ in members), period_before(now, q.period)
        have = {}
        for first in range(0, len(refs), CHUNK):
            have.update(measure_between(conn, q, refs[first:first + CHUNK], start, now))
    return {ref: max(ladder.levels[ladder.rank(tier)].threshold - have[ref], Decimal(0))
            for ref, tier, _, _ in members}


def review_in(engine: sa.Engine, settings: Settings, now: datetime, *, dry_run: bool = False) -> ReviewReport:
    """`apply` to every member in a transaction of its own: committed, or with `dry_run` rolled
    back (the report says what would have happened)."""
    if settings.tiers.qualification is None:
        from .errors import ConfigError
        raise ConfigError("tiers.qualification is not set in config.yaml: tiers follow points (or spend) "
                          "as they change and there is nothing to review. Add e.g. "
                          "`qualification: {period: 12 months, grace: 30 days}` under tiers:")
    from . import db
    if not dry_run:   # one review at a time: a second waits, then reads the moves the first made
        with db.exclusive(engine, db.REVIEW_LOCK) as conn:
            return apply(conn, settings, now)
    with engine.connect() as conn:
        report = apply(conn, settings, now)
        conn.rollback()
    return report


def replay(engine: sa.Engine, settings: Settings, start: datetime | None, end: datetime,
           step: timedelta = timedelta(days=7)) -> ReviewReport:
    """The reviews a program running since `start` (None: the first event) would have made by
    `end`, one `step` at a time (each looks only at members active since the step before): for
    history imported in one go, such as the demo's. Committed; the report holds every decision."""
    report = ReviewReport(end)
    if settings.tiers.qualification is None:
        return report
    if start is None:
        with engine.connect() as conn:
            start = conn.execute(sa.select(sa.func.min(events_table.c.occurred_at))).scalar_one()
    if start is None:
        return report
    moment = start - timedelta(seconds=1)  # the first step counts the first event
    while moment < end:
        moment = min(moment + step, end)
        with engine.begin() as conn:
            part = apply(conn, settings, moment, since=moment - step)
        report.decisions += part.decisions
        report.started += part.started
    return report

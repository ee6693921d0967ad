"""Occurrences of the member-lifecycle triggers: tier reviews, tier downgrades, birthdays,
rewards within reach and monthly statements. Same contract as occurrences.py (one bounded query
per trigger, rows in member order), with these keys:

    tier_at_risk      tier_review:<tier>:<review date>   `before` the review, while still short
    tier_downgrade    tier:<tier change id>              each downward move in the tier history
    birthday          birthday:<year>                    local midnight, `days_before` the birthday
    reward_available  reward:<event id>                  the event that took the balance to a
                                                         reward's cost from below it
    statement         statement:<YYYY-MM>                the month before `now` (program's zone)
    confirmation      confirm                            a member created waiting to confirm their
                                                         address (double opt-in), at once
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from itertools import islice
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from ..config import FlowSettings, Settings
from ..durations import add_months
from ..models import events_table, members_table, point_lots_table, tier_changes_table
from ..segments.compiler import month_day_key
from ..tier_review import CHUNK, measure_between, needed_to_keep_each, needed_to_regain_each, period_before
from ..tiers import TierLadder
from .occurrences import (MEMBER_COLUMNS, Occurrence, Window, _fmt, _member, _stream, point_events_newest_first,
                          same_date_in)
from .scheduler import flow_schedules

EXPIRED_TYPE = "points_expired"  # events that took expired points off a balance


def _text(value: Decimal) -> str:
    """A decimal as JSON keeps it (the ledger stores occurrences as JSON)."""
    return str(value.normalize()) if value == value.to_integral_value() else str(value)


# -- tiers ---------------------------------------------------------------------------------------

def tier_at_risk(conn: sa.Connection, flow: FlowSettings, settings: Settings, window: Window,
                 audience: sa.ColumnElement[bool] | None, zone_default: str) -> Iterator[Occurrence]:
    """Members whose review is `before` away (due in the window) and who have not re-qualified."""
    m = members_table
    q = settings.tiers.qualification
    assert q is not None
    ladder = TierLadder.from_settings(settings.tiers)
    query = (sa.select(*MEMBER_COLUMNS, m.c.tier, m.c.tier_period_start, m.c.tier_review_at)
             .where(m.c.tier_review_at >= window.since + flow.review_notice(),
                    m.c.tier_review_at <= window.now + flow.review_notice(),
                    m.c.tier != ladder.names[0])
             .order_by(m.c.id))
    if audience is not None:
        query = query.where(audience)
    rows = (row for row in _stream(conn, query) if row.tier in ladder.names and row.tier_period_start is not None)
    for row, needed in _needed_by_page(conn, settings, rows, window.now):
        if needed <= 0:
            continue
        zone = row.timezone or zone_default
        rank = ladder.rank(row.tier)
        review, grace_end = row.tier_review_at, row.tier_review_at + q.grace
        key = f"tier_review:{row.tier}:{review.date().isoformat()}"
        yield Occurrence(
            flow=flow, **_member(row), key=key, occurred_at=review - flow.review_notice(), due_at=review - flow.review_notice(),
            reason=f"tier {row.tier} reviewed on {_fmt(review, zone)}; {needed:,} "
                   f"{'spend' if q.measure == 'spend' else 'points'} still needed to keep it",
            data={"kind": "tier_at_risk", "key": key, "tier": row.tier, "review_at": review.isoformat(),
                  "grace_until": grace_end.isoformat(), "needed": _text(needed), "measure": q.measure,
                  "threshold": _text(ladder.levels[rank].threshold),
                  "downgrade_to": ladder.names[rank - 1]})


def tier_downgrades(conn: sa.Connection, flow: FlowSettings, settings: Settings, window: Window,
                    audience: sa.ColumnElement[bool] | None, zone_default: str) -> Iterator[Occurrence]:
    """Downward moves in the tier history; several for one member in the window: the latest wins."""
    t, m = tier_changes_table, members_table
    ladder = TierLadder.from_settings(settings.tiers)
    query = (sa.select(*MEMBER_COLUMNS, m.c.points, m.c.total_spend, t.c.id.label("change_id"),
                       t.c.from_tier, t.c.to_tier, t.c.changed_at, t.c.reason.label("change_reason"))
             .join(m, m.c.id == t.c.member_ref)
             .where(t.c.changed_at >= window.since, t.c.changed_at <= window.now, t.c.from_tier.is_not(None))
             .order_by(t.c.member_ref, t.c.changed_at, t.c.id))
    if audience is not None:
        query = query.where(audience)
    groups: dict[int, list[Any]] = {}
    for row in _stream(conn, query):
        if row.from_tier in ladder.names and row.to_tier in ladder.names \
                and ladder.rank(row.to_tier) < ladder.rank(row.from_tier):
            groups.setdefault(row.id, []).append(row)
    measure = settings.tiers.qualification.measure if settings.tiers.qualification else settings.tiers.basis
    regains = needed_to_regain_each(conn, settings, [(moves[-1].id, moves[-1].from_tier, moves[-1].points,
                                                      moves[-1].total_spend) for moves in groups.values()],
                                    window.now)
    for moves in groups.values():
        latest = moves[-1]
        regain = regains[latest.id]
        for row in moves:
            zone = row.timezone or zone_default
            key = f"tier:{row.change_id}"
            yield Occurrence(
                flow=flow, **_member(row), key=key, occurred_at=row.changed_at,
                due_at=row.changed_at + flow.delay,
                reason=f"moved down from {row.from_tier} to {row.to_tier} on {_fmt(row.changed_at, zone)}",
                data={"kind": "tier_downgrade", "key": key, "old_tier": row.from_tier, "new_tier": row.to_tier,
                      "why": row.change_reason, "to_regain": _text(regain), "measure": measure},
                superseded_by=None if row is latest else f"tier:{latest.change_id}")


def _needed_by_page(conn: sa.Connection, settings: Settings, rows: Iterator[Any],
                    now: datetime) -> Iterator[tuple[Any, Decimal]]:
    """Each row with what the member still needs to keep their tier, a page of members a query."""
    for page in iter(lambda: list(islice(rows, CHUNK)), []):
        needed = needed_to_keep_each(conn, settings, [(row.id, row.tier) for row in page], now)
        for row in page:
            yield row, needed[row.id]


# -- birthdays -----------------------------------------------------------------------------------

def birthdays(conn: sa.Connection, flow: FlowSettings, settings: Settings, window: Window,
              audience: sa.ColumnElement[bool] | None, zone_default: str, dialect: str) -> Iterator[Occurrence]:
    """Local midnight `days_before` each birthday (29 February: 28 February in other years)."""
    m = members_table
    ahead = timedelta(days=flow.days_before)
    first, last = (window.since - timedelta(days=1)).date() + ahead, (window.now + timedelta(days=1)).date() + ahead
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    keys = sorted({d.month * 100 + d.day for d in days} | ({229} if any(
        d.month == 2 and d.day == 28 for d in days) else set()))
    query = sa.select(*MEMBER_COLUMNS, m.c.birthday).where(
        month_day_key(m.c.birthday, dialect).in_(keys), m.c.birthday.is_not(None))
    if audience is not None:
        query = query.where(audience)
    for row in _stream(conn, query.order_by(m.c.id)):
        zone = ZoneInfo(row.timezone or zone_default)
        for year in sorted({first.year, last.year}):
            if year <= row.birthday.year:
                continue
            day = same_date_in(row.birthday, year)
            due = datetime.combine(day - ahead, time(), tzinfo=zone) + flow.delay
            if not window.since <= due <= window.now:
                continue
            age = year - row.birthday.year
            when = "today" if not flow.days_before else f"in {flow.days_before} day(s)"
            yield Occurrence(
                flow=flow, **_member(row), key=f"birthday:{year}", occurred_at=due - flow.delay, due_at=due,
                reason=f"birthday on {day.isoformat()} ({when}, local)",
                data={"kind": "birthday", "key": f"birthday:{year}", "birthday": day.isoformat(),
                      "age": age, "days_before": flow.days_before})


# -- double opt-in -------------------------------------------------------------------------------

def confirmations(conn: sa.Connection, flow: FlowSettings, window: Window,
                  audience: sa.ColumnElement[bool] | None) -> Iterator[Occurrence]:
    """Members waiting to confirm their address (created while `program.double_opt_in` was on,
    not confirmed yet), due when they were created: the email that carries `confirm_url`."""
    m = members_table
    query = (sa.select(*MEMBER_COLUMNS, m.c.unconfirmed_since)
             .where(m.c.unconfirmed_since >= window.since, m.c.unconfirmed_since <= window.now - flow.delay)
             .order_by(m.c.id))
    if audience is not None:
        query = query.where(audience)
    for row in _stream(conn, query):
        waiting = row.unconfirmed_since
        yield Occurrence(flow=flow, **_member(row), key="confirm", occurred_at=waiting,
                         due_at=waiting + flow.delay,
                         reason=f"waiting to confirm their address since {waiting.isoformat(timespec='seconds')}",
                         data={"kind": "confirmation", "key": "confirm"})


# -- rewards -------------------------------------------------------------------------------------

def rewards(conn: sa.Connection, flow: FlowSettings, settings: Settings, window: Window,
            audience: sa.ColumnElement[bool] | None, zone_default: str) -> Iterator[Occurrence]:
    """Each point event that took the balance from below a reward's cost to at least it: a member
    who stays above it hears once; one who falls below and comes back hears again."""
    costs = sorted({r.cost for r in settings.rewards})
    query = point_events_newest_first(window, audience)
    current, balance = None, 0
    found: list[Occurrence] = []
    for row in _stream(conn, query):
        if row.id != current:
            yield from reversed(found)
            found, current, balance = [], row.id, int(row.balance)
        after, before = balance, balance - int(row.points)
        balance = before
        if row.occurred_at > window.now:
            continue
        reached = [c for c in costs if before < c <= after]
        if not reached:
            continue
        newly = [r.name for r in settings.rewards if before < r.cost <= after]
        zone = row.timezone or zone_default
        key = f"reward:{row.event_ref}"
        found.append(Occurrence(
            flow=flow, **_member(row), key=key, occurred_at=row.occurred_at, due_at=row.occurred_at + flow.delay,
            reason=f"{after:,} points on {_fmt(row.occurred_at, zone)} now afford {', '.join(newly)}",
            data={"kind": "reward_available", "key": key, "balance": after, "newly": newly,
                  **settings.reward_standing(after)}))
    yield from reversed(found)


# -- statements ----------------------------------------------------------------------------------

def statement_period(now: datetime, zone: str) -> tuple[datetime, datetime, str]:
    """The calendar month before `now` in the program's zone: its start, its end, `YYYY-MM`."""
    tz = ZoneInfo(zone)
    local = now.astimezone(tz)
    end_day = date(local.year, local.month, 1)
    start_day = (end_day - timedelta(days=1)).replace(day=1)
    return (datetime.combine(start_day, time(), tzinfo=tz), datetime.combine(end_day, time(), tzinfo=tz),
            f"{start_day.year:04d}-{start_day.month:02d}")


def statements(conn: sa.Connection, flow: FlowSettings, settings: Settings, window: Window,
               audience: sa.ColumnElement[bool] | None, zone_default: str) -> Iterator[Occurrence]:
    """One statement per member for the month before `now`: points earned, redeemed and expired
    in it, the points that will expire in the month after it, and tier progress (with
    tiers.qualification, the period's measure the review moves members up on, not the balance). Members with no activity in it and no balance are skipped, saying so."""
    e, m = events_table, members_table
    start, end, month = statement_period(window.now, settings.program.default_timezone)
    due = end + flow.delay
    if not window.since <= due <= window.now:
        return
    # One pass over the events from the period's start: the period's figures, and what events
    # after `now` added (the balance and spend then are today's less those, as for milestones).
    within = e.c.occurred_at < end
    later = e.c.occurred_at > window.now

    def total(condition: sa.ColumnElement[bool], value: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        return sa.func.coalesce(sa.func.sum(sa.case((condition, value), else_=0)), 0)

    activity = (sa.select(
        e.c.member_ref,
        total(sa.and_(within, e.c.points > 0), e.c.points).label("earned"),
        total(sa.and_(within, e.c.points < 0, e.c.type != EXPIRED_TYPE), -e.c.points).label("redeemed"),
        total(sa.and_(within, e.c.points < 0, e.c.type == EXPIRED_TYPE), -e.c.points).label("expired"),
        total(within, sa.literal(1)).label("events"),
        total(sa.and_(later, e.c.points.is_not(None)), e.c.points).label("points_after"),
        total(sa.and_(later, e.c.type == "purchase", e.c.amount.is_not(None)), e.c.amount).label("spend_after"))
        .where(e.c.occurred_at >= start)
        .group_by(e.c.member_ref).subquery())
    # what will expire in the month the statement is read (program.points.expiry; no lots without it)
    until = add_months(end, 1)
    lots = point_lots_table
    expiring = (sa.select(lots.c.member_ref, sa.func.sum(lots.c.remaining).label("expiring"))
                .where(lots.c.expires_at >= end, lots.c.expires_at < until)
                .group_by(lots.c.member_ref).subquery())
    query = (sa.select(*MEMBER_COLUMNS, m.c.points, m.c.tier, m.c.total_spend, activity.c.earned,
                       activity.c.redeemed, activity.c.expired, activity.c.events, activity.c.points_after,
                       activity.c.spend_after, expiring.c.expiring)
             .outerjoin(activity, activity.c.member_ref == m.c.id)
             .outerjoin(expiring, expiring.c.member_ref == m.c.id)
             .where(sa.or_(m.c.joined_at.is_(None), m.c.joined_at < end))
             .order_by(m.c.id))
    if audience is not None:
        query = query.where(audience)
    ladder = TierLadder.from_settings(settings.tiers)
    q = settings.tiers.qualification
    measure = q.measure if q is not None else ladder.basis
    for row, period_measure in _standing_by_page(conn, settings, _stream(conn, query), window.now):
        key = f"statement:{month}"
        events = int(row.events or 0)
        balance = int(row.points) - int(row.points_after or 0)
        skip = None if events or balance else "no activity in the period and no balance"
        rank = ladder.rank(row.tier) if row.tier in ladder.names else 0
        nxt = ladder.levels[rank + 1] if rank + 1 < len(ladder.levels) else None
        if period_measure is not None:  # tiers kept by a period's measure: as the review moves up
            standing = period_measure
        elif ladder.basis == "points":
            standing = Decimal(balance)
        else:
            standing = Decimal(row.total_spend) - Decimal(row.spend_after or 0)
        yield Occurrence(
            flow=flow, **_member(row), key=key, occurred_at=end, due_at=due,
            reason=f"statement for {month}: {events} event(s), balance {balance:,} points",
            data={"kind": "statement", "key": key, "month": month, "period_start": start.isoformat(),
                  "period_end": end.isoformat(), "earned": int(row.earned or 0),
                  "redeemed": int(row.redeemed or 0), "expired": int(row.expired or 0),
                  "expiring": int(row.expiring or 0), "expiring_until": until.isoformat(),
                  "balance": balance, "tier": row.tier, "measure": measure,
                  "next_tier": None if nxt is None else nxt.name,
                  "to_next_tier": None if nxt is None else _text(max(nxt.threshold - standing, Decimal(0)))},
            skip=skip)


def _standing_by_page(conn: sa.Connection, settings: Settings, rows: Iterator[Any],
                      now: datetime) -> Iterator[tuple[Any, Decimal | None]]:
    """Each row with the member's measure over the period ending `now` when tiers are kept by one
    (tiers.qualification: what the review moves members up on), a page of members a query; else
    None (the tier follows the points or spend held)."""
    q = settings.tiers.qualification
    if q is None:
        yield from ((row, None) for row in rows)
        return
    start = period_before(now, q.period)
    for page in iter(lambda: list(islice(rows, CHUNK)), []):
        measures = measure_between(conn, q, [row.id for row in page], start, now)
        for row in page:
            yield row, measures[row.id]


def absent(conn: sa.Connection, flow: FlowSettings, settings: Settings, window: Window, member_ref: int,
           zone_default: str) -> str:
    """Why one of these triggers fired no occurrence for this member in `window`."""
    m = members_table
    member = conn.execute(sa.select(m.c.tier, m.c.birthday, m.c.points, m.c.tier_review_at, m.c.tier_period_start,
                                    m.c.timezone, m.c.joined_at).where(m.c.id == member_ref)).one()
    zone = member.timezone or zone_default
    span = f"the flow's window, {_fmt(window.since, zone)} to {_fmt(window.now, zone)}"
    if flow.trigger == "tier_at_risk":
        if member.tier_review_at is None:
            return f"no tier review (tier {member.tier})"
        due = member.tier_review_at - flow.review_notice()
        if not window.since <= due <= window.now:
            return (f"tier {member.tier} reviewed on {_fmt(member.tier_review_at, zone)}: the reminder "
                    f"is due {_fmt(due, zone)}, outside {span}")
        return f"tier {member.tier} already re-qualified for the review on {_fmt(member.tier_review_at, zone)}"
    if flow.trigger == "tier_downgrade":
        return f"no downward tier change in {span} (current tier {member.tier})"
    if flow.trigger == "birthday":
        if member.birthday is None:
            return "no birthday"
        return f"birthday {member.birthday.isoformat()}: no birthday email due in {span}"
    if flow.trigger == "reward_available":
        standing = settings.reward_standing(int(member.points))
        return (f"no points event in {span} took the balance to a reward's cost from below it "
                f"({int(member.points):,} points; affordable: {', '.join(standing['affordable']) or 'none'})")
    start, end, month = statement_period(window.now, settings.program.default_timezone)
    if member.joined_at is not None and member.joined_at >= end:
        return f"not a member before the end of {month}"
    said = f"the statement for {month} was due {_fmt(end + flow.delay, zone)}, outside {span}"
    if flow.schedule is None:
        return said
    trigger = flow_schedules({flow.name: flow.schedule}, settings.program.default_timezone)[flow.name]
    upcoming = trigger.get_next_fire_time(None, window.now)
    if upcoming is None:
        return said
    _s, _e, next_month = statement_period(upcoming, settings.program.default_timezone)
    return f"{said}; the next run of its schedule ('{flow.schedule}') is {_fmt(upcoming, zone)} (statement for {next_month})"



"""Occurrences: the moments a flow's trigger fired for a member, found in the database.

Each trigger is one set-based query over a bounded window (the flow's delay, lateness and the
sending lookback before `now`); Python only walks the rows the query returns. An occurrence is
identified by (member, flow, key), the key the send ledger's unique constraint is built on:

    welcome         welcome                   joined_at (+ delay)
    milestone       points:5000               the event that crossed 5,000 points
                    anniversary:2026          local midnight of the anniversary (29 Feb -> 28 Feb)
    tier_upgrade    tier:<tier change id>     each upward move in the tier history
    reengagement    segment:<name>:<n>        the member is in the segment now (n-th time)
    event           event:<event id>          each event of the flow's type that meets `where:`
    campaign        campaign                  a scheduled campaign's audience (campaigns/)
    points_expiring points_expiring:<date>:<offset>
                                              `before:` each local date points expire (30days, 7days)

The member-lifecycle triggers (tier_at_risk, tier_downgrade, birthday, reward_available,
statement) are in member_triggers.py.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import groupby
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from ..campaigns.spec import SEND_LIMIT, Campaign
from ..config import FlowSettings, Settings
from ..durations import format_span
from ..instants import local_text
from ..models import events_table, journey_steps_table, members_table, point_lots_table, sends_table, tier_changes_table
from ..points.lots import reminder_before
from ..segments.compiler import month_day_key
from ..tiers import TierLadder

MEMBER_COLUMNS = (members_table.c.id, members_table.c.member_id, members_table.c.email,
                  members_table.c.timezone, members_table.c.subscribed, members_table.c.unsubscribed_at)
CAMPAIGN_KEY = "campaign"
ACTIVE_STATES = ("planned", "sending", "sent", "retry", "unknown", "failed")


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ is several times slower
class Occurrence:
    """A trigger that fired: which member, which flow, which moment, and why."""

    flow: FlowSettings
    member_ref: int
    member_id: str
    email: str
    timezone: str | None
    subscribed: bool
    key: str
    occurred_at: datetime
    due_at: datetime
    reason: str
    data: dict[str, Any] = field(default_factory=dict)
    superseded_by: str | None = None  # another occurrence of the same moment wins
    skip: str | None = None  # the trigger fired but says not to send, and why (recorded as skipped)
    template: str = ""                # a journey's send step: its template (else the flow's)


@dataclass(frozen=True)
class Window:
    """What a flow looks at: occurrences due between `since` and `now`."""

    now: datetime
    since: datetime

    @classmethod
    def for_flow(cls, flow: FlowSettings, settings: Settings, now: datetime) -> Window:
        return cls(now, now - flow.lateness - settings.sending.lookback - flow.delay)


STREAM_ROWS = 500


def _stream(conn: sa.Connection, query: sa.Select[Any]) -> sa.CursorResult[Any]:
    """Rows in batches from a server-side cursor on PostgreSQL (SQLite's cursor is lazy anyway),
    so a trigger that fires for many members never holds them all."""
    if conn.dialect.name == "postgresql":
        query = query.execution_options(stream_results=True, yield_per=STREAM_ROWS)
    return conn.execute(query)


def _member(row: Any) -> dict[str, Any]:
    return dict(member_ref=row.id, member_id=row.member_id, email=row.email,
                timezone=row.timezone, subscribed=bool(row.subscribed))


@lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _fmt(moment: datetime, zone: str) -> str:
    """`2026-11-24 08:00 +07`: the member's wall clock, with its zone (instants.local_text)."""
    return local_text(moment, _zone(zone))


def welcome(conn: sa.Connection, flow: FlowSettings, settings: Settings, window: Window,
            audience: sa.ColumnElement[bool] | None, zone_default: str) -> Iterator[Occurrence]:
    m = members_table
    query = sa.select(*MEMBER_COLUMNS, m.c.joined_at).where(
        m.c.joined_at >= window.since, m.c.joined_at <= window.now)
    if audience is not None:
        query = query.where(audience)
    for row in _stream(conn, query.order_by(m.c.id)):
        zone = row.timezone or zone_default
        yield Occurrence(flow=flow, **_member(row), key="welcome", occurred_at=row.joined_at,
                         due_at=row.joined_at + flow.delay,
                         reason=f"joined on {_fmt(row.joined_at, zone)}",
                         data={"kind": "signup", "key": "welcome"})


def point_events_newest_first(window: Window, audience: sa.ColumnElement[bool] | None) -> sa.Select[Any]:
    """The point events in the window of members with one, each with the member and today's
    balance, member by member and newest first: walking back from the balance gives the balance
    before and after each event without reading older history."""
    e, m = events_table, members_table
    recent = sa.select(e.c.member_ref).where(e.c.occurred_at >= window.since, e.c.points.is_not(None),
                                             e.c.points != 0)
    query = (sa.select(*MEMBER_COLUMNS, m.c.points.label("balance"), e.c.id.label("event_ref"),
                       e.c.occurred_at, e.c.points)
             .join(m, m.c.id == e.c.member_ref)
             .where(e.c.member_ref.in_(recent), e.c.occurred_at >= window.since,
                    e.c.points.is_not(None), e.c.points != 0)
             .order_by(e.c.member_ref, e.c.occurred_at.desc(), e.c.id.desc()))
    return query if audience is None else query.where(audience)


def points_milestones(conn: sa.Connection, flow: FlowSettings, settings: Settings, window: Window,
                      audience: sa.ColumnElement[bool] | None, zone_default: str) -> Iterator[Occurrence]:
    """Walk each member's point events newest first from today's balance back, so the balance
    before and after every event is known without reading older history."""
    query = point_events_newest_first(window, audience)
    current, balance = None, 0
    for row in _stream(conn, query):
        if row.id != current:
            current, balance = row.id, int(row.balance)
        after, before = balance, balance - int(row.points)
        balance = before
        if row.occurred_at > window.now:
            continue  # later than `now`: only its effect on the balance counts
        crossed = [t for t in flow.thresholds if before < t <= after]
        zone = row.timezone or zone_default
        for threshold in crossed:
            winner = crossed[-1] if flow.crossings == "highest" and threshold != crossed[-1] else None
            yield Occurrence(
                flow=flow, **_member(row), key=f"points:{threshold}", occurred_at=row.occurred_at,
                due_at=row.occurred_at + flow.delay,
                reason=f"crossed {threshold:,} points on {_fmt(row.occurred_at, zone)}",
                data={"kind": "points", "key": f"points:{threshold}", "threshold": threshold},
                superseded_by=None if winner is None else f"points:{winner}")


def same_date_in(day: date, year: int) -> date:
    """`day`'s month and day in `year`: an anniversary or a birthday (29 February: 28 February
    in other years)."""
    if day.month == 2 and day.day == 29 and not calendar.isleap(year):
        return date(year, 2, 28)
    return date(year, day.month, day.day)


def anniversaries(conn: sa.Connection, flow: FlowSettings, settings: Settings, window: Window,
                  audience: sa.ColumnElement[bool] | None, zone_default: str,
                  dialect: str) -> Iterator[Occurrence]:
    m = members_table
    first, last = (window.since - timedelta(days=1)).date(), (window.now + timedelta(days=1)).date()
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    keys = sorted({d.month * 100 + d.day for d in days} | ({229} if any(
        d.month == 2 and d.day == 28 for d in days) else set()))
    query = sa.select(*MEMBER_COLUMNS, m.c.joined_on).where(
        month_day_key(m.c.joined_on, dialect).in_(keys), m.c.joined_on.is_not(None))
    if audience is not None:
        query = query.where(audience)
    for row in _stream(conn, query.order_by(m.c.id)):
        zone_name = row.timezone or zone_default
        zone = ZoneInfo(zone_name)
        for year in sorted({first.year, last.year}):
            if year <= row.joined_on.year:
                continue
            day = same_date_in(row.joined_on, year)
            due = datetime.combine(day, time(), tzinfo=zone) + flow.delay
            if not window.since <= due <= window.now:
                continue
            years = year - row.joined_on.year
            yield Occurrence(
                flow=flow, **_member(row), key=f"anniversary:{year}", occurred_at=due - flow.delay,
                due_at=due, reason=f"{years}-year membership anniversary on {day.isoformat()}",
                data={"kind": "anniversary", "key": f"anniversary:{year}", "years": years})


def tier_upgrades(conn: sa.Connection, flow: FlowSettings, settings: Settings, window: Window,
                  audience: sa.ColumnElement[bool] | None, zone_default: str) -> Iterator[Occurrence]:
    """Upward moves only. Several upgrades of one member in the window: the latest wins and the
    others are superseded (one email about the tier they reached, naming where they started)."""
    t, m = tier_changes_table, members_table
    ladder = TierLadder.from_settings(settings.tiers)
    query = (sa.select(*MEMBER_COLUMNS, t.c.id.label("change_id"), t.c.from_tier, t.c.to_tier,
                       t.c.changed_at)
             .join(m, m.c.id == t.c.member_ref)
             .where(t.c.changed_at >= window.since, t.c.changed_at <= window.now,
                    t.c.from_tier.is_not(None))
             .order_by(t.c.member_ref, t.c.changed_at, t.c.id))
    if audience is not None:
        query = query.where(audience)
    pending: list[Any] = []

    def flush() -> Iterator[Occurrence]:
        if not pending:
            return
        latest, start = pending[-1], pending[0]
        for row in pending:
            zone = row.timezone or zone_default
            winner = row is latest
            yield Occurrence(
                flow=flow, **_member(row), key=f"tier:{row.change_id}", occurred_at=row.changed_at,
                due_at=row.changed_at + flow.delay,
                reason=f"moved up from {row.from_tier} to {row.to_tier} on {_fmt(row.changed_at, zone)}",
                data={"kind": "tier_upgrade", "key": f"tier:{row.change_id}",
                      "old_tier": start.from_tier if winner else row.from_tier, "new_tier": row.to_tier},
                superseded_by=None if winner else f"tier:{latest.change_id}")
        pending.clear()

    current = None
    for row in _stream(conn, query):
        if row.from_tier not in ladder.names or row.to_tier not in ladder.names:
            continue
        if ladder.rank(row.to_tier) <= ladder.rank(row.from_tier):
            continue
        if row.id != current:
            yield from flush()
            current = row.id
        pending.append(row)
    yield from flush()


def points_expiring(conn: sa.Connection, flow: FlowSettings, settings: Settings, window: Window,
                    audience: sa.ColumnElement[bool] | None, zone_default: str) -> Iterator[Occurrence]:
    """A reminder `before:` each date (in the member's time zone) on which points the member
    holds will expire, for the points expiring that date. Points already expired, or redeemed,
    give no reminder; when several reminders of one date are due at once (after downtime, or
    lots earned close to their expiry), the nearest wins and the others are superseded."""
    lots, m = point_lots_table, members_table
    offsets = sorted(flow.before, key=lambda offset: offset.after(window.now))  # nearest first
    horizon = max(offset.after(window.now) for offset in offsets) + timedelta(days=3)  # month ends
    query = (sa.select(*MEMBER_COLUMNS, lots.c.expires_at, lots.c.remaining)
             .join(m, m.c.id == lots.c.member_ref)
             .where(lots.c.expires_at > window.now, lots.c.expires_at <= horizon)
             .order_by(lots.c.member_ref, lots.c.expires_at))
    if audience is not None:
        query = query.where(audience)
    rows = _stream(conn, query)
    for _, group in groupby(rows, key=lambda row: row.id):
        dates: dict[date, list[Any]] = {}
        for row in group:
            zone = row.timezone or zone_default
            dates.setdefault(row.expires_at.astimezone(_zone(zone)).date(), []).append(row)
        for day, held in dates.items():
            first = held[0]
            expires_at = first.expires_at
            amount = sum(int(row.remaining) for row in held)
            zone = first.timezone or zone_default
            due = [(offset, reminder_before(expires_at, offset, _zone(zone))) for offset in offsets]
            due = [(offset, at) for offset, at in due if window.since <= at + flow.delay <= window.now]
            nearest = None
            for offset, at in due:  # nearest first: it wins over further ones due at the same time
                key = f"points_expiring:{day.isoformat()}:{offset.amount}{offset.unit}s"
                yield Occurrence(
                    flow=flow, **_member(first), key=key, occurred_at=at, due_at=at + flow.delay,
                    reason=f"{amount:,} points expire on {_fmt(expires_at, zone)} ({offset} before)",
                    data={"kind": "points_expiring", "key": key, "points": amount,
                          "expires_at": expires_at.isoformat(), "expires_on": day.isoformat(),
                          "before": str(offset)},
                    superseded_by=nearest)
                nearest = nearest or key


def event_view(row: Any) -> dict[str, Any]:
    """An event as the ledger keeps it for the template (`event.amount`, `event.items`): JSON
    values only (the amount as text, the time in ISO form)."""
    properties = dict(row.properties or {})
    return {"id": row.event_id or str(row.event_ref), "type": row.type,
            "occurred_at": row.occurred_at.isoformat(),
            "amount": None if row.amount is None else str(row.amount), "currency": row.currency,
            "points": row.points, "items": properties.get("items") or [], "properties": properties}


def events(conn: sa.Connection, flow: FlowSettings, settings: Settings, window: Window,
           audience: sa.ColumnElement[bool] | None, zone_default: str,
           where: list[sa.ColumnElement[bool]]) -> Iterator[Occurrence]:
    """Each event of the flow's type in the window that meets its `where:` conditions. With a
    `reentry:` in the flow, at most `reentry.max` of them per member ever, `reentry.cooldown`
    apart (counting what the ledger holds); the others are not occurrences."""
    e, m, s = events_table, members_table, sends_table
    limited = "reentry" in flow.model_fields_set
    columns: list[Any] = [*MEMBER_COLUMNS, e.c.id.label("event_ref"), e.c.event_id, e.c.type, e.c.occurred_at,
                          e.c.amount, e.c.currency, e.c.points, e.c.properties]
    query = (sa.select(*columns).join(m, m.c.id == e.c.member_ref)
             .where(e.c.type == flow.event, e.c.occurred_at >= window.since, e.c.occurred_at <= window.now,
                    *where)
             .order_by(e.c.member_ref, e.c.occurred_at, e.c.id))
    if limited:
        history = (sa.select(s.c.member_ref, sa.func.count().label("times"),
                             sa.func.max(s.c.scheduled_for).label("last"))
                   .where(s.c.flow == flow.name, s.c.state.in_(ACTIVE_STATES + ("held_out",)),
                          s.c.created_at <= window.now)
                   .group_by(s.c.member_ref).subquery())
        recorded = sa.exists().where(s.c.member_ref == e.c.member_ref, s.c.flow == flow.name,
                                     s.c.occurrence_key == sa.literal("event:") + sa.cast(e.c.id, sa.String),
                                     s.c.created_at <= window.now)
        query = (query.add_columns(history.c.times, history.c.last, recorded.label("recorded"))
                 .outerjoin(history, history.c.member_ref == e.c.member_ref))
    if audience is not None:
        query = query.where(audience)
    current, times, last = None, 0, None
    for row in _stream(conn, query):
        due = row.occurred_at + flow.delay
        if limited and not row.recorded:
            if row.id != current:
                current, times, last = row.id, int(row.times or 0), row.last
            if times >= flow.reentry.max or (last is not None and last + flow.reentry.cooldown > due):
                continue
            times, last = times + 1, due
        zone = row.timezone or zone_default
        key = f"event:{row.event_ref}"
        yield Occurrence(flow=flow, **_member(row), key=key, occurred_at=row.occurred_at, due_at=due,
                         reason=f"{row.type} event {row.event_id or row.event_ref} on {_fmt(row.occurred_at, zone)}",
                         data={"kind": "event", "key": key, "event": event_view(row)})


def segment_entries(conn: sa.Connection, flow: FlowSettings, settings: Settings, window: Window,
                    membership: sa.ColumnElement[bool], zone_default: str) -> Iterator[Occurrence]:
    """Members in the segment now. The n-th occurrence is allowed after n-1 earlier ones, at
    most `reentry.max` in all and `reentry.cooldown` apart; the rest are not occurrences."""
    m, s, j = members_table, sends_table, journey_steps_table
    if flow.is_journey:  # a journey's entries are its instances; the cooldown runs from its last step
        history = (sa.select(j.c.member_ref, sa.func.count(sa.distinct(j.c.instance)).label("times"),
                             sa.func.max(j.c.reached_at).label("last"))
                   .where(j.c.flow == flow.name, j.c.created_at <= window.now)
                   .group_by(j.c.member_ref).subquery())
    else:
        history = (sa.select(s.c.member_ref, sa.func.count().label("times"),
                             sa.func.max(s.c.scheduled_for).label("last"))
                   .where(s.c.flow == flow.name, s.c.state.in_(ACTIVE_STATES + ("held_out",)),
                          s.c.created_at <= window.now)
                   .group_by(s.c.member_ref).subquery())
    query = (sa.select(*MEMBER_COLUMNS, history.c.times, history.c.last)
             .outerjoin(history, history.c.member_ref == m.c.id)
             .where(membership).order_by(m.c.id))
    for row in _stream(conn, query):
        times = int(row.times or 0)
        if times >= flow.reentry.max:
            continue
        if row.last is not None and row.last + flow.reentry.cooldown > window.now:
            continue
        key = f"segment:{flow.segment}:{times + 1}"
        yield Occurrence(
            flow=flow, **_member(row), key=key, occurred_at=window.now, due_at=window.now,
            reason=f"in segment {flow.segment}" + (f" (entry {times + 1} of at most {flow.reentry.max})"
                                                   if flow.reentry.max > 1 else ""),
            data={"kind": "segment_entry", "key": key, "segment": flow.segment, "entry": times + 1})


def _entries(conn: sa.Connection, flow: FlowSettings, now: datetime, member_ref: int) -> tuple[int, datetime | None]:
    """How many times a segment flow has entered a member (ledger rows recorded by `now`), and the
    latest."""
    s = sends_table
    times, last = conn.execute(
        sa.select(sa.func.count(), sa.func.max(s.c.scheduled_for))
        .where(s.c.member_ref == member_ref, s.c.flow == flow.name,
               s.c.state.in_(ACTIVE_STATES + ("held_out",)), s.c.created_at <= now)).one()
    return int(times or 0), last


def absent(conn: sa.Connection, flow: FlowSettings, window: Window, member_ref: int,
           zone_default: str) -> str:
    """Why the flow's trigger fired no occurrence for this member in `window` (the member is in
    the flow's segment, if it has one): what the trigger looked for, and what the member has."""
    m, e = members_table, events_table
    member = conn.execute(sa.select(m.c.joined_at, m.c.joined_on, m.c.timezone, m.c.points, m.c.tier)
                          .where(m.c.id == member_ref)).one()
    zone = member.timezone or zone_default
    span = f"the flow's window, {_fmt(window.since, zone)} to {_fmt(window.now, zone)}"
    if flow.trigger == "welcome":
        if member.joined_at is None:
            return "no join date"
        return f"joined {_fmt(member.joined_at, zone)}, outside {span}"
    if flow.trigger == "milestone":
        found = []
        if flow.thresholds:
            def points(*where: sa.ColumnElement[bool]) -> int:
                return int(conn.execute(sa.select(sa.func.coalesce(sa.func.sum(e.c.points), 0))
                                        .where(e.c.member_ref == member_ref, *where)).scalar_one())
            at_end = int(member.points) - points(e.c.occurred_at > window.now)
            at_start = at_end - points(e.c.occurred_at >= window.since, e.c.occurred_at <= window.now)
            found.append(f"no points threshold ({', '.join(f'{t:,}' for t in flow.thresholds)}) crossed "
                         f"({at_start:,} points at its start, {at_end:,} at its end)")
        if flow.anniversaries:
            found.append("no membership anniversary" + (
                f" (joined on {member.joined_on.isoformat()})" if member.joined_on else " (no join date)"))
        return f"in {span}: " + "; ".join(found)
    if flow.trigger == "tier_upgrade":
        return f"no upward tier change in {span} (current tier {member.tier})"
    if flow.trigger == "points_expiring":
        lots = point_lots_table
        nearest = conn.execute(sa.select(sa.func.min(lots.c.expires_at)).where(
            lots.c.member_ref == member_ref, lots.c.expires_at > window.now)).scalar()
        if nearest is None:
            return f"no points that will expire (balance {member.points:,})"
        reminders = ", ".join(str(offset) for offset in flow.before)
        return (f"the next points expire on {_fmt(nearest, zone)}; no reminder ({reminders} before) "
                f"falls in {span}")
    if flow.trigger == "event":
        seen = int(conn.execute(sa.select(sa.func.count()).where(
            e.c.member_ref == member_ref, e.c.type == flow.event, e.c.occurred_at >= window.since,
            e.c.occurred_at <= window.now)).scalar_one())
        if not seen:
            return f"no {flow.event} event in {span}"
        if "reentry" in flow.model_fields_set:
            times, last = _entries(conn, flow, window.now, member_ref)
            if times >= flow.reentry.max:
                return (f"{seen} {flow.event} event(s) in {span}, but already sent {times} time(s): the "
                        f"flow's reentry max is {flow.reentry.max}")
            if last is not None and last + flow.reentry.cooldown > window.now:
                return (f"{seen} {flow.event} event(s) in {span}, but in the reentry cooldown: last one "
                        f"{_fmt(last, zone)}")
        return f"{seen} {flow.event} event(s) in {span}, none meeting the flow's where: conditions"
    times, last = _entries(conn, flow, window.now, member_ref)
    if times >= flow.reentry.max:
        return (f"in segment {flow.segment}, but already entered {times} time(s): the flow's reentry "
                f"max is {flow.reentry.max}")
    if last is not None and last + flow.reentry.cooldown > window.now:
        return (f"in segment {flow.segment}, but in the reentry cooldown: last entry "
                f"{_fmt(last, zone)}, next one possible from {_fmt(last + flow.reentry.cooldown, zone)}")
    return f"in segment {flow.segment}, yet no entry was found"  # cannot happen: segment_entries yields it


def campaign(conn: sa.Connection, flow: FlowSettings, spec: Campaign, window: Window,
             audience: sa.ColumnElement[bool] | None, zone_default: str,
             members: list[int] | None = None) -> Iterator[Occurrence]:
    """Every member (of `members`, when given) of a scheduled campaign's audience the ledger does not hold yet, each due at
    the campaign's time (in the member's own zone with `local_time`), later by the throttle: the
    n-th member of the audience (from 0, in member order) is due `n // max` periods later."""
    m, s = members_table, sends_table
    throttle = spec.throttle
    rank = sa.func.row_number().over(order_by=m.c.id) - 1 if throttle is not None else sa.literal(0)
    ranked = sa.select(*MEMBER_COLUMNS, rank.label("rank"))  # a throttle counts the whole audience
    if audience is not None:
        ranked = ranked.where(audience)
    inner = ranked.subquery()
    recorded = sa.exists().where(s.c.member_ref == inner.c.id, s.c.flow == flow.name,
                                 s.c.occurrence_key == CAMPAIGN_KEY, s.c.created_at <= window.now)
    query = sa.select(inner).where(~recorded).order_by(inner.c.id)
    if members is not None:
        query = query.where(inner.c.id.in_(members))
    for row in _stream(conn, query):
        zone = row.timezone or zone_default
        due = spec.send_time(zone if spec.local_time else zone_default)
        when = _fmt(due, zone)
        skip = None
        if throttle is not None and row.rank >= throttle.max:
            later = spec.throttled(due, row.rank)
            if later is None:
                skip = (f"throttled beyond {SEND_LIMIT:%Y-%m-%d}: member {row.rank + 1} of the audience, "
                        f"{throttle.max} per {format_span(throttle.per)}")
            else:
                due = later
                when += f", throttled to {_fmt(due, zone)}"
        yield Occurrence(flow=flow, **_member(row), key=CAMPAIGN_KEY, occurred_at=due, due_at=due,
                         reason=f"campaign {flow.name} at {when}", skip=skip,
                         data={"kind": "campaign", "key": CAMPAIGN_KEY, "campaign": flow.name,
                               "topic": spec.topic})


def audience_size(conn: sa.Connection, audience: sa.ColumnElement[bool] | None) -> int:
    query = sa.select(sa.func.count()).select_from(members_table)
    return int(conn.execute(query if audience is None else query.where(audience)).scalar_one())

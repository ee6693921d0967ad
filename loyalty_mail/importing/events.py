"""Event import: what members did, applied to their aggregates, points and tiers.

Per member, the file's events are applied in time order on top of the member's current state:
- `purchase` (needs `amount`): purchase_count + 1, total_spend + amount, last_purchase_at, and
  points: the row's `points` if given, else floor(amount x program.points_per_currency_unit);
- `points_redeemed` (needs `points` > 0): subtracts points; redeeming more than the balance is an
  error for that row; `points_expired` (recorded by the expiry job, or imported) likewise;
- `signup`: sets joined_at when the member has none;
- any other type (`points_earned`, `review_written`, ...): adds its `points`, if any.
Every tier change is recorded with the causing event's time. With program.points.expiry, the
point lots of every member the import touched are rebuilt from all of their events. An `event_id` column makes
re-importing a file safe: events already imported are skipped, not doubled.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import ROUND_FLOOR, Decimal
from functools import lru_cache, partial
from itertools import groupby
from operator import itemgetter
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from ..config import Settings
from ..models import MONEY, UTCDateTime, events_table, members_table, tier_changes_table
from ..tiers import TierLadder
from .. import bulk, touched
from ..points.store import rebuild_lots
from . import fields
from .members import local_date
from .batch import (
    BATCH_ROWS,
    ImportSummary,
    Rejects,
    create_staging,
    delete_rows,
    drop_staging,
    index_staging,
    insert_in_batches,
    later_duplicates,
    validated_rows,
)
from .readers import PROBLEMS, SourceRow

EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
NEEDS_POINTS = {"points_redeemed", "points_earned", "points_expired"}
SUBTRACTS = ("points_redeemed", "points_expired")
MEMBERS_PER_PAGE = 2000
MAX_POINTS = 2**31 - 1  # a balance, as the points columns hold it
MAX_SPEND = Decimal("1e16")  # a total spend is below this, as the money columns hold it

_metadata = sa.MetaData()
STAGING = sa.Table(
    "lm_staging_events", _metadata,
    sa.Column("row_no", sa.Integer, nullable=False),
    sa.Column("event_id", sa.String(128)),
    sa.Column("member_id", sa.String(64), nullable=False),
    sa.Column("member_ref", sa.Integer),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("occurred_at", UTCDateTime(), nullable=False),
    sa.Column("amount", MONEY),
    sa.Column("currency", sa.String(3)),
    sa.Column("points", sa.Integer),
    sa.Column("properties", sa.JSON().with_variant(postgresql.JSONB(), "postgresql")),
    prefixes=["TEMPORARY"],
)
STAGING_COLUMNS = [column.name for column in STAGING.columns]


class EventRowValidator:
    """Turns one source row into a staging row, or into a list of (column, problem)."""

    def __init__(self, settings: Settings):
        self.currency = settings.program.currency
        self.parsers: dict[str, Callable[[Any], Any]] = {
            "event_id": partial(fields.text, max_length=128),
            "member_id": fields.member_id,
            "type": self._type,
            "occurred_at": partial(fields.instant, default_zone=ZoneInfo(settings.program.default_timezone)),
            "amount": fields.money,
            "currency": self._currency,
            "points": partial(fields.whole_number, minimum=0, maximum=2**31 - 1),
        }

    def _type(self, value: Any) -> str:
        value = str(value).strip()
        if not EVENT_TYPE.match(value):
            raise ValueError(f"'{value}' is not an event type (lowercase letters, digits and _)")
        return value

    def _currency(self, value: Any) -> str:
        value = str(value).strip().upper()
        if value != self.currency:
            raise ValueError(f"'{value}' is not the program currency {self.currency}; convert amounts "
                             "before importing")
        return value

    def __call__(self, row_no: int, row: dict[str, Any]) -> tuple[list[Any] | None, list[tuple[str, str]]]:
        """A staging row (a list in STAGING's column order), or the row's problems."""
        if PROBLEMS in row:
            return None, list(row[PROBLEMS])
        staged: dict[str, Any] = {"row_no": row_no, "member_ref": None, **dict.fromkeys(self.parsers)}
        properties: dict[str, Any] = {}
        problems: list[tuple[str, str]] = []
        for key, value in row.items():
            parser = self.parsers.get(key)
            if parser is None:
                if key == "properties" and isinstance(value, dict):
                    properties.update(value)
                elif not fields.is_blank(value):
                    properties[key] = fields.custom_value(value)
                continue
            if fields.is_blank(value):
                continue
            try:
                staged[key] = parser(value)
            except ValueError as exc:
                problems.append((key, str(exc)))
        bad = {column for column, _ in problems}
        for key in ("member_id", "type", "occurred_at"):
            if staged[key] is None and key not in bad:
                problems.append((key, "is required"))
        if staged["type"] == "purchase" and staged["amount"] is None and "amount" not in bad:
            problems.append(("amount", "is required for a purchase"))
        if staged["type"] in NEEDS_POINTS and not staged["points"] and "points" not in bad:
            problems.append(("points", f"a {staged['type']} event needs points above 0"))
        if staged["amount"] is not None and staged["currency"] is None:
            staged["currency"] = self.currency
        staged["properties"] = properties
        if problems:
            return None, problems
        return [staged[column] for column in STAGING_COLUMNS], problems


@dataclass
class _MemberState:
    ref: int
    member_id: str
    points: int
    tier: str
    total_spend: Decimal
    purchase_count: int
    last_purchase_at: datetime | None
    joined_at: datetime | None
    joined_on: date | None
    timezone: str
    period_start: datetime | None  # the tier period's measures (models.Member.period_spend, ...)
    period_spend: Decimal
    period_points_earned: int
    period_last_event_at: datetime | None
    changed: bool = False
    read: tuple[str, datetime | None, datetime | None] = field(init=False)  # see Applier._member_updates

    def __post_init__(self) -> None:
        self.read = (self.tier, self.last_purchase_at, self.joined_at)


def import_events(
    connection: sa.Connection,
    settings: Settings,
    rows: Iterable[SourceRow],
    *,
    source: str,
    now: datetime,
    skip_invalid: bool = False,
) -> tuple[ImportSummary, Rejects]:
    """Import event rows inside the caller's transaction (see import_members for the contract).
    The expiry job records its events with `record_expiries` instead."""
    summary = ImportSummary(source=source)
    rejects = Rejects()
    validate = EventRowValidator(settings)
    create_staging(connection, STAGING)

    insert_in_batches(connection, STAGING, validated_rows(rows, validate, summary, rejects))
    _check_whole_file(connection, rejects, summary)
    ladder = TierLadder.from_settings(settings.tiers)
    rate = settings.program.points_per_currency_unit
    applied = Applier(connection, settings, ladder, rate, now, rejects, summary,
                       settings.program.default_timezone)
    applied.run()
    touched.enqueue(connection, sa.select(STAGING.c.member_ref).distinct(), now, count=summary.inserted)
    if not skip_invalid:
        rejects.raise_if_any(source)
    summary.rejected = len(rejects)
    drop_staging(connection, STAGING)
    return summary, rejects


class OneEvent:
    """One event applied without a staging table, for a request that carries just that one: the
    same validator, the same checks in the same order and words, and the same effects (`Applier`)
    as import_events with skip_invalid, in a few statements built once. The caller's transaction
    holds it; nothing is written for a rejected or already applied event."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.validate = EventRowValidator(settings)
        self.ladder = TierLadder.from_settings(settings.tiers)

    def apply(self, connection: sa.Connection, row_no: int, row: dict[str, Any], *, source: str,
              now: datetime) -> tuple[ImportSummary, Rejects]:
        summary, rejects = ImportSummary(source=source, rows_read=1), Rejects()
        staged, problems = self.validate(row_no, row)
        if staged is None:
            rejects.extend(row_no, problems)
            summary.rejected = 1
            return summary, rejects
        event = dict(zip(STAGING_COLUMNS, staged))
        event["occurred_at"] = event["occurred_at"].astimezone(timezone.utc)  # as a staged row reads back
        member = connection.execute(_ONE_EVENT_LOOKUP, {"member_id": event["member_id"],
                                                         "event_id": event["event_id"]}).one()
        if member.id is None:
            rejects.add(row_no, "member_id", unknown_member(event["member_id"]))
        summary.skipped = int(member.already)
        if member.id is not None and not summary.skipped:
            program = self.settings.program
            applier = Applier(connection, self.settings, self.ladder, program.points_per_currency_unit, now,
                               rejects, summary, program.default_timezone)
            state = member_state(member, program.default_timezone)
            changes: list[tuple[int, dict[str, Any]]] = []
            applied = applier.apply_row(state, event, changes, 0)
            if applied is not None:
                applier.write([applied], changes, [state])
                rebuild_lots(connection, self.settings, [state.ref])
                touched.enqueue(connection, [state.ref], now)
        summary.rejected = len(rejects)
        return summary, rejects


def unknown_member(member_id: str) -> str:
    return f"unknown member '{member_id}' (add the member first: `members import`, or PUT /v1/members/ID)"


def _check_whole_file(connection: sa.Connection, rejects: Rejects, summary: ImportSummary) -> None:
    """Resolve members and find what only the whole file shows: unknown members, duplicates."""
    s, m = STAGING, members_table
    connection.execute(s.update().values(
        member_ref=sa.select(m.c.id).where(m.c.member_id == s.c.member_id).scalar_subquery()
    ))
    index_staging(connection, s, "member_ref", "occurred_at", "row_no")
    index_staging(connection, s, "event_id")
    unknown = connection.execute(
        sa.select(s.c.row_no, s.c.member_id).where(s.c.member_ref.is_(None)).order_by(s.c.row_no)
    ).all()
    for row_no, member_id in unknown:
        rejects.add(row_no, "member_id", unknown_member(member_id))
    duplicates = later_duplicates(connection, s, "event_id")
    for row_no, event_id, first_row in duplicates:
        rejects.add(row_no, "event_id", f"'{event_id}' already appears in row {first_row}")
    already = [row for (row,) in connection.execute(
        sa.select(s.c.row_no).where(sa.exists().where(events_table.c.event_id == s.c.event_id))
    )]
    summary.skipped = len(already)
    delete_rows(connection, s, [r for r, _ in unknown] + [r for r, _, _ in duplicates] + already)


_m = members_table
_MEMBER_COLUMNS = ("id", "points", "tier", "total_spend", "purchase_count", "last_purchase_at", "joined_at",
                   "joined_on", "period_spend", "period_points_earned", "period_last_event_at",
                   "updated_at")  # as Applier.write sets them
_EVENT_COLUMNS = ("event_id", "member_ref", "type", "occurred_at", "amount", "currency", "points", "properties",
                  "created_at")  # the keys of an applied event
_event_row = itemgetter(*_EVENT_COLUMNS)  # an applied event's values in _EVENT_COLUMNS order
_MEMBER_INDEXED = (("tier",), ("last_purchase_at",), ("joined_at", "joined_on"))  # see Applier._member_updates


@lru_cache(maxsize=8)
def _member_update(*moved: bool) -> tuple[tuple[str, ...], Callable[[tuple[Any, ...]], tuple[Any, ...]]]:
    """The members' columns set when each group of _MEMBER_INDEXED `moved` or not, and what picks
    their values from a row of _MEMBER_COLUMNS."""
    left_out = {c for group, set_it in zip(_MEMBER_INDEXED, moved) if not set_it for c in group}
    positions = [i for i, c in enumerate(_MEMBER_COLUMNS) if c not in left_out]
    columns = tuple(_MEMBER_COLUMNS[i] for i in positions)
    return columns, itemgetter(*positions)


_CHANGE_COLUMNS = ("member_ref", "from_tier", "to_tier", "changed_at", "reason", "event_ref")
STATE_COLUMNS = (_m.c.id, _m.c.member_id, _m.c.points, _m.c.tier, _m.c.total_spend, _m.c.purchase_count,
                  _m.c.last_purchase_at, _m.c.joined_at, _m.c.joined_on, _m.c.timezone, _m.c.tier_period_start,
                  _m.c.period_spend, _m.c.period_points_earned, _m.c.period_last_event_at)
_STATE_WIDTH = len(STATE_COLUMNS)
# One row: the member's state (all None for an unknown member) and whether the event_id is applied.
_ONE_EVENT_LOOKUP = sa.select(
    *STATE_COLUMNS,
    sa.exists().where(events_table.c.event_id == sa.bindparam("event_id", type_=sa.String)).label("already"),
).select_from(sa.select(sa.literal(1).label("one")).subquery().outerjoin(
    _m, _m.c.member_id == sa.bindparam("member_id", type_=sa.String)))


class Applier:
    """Walks the staged events member by member, in time order, and writes their effects."""

    def __init__(self, connection: sa.Connection, lots: Settings, ladder: TierLadder, rate: Decimal,
                 now: datetime, rejects: Rejects, summary: ImportSummary, default_zone: str):
        self.connection = connection
        self.lots = lots  # the settings to rebuild point lots with
        self.default_zone = default_zone
        self.ladder = ladder
        self.rate = rate
        self.now = now
        self.rejects = rejects
        self.summary = summary

    def run(self) -> None:
        last_ref = -1
        while True:
            refs = self.connection.execute(
                sa.select(STAGING.c.member_ref).distinct().where(STAGING.c.member_ref > last_ref)
                .order_by(STAGING.c.member_ref).limit(MEMBERS_PER_PAGE)
            ).scalars().all()
            if not refs:
                return
            self._page(refs)
            last_ref = refs[-1]

    def _page(self, refs: Sequence[int]) -> None:
        s, m = STAGING, members_table
        first, last = refs[0], refs[-1]
        # a dense page reads its range of members; a sparse one (a day's events) only its members
        wanted = m.c.id.between(first, last) if last - first < 2 * len(refs) else m.c.id.in_(refs)
        states = {
            row.id: member_state(row, self.default_zone)
            for row in self.connection.execute(sa.select(*STATE_COLUMNS).where(wanted))
        }
        staged = self.connection.execute(
            sa.select(s).where(s.c.member_ref.between(first, last))
            .order_by(s.c.member_ref, s.c.occurred_at, s.c.row_no)
        ).mappings().all()
        self.apply_page(states, staged)

    def apply_page(self, states: dict[int, _MemberState], staged: Sequence[Any]) -> None:
        """Apply `staged` (rows with the staging columns, in member_ref, occurred_at, row_no
        order) on top of `states` (by member ref), and write their effects."""
        self.write_all(*self.applied(states, staged))

    def applied(self, states: dict[int, _MemberState], staged: Sequence[Any]) -> tuple[
            list[dict[str, Any]], list[tuple[int, dict[str, Any]]], list[_MemberState]]:
        """What `apply_page` writes: the events, the tier changes (each with the index of its
        event) and the members changed."""
        events: list[dict[str, Any]] = []
        changes: list[tuple[int, dict[str, Any]]] = []  # (index into events, tier change)
        for ref, group in groupby(staged, key=lambda r: r["member_ref"]):
            state = states[ref]
            for row in group:
                event = self.apply_row(state, row, changes, len(events))
                if event is not None:
                    events.append(event)
        return events, changes, [st for st in states.values() if st.changed]

    def write_all(self, events: list[dict[str, Any]], changes: list[tuple[int, dict[str, Any]]],
                  changed: list[_MemberState]) -> None:
        """Write what `applied` gave, and rebuild the point lots of the members changed."""
        self.write(events, changes, changed)
        rebuild_lots(self.connection, self.lots, sorted(st.ref for st in changed))

    def apply_row(self, state: _MemberState, row: Any, changes: list[tuple[int, dict[str, Any]]],
               index: int) -> dict[str, Any] | None:
        kind, points, amount = row["type"], row["points"], row["amount"]
        if kind == "purchase" and points is None:
            points = int((amount * self.rate).to_integral_value(rounding=ROUND_FLOOR))
        delta = -points if kind in SUBTRACTS else (points or 0)
        if state.points + delta < 0:
            self.rejects.add(row["row_no"], "points", self._overdraft(state, kind, points, row["occurred_at"]))
            return None
        if state.points + delta > MAX_POINTS:
            column = "points" if row["points"] is not None else "amount"
            self.rejects.add(row["row_no"], column,
                             f"adds {delta:,} points to the {state.points:,} of member '{state.member_id}': "
                             f"a balance is at most {MAX_POINTS:,} points")
            return None
        if kind == "purchase" and state.total_spend + amount >= MAX_SPEND:
            self.rejects.add(row["row_no"], "amount",
                             f"takes the total spend of member '{state.member_id}' to "
                             f"{state.total_spend + amount:,}: a total spend is below 10^16")
            return None
        state.points += delta
        state.changed = True
        if kind == "purchase":
            state.purchase_count += 1
            state.total_spend += amount
            if state.last_purchase_at is None or row["occurred_at"] > state.last_purchase_at:
                state.last_purchase_at = row["occurred_at"]
        elif kind == "signup" and state.joined_at is None:
            state.joined_at = row["occurred_at"]
            state.joined_on = local_date(state.joined_at, state.timezone)
        when = row["occurred_at"]
        if state.period_start is not None and when > state.period_start and (kind == "purchase" or delta > 0):
            # in the tier period (a time ahead of now too: the segment takes those off at its `at`)
            if kind == "purchase":
                state.period_spend += amount
            if delta > 0:
                state.period_points_earned += delta
            if state.period_last_event_at is None or when > state.period_last_event_at:
                state.period_last_event_at = when
        new_tier = state.tier if self.ladder.held else self.ladder.tier_for(state.points, state.total_spend)
        if new_tier != state.tier:
            changes.append((index, {
                "member_ref": state.ref, "from_tier": state.tier, "to_tier": new_tier,
                "changed_at": row["occurred_at"], "reason": _reason(kind, amount, row["currency"], delta),
            }))
            state.tier = new_tier
        return {
            "event_id": row["event_id"], "member_ref": state.ref, "type": kind,
            "occurred_at": row["occurred_at"], "amount": amount,
            "currency": row["currency"] if amount is not None else None,
            "points": delta if delta else None, "properties": row["properties"] or {},
            "created_at": self.now,
        }

    def _overdraft(self, state: _MemberState, kind: str, points: int, when: datetime) -> str:
        """Why an event taking `points` is refused: a balance is never taken below 0, and it is the
        balance held now (with the file's earlier rows) that it is taken from, whatever the
        event's date. The balance at its date is today's less what later events did (as for
        milestones); when expiries recorded since took points the member held then, say so."""
        e = events_table
        later = self.connection.execute(
            sa.select(sa.func.coalesce(sa.func.sum(e.c.points), 0),
                      sa.func.coalesce(sa.func.sum(sa.case((e.c.type == "points_expired", -e.c.points), else_=0)), 0),
                      sa.func.min(sa.case((e.c.type == "points_expired", e.c.occurred_at), else_=None)))
            .where(e.c.member_ref == state.ref, e.c.occurred_at > when, e.c.points.is_not(None))).one()
        then = state.points - int(later[0])
        verb = "expires" if kind == "points_expired" else "redeems"
        said = (f"{verb} {points:,} points dated {when:%Y-%m-%d %H:%M} UTC; member '{state.member_id}' "
                f"had {then:,} then and has {state.points:,} now")
        expired_since, first_expiry = int(later[1]), later[2]
        if then >= points and expired_since:
            return (f"{said}: {expired_since:,} points expired after that date and the expiry is recorded "
                    f"(from {first_expiry.astimezone(timezone.utc):%Y-%m-%d %H:%M} UTC), and a redemption is taken from the "
                    "balance held now. Credit the points back with a points_earned event before importing it "
                    "if the redemption stands")
        return f"{said}: a balance never goes below 0"

    def _insert(self, events: list[dict[str, Any]], need_ids: bool) -> list[int]:
        """Insert `events` in order; their ids when `need_ids`."""
        ids: list[int] = []
        for start in range(0, len(events), BATCH_ROWS):
            rows = list(map(_event_row, events[start:start + BATCH_ROWS]))
            if need_ids or self.connection.dialect.name == "postgresql":
                ids += bulk.insert_returning_ids(self.connection, events_table, _EVENT_COLUMNS, rows)
            else:
                bulk.insert(self.connection, events_table, _EVENT_COLUMNS, rows)
        return ids

    def write(self, events: list[dict[str, Any]], changes: list[tuple[int, dict[str, Any]]],
               states: list[_MemberState]) -> None:
        ids = self._insert(events, need_ids=bool(changes))
        self.summary.inserted += len(events)
        if changes:
            bulk.insert(self.connection, tier_changes_table, _CHANGE_COLUMNS,
                        [(*(change[c] for c in _CHANGE_COLUMNS[:-1]), ids[i]) for i, change in changes])
            self.summary.tier_changes += len(changes)
        for columns, rows in self._member_updates(states).items():
            bulk.update_by_id(self.connection, members_table, columns, rows)
        self.summary.updated += len(states)

    def _member_updates(self, states: list[_MemberState]) -> dict[tuple[str, ...], list[tuple[Any, ...]]]:
        """The members' new values, by the columns that take them. On SQLite a column with an
        index of its own (tier, last_purchase_at, joined_at) is set only where its value changed
        since it was read: an indexed column assigned is its index entry deleted and inserted
        again, changed or not. PostgreSQL takes every column, in one statement."""
        every = self.connection.dialect.name == "postgresql"
        updates: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        for st in states:
            tier, last_purchase_at, joined_at = st.read
            columns, pick = _member_update(every or st.tier != tier,
                                           every or st.last_purchase_at is not last_purchase_at,
                                           every or st.joined_at is not joined_at)
            updates.setdefault(columns, []).append(pick((st.ref, st.points, st.tier, st.total_spend, st.purchase_count,
                                                         st.last_purchase_at, st.joined_at, st.joined_on, st.period_spend,
                                                         st.period_points_earned, st.period_last_event_at, self.now)))
        return updates


def member_state(row: Any, default_zone: str) -> _MemberState:
    """The state of a member from a row that starts with STATE_COLUMNS."""
    (ref, member_id, points, tier, spend, count, last_purchase_at, joined_at, joined_on, zone,
     period_start, period_spend, period_points_earned, period_last_event_at) = row[:_STATE_WIDTH]
    return _MemberState(ref, member_id, points, tier, spend, count, last_purchase_at, joined_at, joined_on,
                        zone or default_zone, period_start, period_spend, period_points_earned,
                        period_last_event_at)


@dataclass(frozen=True)
class Expiry:
    """One `points_expired` event the expiry job records (points > 0, at most the balance)."""

    row_no: int
    member_ref: int
    event_id: str
    occurred_at: datetime
    points: int


EXPIRY_CHUNK = 2000  # expiries per round of reads and writes (an IN list of event ids, of members)


def record_expiries(connection: sa.Connection, settings: Settings, expiries: Sequence[Expiry], *,
                    source: str, now: datetime) -> ImportSummary:
    """The expiry job's events, written set-based: the effects of `import_events` on the same
    rows (the balance falls; the tier follows unless tiers.qualification holds it; each move in
    tier history, pointing at its event; the members queued for the daemon; an event id already
    recorded is skipped; an expiry above the balance is rejected and nothing is recorded),
    without the staging a file needs, because the job's rows are checked already: known
    members, each member's rows in time order. A round of reads (recorded ids, balances) and
    executemany writes (events, tier history, members) per chunk, instead of a statement per row.
    Point lots are the caller's (the job removes the lots it expired)."""
    summary = ImportSummary(source=source, rows_read=len(expiries))
    rejects = Rejects()
    ladder = TierLadder.from_settings(settings.tiers)
    e, m, t = events_table, members_table, tier_changes_table
    dialect = connection.dialect
    instant = UTCDateTime().bind_processor(dialect)
    properties = e.c.properties.type.bind_processor(dialect)
    at = instant(now) if instant else now
    empty = properties({}) if properties else {}
    insert_events = bulk.insert_sql(e, ("event_id", "member_ref", "type", "occurred_at", "points", "properties",
                                        "created_at"), dialect)
    # the tier only where it changed: a column assigned is an index entry rewritten (ix_members_tier)
    update_points = bulk.update_sql(m, ("id", "points", "updated_at"), dialect)
    update_tiers = bulk.update_sql(m, ("id", "points", "tier", "updated_at"), dialect)
    insert_changes = t.insert().from_select(
        ["member_ref", "from_tier", "to_tier", "changed_at", "reason", "event_ref"],
        sa.select(sa.bindparam("c_ref", type_=sa.Integer()), sa.bindparam("c_from", type_=sa.String()),
                  sa.bindparam("c_to", type_=sa.String()), sa.bindparam("c_at", type_=UTCDateTime()),
                  sa.bindparam("c_reason", type_=sa.String()), e.c.id)
        .where(e.c.event_id == sa.bindparam("c_event", type_=sa.String())))
    touched_refs: set[int] = set()
    for start in range(0, len(expiries), EXPIRY_CHUNK):
        chunk = expiries[start:start + EXPIRY_CHUNK]
        known = set(connection.execute(
            sa.select(e.c.event_id).where(e.c.event_id.in_([x.event_id for x in chunk]))).scalars())
        summary.skipped += len(known)
        chunk = [x for x in chunk if x.event_id not in known]
        refs = sorted({x.member_ref for x in chunk})
        states = {row.id: [row.member_id, row.points, row.tier, row.total_spend, row.tier] for row in connection.execute(
            sa.select(m.c.id, m.c.member_id, m.c.points, m.c.tier, m.c.total_spend).where(m.c.id.in_(refs)))}
        events: list[tuple[Any, ...]] = []
        changes: list[dict[str, Any]] = []
        for x in chunk:
            state = states[x.member_ref]
            member_id, points, tier, spend, _ = state
            if points < x.points:
                rejects.add(x.row_no, "points", f"expires {x.points} points but member '{member_id}' has "
                                                f"{points} at {x.occurred_at:%Y-%m-%d %H:%M} UTC")
                continue
            points -= x.points
            new_tier = tier if ladder.held else ladder.tier_for(points, spend)
            if new_tier != tier:
                changes.append({"c_ref": x.member_ref, "c_from": tier, "c_to": new_tier, "c_at": x.occurred_at,
                                "c_reason": _reason("points_expired", None, None, -x.points),
                                "c_event": x.event_id})
            state[1], state[2] = points, new_tier
            events.append((x.event_id, x.member_ref, "points_expired",
                           instant(x.occurred_at) if instant else x.occurred_at, -x.points, empty, at))
        if rejects:
            break
        if events:
            connection.exec_driver_sql(insert_events, events)
            summary.inserted += len(events)
        if changes:
            connection.execute(insert_changes, changes)
            summary.tier_changes += len(changes)
        written = sorted({x.member_ref for x in chunk})
        moved = [ref for ref in written if states[ref][2] != states[ref][4]]
        if moved:
            connection.exec_driver_sql(update_tiers, [(states[ref][1], states[ref][2], at, ref) for ref in moved])
        if len(moved) < len(written):
            connection.exec_driver_sql(update_points, [(states[ref][1], at, ref) for ref in written
                                                       if states[ref][2] == states[ref][4]])
        summary.updated += len(written)
        touched_refs.update(written)
    rejects.raise_if_any(source)
    touched.enqueue(connection, sorted(touched_refs), now, count=summary.inserted)
    return summary


def _reason(kind: str, amount: Decimal | None, currency: str | None, delta: int) -> str:
    points = f"{delta:+,} points"
    if kind == "purchase" and amount is not None:
        return f"purchase of {amount:,} {currency or ''}".rstrip() + f" ({points})"
    if kind == "points_expired":
        return f"points expired ({points})"
    return f"{kind} ({points})"

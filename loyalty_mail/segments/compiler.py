"""Typed segment rules -> one SQL condition over `members`, evaluated inside the database.

Pure: the output depends only on the rules, the instant `at`, the program settings and the
database dialect's name. Every value from YAML is a bound parameter; names come only from the
whitelist in fields.py. Semantics shared with tests/reference.py:
- a condition on a missing value (NULL) is false, and `not` negates it (so `not: {nps: promoter}`
  includes members who never answered);
- relative times resolve against `at`; events after `at` have not happened yet;
- `locale` and `timezone` read the program default where a member has none;
- anniversaries compare dates in the member's own time zone; 29 February falls on 28 February
  in other years.
A segment that the query uses once (`segment: NAME`) is compiled in place; one used more than once
is compiled once, as a common table expression `segment_NAME` that each use refers to, so the SQL
grows with the number of segments, never with the number of paths between them.
"""

from __future__ import annotations

import operator
import zoneinfo
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import cached_property
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql import operators
from sqlalchemy.sql.expression import UnaryExpression

from ..models import (UTCDateTime, events_table, member_topics_table, members_table, point_lots_table, sends_table,
                      tracking_events_table)
from ..durations import Duration
from ..tiers import TierLadder
from .fields import NPS_CATEGORIES
from .spec import (
    All,
    AnyOf,
    EmailRule,
    EventRule,
    FieldRule,
    Not,
    Op,
    Rule,
    SegmentCatalog,
    SegmentRef,
    TopicRule,
    ValueRule,
    references,
)
from .timeexpr import anniversary_on

DAYS_PER_YEAR = 365.25
NARROW_WINDOW = timedelta(days=31)
_NUMERIC_TEXT_PG = r"^-?[0-9]+(\.[0-9]+)?$"


@dataclass(frozen=True)
class Context:
    """Everything besides the rules that a segment's meaning depends on."""

    at: datetime
    ladder: TierLadder
    default_locale: str
    default_timezone: str
    clv_years: Decimal
    catalog: SegmentCatalog
    dialect: str = "sqlite"
    zones: tuple[str, ...] = field(default_factory=lambda: tuple(sorted(zoneinfo.available_timezones())))
    timeout: float | None = None  # seconds one segment query may run (segments.timeout); not its meaning
    topics: tuple[tuple[str, bool], ...] = ()  # (topic, default) from config.yaml, for subscribed_to
    qualification: str | None = None  # tiers.qualification.measure: spend | points_earned (None: no reviews)
    qualification_period: Duration | None = None  # tiers.qualification.period: the measure's rolling window
    reward_costs: tuple[int, ...] = ()  # the costs of the rewards catalogue
    # Only these members are asked about (a journey's chunk, or a query of the member ids in a
    # journey): per-member aggregates over events and sends, and shared segments, are computed for
    # them alone instead of for every member.
    members: tuple[int, ...] | sa.Select[Any] | None = None

    @cached_property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.default_timezone)

    @cached_property
    def local_dates(self) -> dict[date, list[str]]:
        """The member-local calendar date at `at`, and which time zones are on it (at most 3)."""
        groups: dict[date, list[str]] = defaultdict(list)
        for name in {*self.zones, self.default_timezone}:
            groups[self.at.astimezone(zoneinfo.ZoneInfo(name)).date()].append(name)
        return {day: sorted(names) for day, names in sorted(groups.items())}


def compile_rule(rule: Rule, ctx: Context) -> sa.ColumnElement[bool]:
    """The WHERE condition over members_table for `rule` at ctx.at."""
    return _Compiler(ctx, shared=_Shared(_used_more_than_once(rule, ctx.catalog))).rule(
        rule, (), negated=False, top=True)


def event_filter(conditions: tuple[ValueRule, ...], ctx: Context) -> list[sa.ColumnElement[bool]]:
    """The conditions over `events` of a `where:` event filter (as in segments' event rules)."""
    return _Compiler(ctx).event_filters(conditions)


def segment_query(rule: Rule, ctx: Context, *columns: sa.ColumnElement[Any]) -> sa.Select[Any]:
    """SELECT columns (default: members.id) FROM members WHERE the rule holds."""
    chosen = columns or (members_table.c.id,)
    return sa.select(*chosen).where(compile_rule(rule, ctx))


def _used_more_than_once(rule: Rule, catalog: SegmentCatalog) -> set[str]:
    """The segments that `rule`, with the segments it uses, refers to more than once."""
    uses: Counter[str] = Counter()
    pending = [rule]
    while pending:
        for ref in references(pending.pop()):
            uses[ref.name] += 1
            if uses[ref.name] == 1:
                pending.append(catalog.get(ref.name).rule)
    return {name for name, count in uses.items() if count > 1}


class _Shared:
    """The segments compiled once per query, as common table expressions, by name."""

    def __init__(self, names: set[str]):
        self.names = names
        self.ctes: dict[str, sa.CTE] = {}
        self.building: set[str] = set()

    def cte(self, name: str, ctx: Context) -> sa.CTE:
        if name not in self.ctes:
            if name in self.building:  # the loader rejects cycles; this is a guard, not a path
                raise ValueError(f"segment cycle through {name}")
            self.building.add(name)
            condition = _Compiler(ctx, shared=self).rule(ctx.catalog.get(name).rule, (name,), negated=False,
                                                         top=True)
            label = f"segment_{name}" if len(name) <= 55 else f"segment_{len(self.ctes) + 1}"
            query = sa.select(members_table.c.id).where(condition)
            if ctx.members is not None:
                query = query.where(members_table.c.id.in_(ctx.members))
            self.ctes[name] = query.cte(label)
            self.building.discard(name)
        return self.ctes[name]


class _Compiler:
    def __init__(self, ctx: Context, members: sa.FromClause = members_table, shared: _Shared | None = None):
        self.ctx = ctx
        self.m = members
        self.shared = shared or _Shared(set())

    def rule(self, rule: Rule, trail: tuple[str, ...], negated: bool, top: bool = False) -> sa.ColumnElement[bool]:
        """Compile one rule. Under a `not`, conditions are made never-NULL; elsewhere NULL and
        false filter alike, and the bare comparison keeps indexes usable. `top`: the segment's
        own rule, which no other condition narrows down first."""
        if isinstance(rule, All):
            # Member conditions first; event conditions beside them become per-member probes,
            # evaluated only for the members that pass the cheaper conditions.
            events = [item for item in rule.items if isinstance(item, EventRule)]
            others: list[Rule] = [item for item in rule.items if not isinstance(item, EventRule)]
            if events and others and top and self.ctx.dialect == "postgresql":
                return self.probed_candidates(others, events, trail, negated)
            if events and others:
                return sa.and_(*(self.rule(item, trail, negated) for item in others),
                               *(self.event(item, correlated=True) for item in events))
            return sa.and_(*(self.rule(item, trail, negated) for item in rule.items))
        if isinstance(rule, AnyOf):
            return sa.or_(*(self.rule(item, trail, negated) for item in rule.items))
        if isinstance(rule, Not):
            return sa.not_(self.rule(rule.item, trail, True))
        if isinstance(rule, SegmentRef):
            if rule.name in trail:  # the loader rejects cycles; this is a guard, not a path
                raise ValueError(f"segment cycle through {rule.name}")
            if rule.name in self.shared.names:
                return self.member_of(self.shared.cte(rule.name, self.ctx))
            return self.rule(self.ctx.catalog.get(rule.name).rule, trail + (rule.name,), negated, top)
        strict = _never_null if negated else (lambda condition: condition)
        if isinstance(rule, FieldRule) and rule.field.kind == "points_expiring":
            return self.points_expiring(rule)
        if isinstance(rule, FieldRule):
            return strict(sa.and_(*(self.field_op(rule, op) for op in rule.ops)))
        if isinstance(rule, ValueRule):
            column = self.m.c.attributes
            return strict(sa.and_(*(self.value_op(column, rule, op) for op in rule.ops)))
        if isinstance(rule, EventRule):
            return self.event(rule)
        if isinstance(rule, EmailRule):
            return self.emails(rule)
        if isinstance(rule, TopicRule):
            return self.topic(rule)
        raise TypeError(f"unknown rule {rule!r}")

    def topic(self, rule: TopicRule) -> sa.ColumnElement[bool]:
        """Subscribed to email, and to the topic: by the member's own choice, else by the topic's
        default. Never NULL (EXISTS on the member_topics key)."""
        t = member_topics_table
        default = dict(self.ctx.topics).get(rule.topic, True)
        chose = (sa.select(t.c.member_ref)
                 .where(t.c.member_ref == self.m.c.id, t.c.topic == rule.topic, t.c.subscribed.is_(not default)))
        receives = ~sa.exists(chose) if default else sa.exists(chose)
        return sa.and_(self.m.c.subscribed.is_(True), receives)

    def member_of(self, segment: sa.CTE) -> sa.ColumnElement[bool]:
        """The member is in `segment`'s rows: never NULL, so `not` needs no guard. PostgreSQL
        plans EXISTS as a (anti-)join; NOT IN a subquery would fall back to a per-row scan once
        the members no longer fit in work_mem. SQLite indexes an IN subquery once."""
        if self.ctx.dialect == "postgresql":
            return sa.exists(sa.select(segment.c.id).where(segment.c.id == self.m.c.id))
        return self.m.c.id.in_(sa.select(segment.c.id))

    # -- member fields -----------------------------------------------------------------------
    def field_op(self, rule: FieldRule, op: Op) -> sa.ColumnElement[bool]:
        spec = rule.field
        if spec.kind == "days_since":
            return self.days_since(self.m.c[spec.stored], op)
        if spec.kind == "time":
            if op.name == "anniversary":
                return self.anniversary(self.m.c.joined_on, op.value)
            return self.time_op(self.m.c[spec.stored], op)
        if spec.kind == "date":
            if op.name == "anniversary":
                return self.anniversary(self.m.c.birthday, op.value)
            return self.date_op(self.m.c[spec.stored], op)
        if spec.kind == "expiry_time":
            return self.expiry_time_op(self.column_for(spec.name), op)
        if spec.kind == "tier":
            return self.tier_op(op)
        if spec.kind == "category":
            return self.nps_op(op)
        column = self.column_for(spec.name)
        if spec.name == "clv":
            return sa.and_(*self.clv_floor(op), compare(column, op, self.ctx.dialect))
        if spec.name == "needed_to_keep_tier" and op.name != "is_null":
            # the value is null without a period: this condition first lets the members with a
            # period be read from ix_members_period alone
            return sa.and_(self.m.c.tier_period_start.is_not(None), compare(column, op, self.ctx.dialect))
        return compare(column, op, self.ctx.dialect)

    def clv_floor(self, op: Op) -> list[sa.ColumnElement[bool]]:
        """A cheap condition every member with `clv <op>` meets: membership counts as at least a
        year, so clv <= total_spend x clv_years, and clv >= X needs total_spend >= X / clv_years.
        Evaluated first, it spares the date arithmetic for most members (benchmarks/README.md)."""
        lower = {"gt": op.value, "gte": op.value, "eq": op.value}.get(op.name)
        if op.name == "between":
            lower = op.value[0]
        years = self.ctx.clv_years
        if lower is None or Decimal(lower) <= 0 or years <= 0:
            return []
        floor = Decimal(lower) / years * (1 - Decimal("1e-9"))  # the slack covers float rounding
        bound = sa.literal(float(floor)) if self.ctx.dialect == "sqlite" else sa.literal(floor, sa.Numeric())
        return [self.m.c.total_spend >= bound]

    def column_for(self, name: str) -> sa.ColumnElement[Any]:
        m = self.m
        if name == "locale":
            return sa.func.coalesce(m.c.locale, sa.literal(self.ctx.default_locale))
        if name == "timezone":
            return sa.func.coalesce(m.c.timezone, sa.literal(self.ctx.default_timezone))
        if name == "average_order_value":
            return sa.case((m.c.purchase_count > 0, self.money(m.c.total_spend) / m.c.purchase_count))
        if name == "clv":
            days = self.days_between(m.c.joined_at)
            years = sa.case((sa.or_(m.c.joined_at.is_(None), days < DAYS_PER_YEAR), 1.0),
                            else_=days / DAYS_PER_YEAR)
            return self.money(m.c.total_spend) * sa.literal(float(self.ctx.clv_years)) / years
        if name == "next_points_expiry_at":
            lots = point_lots_table
            return (sa.select(sa.func.min(lots.c.expires_at))
                    .where(lots.c.member_ref == m.c.id, lots.c.expires_at > sa.literal(self.ctx.at, UTCDateTime()))
                    .correlate(m).scalar_subquery())
        if name == "points_to_next_tier":
            return self.to_next_tier()
        if name == "needed_to_keep_tier":
            return self.needed_to_keep_tier()
        if name == "affordable_rewards":
            if not self.ctx.reward_costs:
                return sa.literal(0)
            return sum((sa.case((m.c.points >= sa.literal(cost), 1), else_=0) for cost in self.ctx.reward_costs),
                       start=sa.literal(0))
        return m.c[name]

    def to_next_tier(self) -> sa.ColumnElement[Any]:
        """The next tier's threshold less what moves the member up: with tiers.qualification the
        measure over the period ending `at` (as the review's upgrades and the statements count
        it), else the points or spend held; null at the top tier."""
        m, levels = self.m, self.ctx.ladder.levels
        below_top = [level.name for level in levels[:-1]]
        if not below_top:
            return sa.null()
        if self.ctx.qualification is None or self.ctx.qualification_period is None:
            value = m.c.points if self.ctx.ladder.basis == "points" else self.money(m.c.total_spend)
        else:
            value = self.measure_over_period(self.ctx.qualification_period)
        threshold = sa.case(*((m.c.tier == level.name, sa.literal(upper.threshold, sa.Numeric(18, 2)))
                              for level, upper in zip(levels, levels[1:])))
        # The measure appears once, and is read only for members below the top tier.
        return sa.case((m.c.tier.in_(below_top), threshold - value))

    def measure_over_period(self, period: Duration) -> sa.ColumnElement[Any]:
        """The member's spend (or points earned) after `at` less `period` up to and including
        `at`: one seek a member in events (member_ref, type, occurred_at, amount, points)."""
        m, e = self.m, events_table
        if self.ctx.qualification == "spend":
            counted, counts = self.money(e.c.amount), e.c.type == "purchase"
        else:
            counted, counts = e.c.points, e.c.points > 0
        total: sa.ColumnElement[Any] = sa.func.coalesce(sa.func.sum(counted), 0)
        if self.ctx.dialect == "sqlite" and self.ctx.qualification == "spend":
            total = sa.func.round(total, 2)  # amounts are floating point there: to the cent
        return (sa.select(total)
                .where(e.c.member_ref == m.c.id, counts,
                       e.c.occurred_at > sa.literal(period.before(self.ctx.at), UTCDateTime()),
                       e.c.occurred_at <= sa.literal(self.ctx.at, UTCDateTime()))
                .correlate(m).scalar_subquery())

    def needed_to_keep_tier(self) -> sa.ColumnElement[Any]:
        """The tier's threshold less the measure since the period started (never below 0); null
        without tiers.qualification, at the lowest tier, or before the period is known."""
        m, e = self.m, events_table
        levels = self.ctx.ladder.levels[1:]
        if self.ctx.qualification is None or not levels:
            return sa.null()
        at = sa.literal(self.ctx.at, UTCDateTime())
        # The member keeps the measure over every event after the period's start (models.Member);
        # the events after `at` have not happened yet at `at` and are taken off, read only for the
        # members with one (period_last_event_at > at): a column read a member, not an index seek.
        # A purchase's type narrows the seek in (member_ref, type, occurred_at, amount, points).
        if self.ctx.qualification == "spend":
            kept, counted, counts = self.money(m.c.period_spend), self.money(e.c.amount), e.c.type == "purchase"
        else:
            kept, counted, counts = m.c.period_points_earned, e.c.points, e.c.points > 0
        ahead = (sa.select(sa.func.coalesce(sa.func.sum(counted), 0))
                 .where(e.c.member_ref == m.c.id, counts, e.c.occurred_at > at,
                        e.c.occurred_at > m.c.tier_period_start)
                 .scalar_subquery())
        measure = kept - sa.case((m.c.period_last_event_at > at, ahead), else_=0)
        # The measure appears once: each copy of a correlated subquery is evaluated on its own.
        threshold = sa.case(*((m.c.tier == level.name, sa.literal(level.threshold, sa.Numeric(18, 2)))
                              for level in levels))
        short = threshold - measure
        if self.ctx.dialect == "sqlite" and self.ctx.qualification == "spend":
            short = sa.func.round(short, 2)  # amounts are floating point there: to the cent
        floor = sa.func.max if self.ctx.dialect == "sqlite" else sa.func.greatest  # scalar max of two
        return sa.case((m.c.tier_period_start.is_(None), None),
                       (m.c.tier.in_([level.name for level in levels]),
                        floor(short, sa.literal(0), type_=sa.Numeric(18, 2))),
                       else_=None)

    def money(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        # SQLite stores whole amounts as integers; divide as real numbers, not integers.
        return sa.cast(column, sa.Float) if self.ctx.dialect == "sqlite" else column

    def days_between(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        """Days (fractional) from `column` to `at`."""
        at = sa.literal(self.ctx.at, UTCDateTime())
        if self.ctx.dialect == "sqlite":
            return sa.func.julianday(at) - sa.func.julianday(column)
        return sa.extract("epoch", at - column) / 86400.0

    def days_since(self, column: sa.ColumnElement[Any], op: Op) -> sa.ColumnElement[bool]:
        """Whole days since `column`, as timestamp ranges (index-friendly, no date functions)."""
        def cut(days: Decimal) -> sa.ColumnElement[Any]:
            return sa.literal(self.ctx.at - timedelta(days=int(days)), UTCDateTime())

        def at_least(days: Decimal) -> sa.ColumnElement[bool]:
            return column <= cut(days)

        def below(days: Decimal) -> sa.ColumnElement[bool]:
            return column > cut(days)

        value = op.value
        if op.name in ("is_set", "is_null"):
            return _is_set(column, op)
        if not (op.name in ("lt", "lte") and value <= NARROW_WINDOW.days):
            column = self.unindexed(column)
        if op.name == "gte":
            return at_least(_ceil(value))
        if op.name == "gt":
            return at_least(_floor(value) + 1)
        if op.name == "lte":
            return below(_floor(value) + 1)
        if op.name == "lt":
            return below(_ceil(value))
        if op.name == "eq":
            return sa.and_(at_least(value), below(value + 1)) if value == int(value) else sa.false()
        if op.name == "ne":
            return sa.and_(column.is_not(None), sa.not_(self.days_since(column, Op("eq", value))))
        if op.name == "between":
            low, high = value
            return sa.and_(at_least(_ceil(low)), below(_floor(high) + 1))
        if op.name == "in":
            return sa.or_(*(self.days_since(column, Op("eq", v)) for v in value))
        if op.name == "not_in":
            return sa.and_(column.is_not(None), *(sa.not_(self.days_since(column, Op("eq", v))) for v in value))
        raise ValueError(op.name)

    def time_op(self, column: sa.ColumnElement[Any], op: Op) -> sa.ColumnElement[bool]:
        ctx = self.ctx
        if not self.narrow_window(op):
            column = self.unindexed(column)
        if op.name == "within":
            return sa.and_(column >= sa.literal(op.value.before(ctx.at), UTCDateTime()),
                           column <= sa.literal(ctx.at, UTCDateTime()))
        if op.name == "older_than":
            return column < sa.literal(op.value.before(ctx.at), UTCDateTime())
        if op.name == "within_next":
            return self.within_next(column, op.value)
        return _ordered(column, op, lambda v: sa.literal(v.resolve(ctx.at, ctx.zone), UTCDateTime()))

    def within_next(self, column: sa.ColumnElement[Any], ahead: Duration) -> sa.ColumnElement[bool]:
        """A time that lies ahead (a tier review, the next expiry): `within_next: 30 days` is from
        `at` up to 30 days after it, both ends included (calendar months and years, as `within`)."""
        return sa.and_(column >= sa.literal(self.ctx.at, UTCDateTime()),
                       column <= sa.literal(ahead.after(self.ctx.at), UTCDateTime()))

    def expiry_time_op(self, column: sa.ColumnElement[Any], op: Op) -> sa.ColumnElement[bool]:
        """A future instant (the next expiry): `within_next: 30 days` is from now to 30 days ahead."""
        ctx = self.ctx
        if op.name == "within_next":
            return self.within_next(column, op.value)
        return _ordered(column, op, lambda v: sa.literal(v.resolve(ctx.at, ctx.zone), UTCDateTime()))

    # -- points that expire ------------------------------------------------------------------
    def expiring_window(self, rule: FieldRule) -> list[sa.ColumnElement[bool]]:
        """The lots a points_expiring rule sums: expiring after `at`, up to `within` ahead."""
        lots, at = point_lots_table, self.ctx.at
        within = next(op.value for op in rule.ops if op.name == "within")
        return [lots.c.expires_at > sa.literal(at, UTCDateTime()),
                lots.c.expires_at <= sa.literal(within.after(at), UTCDateTime())]

    def points_expiring(self, rule: FieldRule) -> sa.ColumnElement[bool]:
        """Members whose points expiring in the window add up to what the operators ask (members
        with none count as 0). One range scan of the covering index on (expires_at, member_ref,
        remaining), grouped per member."""
        lots = point_lots_table
        ops = tuple(op for op in rule.ops if op.name != "within")
        if self.ctx.dialect == "sqlite":
            ops = tuple(Op(op.name, _floats(op.value)) for op in ops)
        query = sa.select(lots.c.member_ref).where(*self.expiring_window(rule))
        return self._grouped_membership(query, lots.c.member_ref, sa.func.sum(lots.c.remaining), ops)

    def narrow_window(self, op: Op) -> bool:
        """Does this time condition select only a recent slice (from at most 31 days before `at`),
        or a near one ahead (up to at most 31 days after it)?"""
        earliest = self.ctx.at - NARROW_WINDOW
        if op.name == "within":
            return op.value.before(self.ctx.at) >= earliest
        if op.name == "within_next":
            return op.value.after(self.ctx.at) <= self.ctx.at + NARROW_WINDOW
        if op.name in ("after", "since"):
            return op.value.resolve(self.ctx.at, self.ctx.zone) >= earliest
        if op.name == "between":
            return op.value[0].resolve(self.ctx.at, self.ctx.zone) >= earliest
        return False

    def unindexed(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        """On SQLite, `+column`: the documented way to keep the planner off an index. Without
        range statistics SQLite takes any index for a range, and for a wide range (most members)
        the random row lookups cost several times a plain scan. PostgreSQL estimates well."""
        if self.ctx.dialect != "sqlite":
            return column
        return UnaryExpression(column, operator=operators.custom_op("+"), type_=column.type)

    def date_op(self, column: sa.ColumnElement[Any], op: Op) -> sa.ColumnElement[bool]:
        return _ordered(column, op, lambda v: sa.literal(as_date(v, self.ctx), sa.Date()))

    def anniversary(self, column: sa.ColumnElement[Any], days_ahead: int) -> sa.ColumnElement[bool]:
        """The anniversary of a date column falls on the member's local today (or within N days).

        A member's local date is one of at most three calendar dates at any instant; each is
        matched with the time zones that are on it. The month-day prefilter comes first and is
        served by an expression index (migration 0003)."""
        zone = sa.func.coalesce(self.m.c.timezone, sa.literal(self.ctx.default_timezone))
        key = month_day_key(column, self.ctx.dialect)
        groups, every_key = [], set()
        for today, names in self.ctx.local_dates.items():
            by_year: dict[int, set[int]] = defaultdict(set)
            for k in range(days_ahead + 1):
                target = today + timedelta(days=k)
                by_year[target.year] |= anniversary_keys(target)
            every_key |= set().union(*by_year.values())
            matches = [sa.and_(key.in_(sorted(keys)), column < sa.literal(date(year, 1, 1), sa.Date()))
                       for year, keys in sorted(by_year.items())]
            groups.append(sa.and_(zone.in_(names), sa.or_(*matches)))
        return sa.and_(key.in_(sorted(every_key)), sa.or_(*groups))

    def tier_op(self, op: Op) -> sa.ColumnElement[bool]:
        names = tiers_matching(self.ctx.ladder, op)
        return self.unindexed(self.m.c.tier).in_(names) if names else sa.false()

    def nps_op(self, op: Op) -> sa.ColumnElement[bool]:
        score = self.m.c.nps_score
        if op.name in ("is_set", "is_null"):
            return _is_set(score, op)

        def category(name: str) -> sa.ColumnElement[bool]:
            low, high = NPS_CATEGORIES[name]
            return score.between(low, high)

        if op.name == "eq":
            return category(op.value)
        if op.name == "ne":
            return sa.and_(score.is_not(None), sa.not_(category(op.value)))
        if op.name == "in":
            return sa.or_(*(category(v) for v in op.value))
        if op.name == "not_in":
            return sa.and_(score.is_not(None), *(sa.not_(category(v)) for v in op.value))
        raise ValueError(op.name)

    # -- JSON values (custom attributes, event properties) ----------------------------------------
    def json_value(self, column: sa.ColumnElement[Any], path: tuple[str, ...], kind: str) -> sa.ColumnElement[Any]:
        """The value at `path` as `kind`, or NULL when it is absent or of another type."""
        if self.ctx.dialect == "sqlite":
            where = sa.literal("$." + ".".join(path))
            json_type = sa.func.json_type(column, where)
            raw = sa.func.json_extract(column, where)
            if kind == "text":
                return sa.case((json_type == "text", raw))
            if kind == "number":
                text: sa.ColumnElement[Any] = sa.cast(raw, sa.String)
                unsigned = sa.case((sa.func.substr(text, 1, 1) == "-", sa.func.substr(text, 2)), else_=text)
                numeric_text = sa.and_(
                    json_type == "text", unsigned != "", unsigned.op("GLOB")("[0-9]*"),
                    unsigned.op("NOT GLOB")("*[^0-9.]*"), unsigned.op("NOT GLOB")("*.*.*"),
                    unsigned.op("NOT GLOB")("*."))
                return sa.case((json_type.in_(["integer", "real"]), sa.cast(raw, sa.Float)),
                               (numeric_text, sa.cast(raw, sa.Float)))
            return sa.case((json_type == "true", sa.true()), (json_type == "false", sa.false()),
                           (sa.and_(json_type == "text", raw == "true"), sa.true()),
                           (sa.and_(json_type == "text", raw == "false"), sa.false()))
        keys = sa.literal("{" + ",".join(path) + "}")
        node = column.op("#>")(sa.cast(keys, sa.ARRAY(sa.Text)))
        text = column.op("#>>")(sa.cast(keys, sa.ARRAY(sa.Text)))
        json_type = sa.func.jsonb_typeof(node)
        if kind == "text":
            return sa.case((json_type == "string", text))
        if kind == "number":
            return sa.case((json_type == "number", sa.cast(text, sa.Numeric)),
                           (sa.and_(json_type == "string", text.op("~")(_NUMERIC_TEXT_PG)), sa.cast(text, sa.Numeric)))
        return sa.case((json_type == "boolean", sa.cast(text, sa.Boolean)),
                       (sa.and_(json_type == "string", text == "true"), sa.true()),
                       (sa.and_(json_type == "string", text == "false"), sa.false()))

    def value_op(self, column: sa.ColumnElement[Any], rule: ValueRule, op: Op) -> sa.ColumnElement[bool]:
        value = self.json_value(column, rule.path, rule.type)
        if self.ctx.dialect == "sqlite" and rule.type == "number":
            op = Op(op.name, _floats(op.value))
        return compare(value, op, self.ctx.dialect)

    # -- events ----------------------------------------------------------------------------
    def event(self, rule: EventRule, correlated: bool = False) -> sa.ColumnElement[bool]:
        if correlated:
            return sa.and_(*(probe.condition() for probe in self.probes(rule)))
        where = self.event_where(rule)
        parts = []
        if rule.count:
            parts.append(self._aggregate_membership(where, sa.func.count(), rule.count))
        if rule.sum_ops:
            total, ops = self.event_sum(rule)
            parts.append(self._aggregate_membership(where, total, ops))
        return sa.and_(*parts)

    def event_where(self, rule: EventRule) -> list[sa.ColumnElement[bool]]:
        """The conditions on `events` that select the events `rule` counts or sums."""
        e, ctx = events_table, self.ctx
        at = sa.literal(ctx.at, UTCDateTime())
        where = [e.c.type == rule.type, e.c.occurred_at <= at]
        if rule.within:
            where.append(e.c.occurred_at >= sa.literal(rule.within.before(ctx.at), UTCDateTime()))
        if rule.since:
            where.append(e.c.occurred_at >= sa.literal(rule.since.resolve(ctx.at, ctx.zone), UTCDateTime()))
        if rule.until:
            where.append(e.c.occurred_at <= sa.literal(rule.until.resolve(ctx.at, ctx.zone), UTCDateTime()))
        return where + self.event_filters(rule.where)

    def event_filters(self, conditions: tuple[ValueRule, ...]) -> list[sa.ColumnElement[bool]]:
        """An event rule's `where:` conditions on `events` (a missing property never matches)."""
        return [_never_null(sa.and_(*(self.event_value_op(condition, op) for op in condition.ops)))
                for condition in conditions]

    def event_sum(self, rule: EventRule) -> tuple[sa.ColumnElement[Any], tuple[Op, ...]]:
        """The summed expression (0 over no events) and the operators it is compared with."""
        e = events_table
        assert rule.sum_of is not None
        if rule.sum_of in ("amount", "points"):
            summed = self.money(e.c[rule.sum_of]) if rule.sum_of == "amount" else e.c.points
        else:
            summed = self.json_value(e.c.properties, (rule.sum_of,), "number")
        ops = rule.sum_ops if self.ctx.dialect != "sqlite" else tuple(Op(o.name, _floats(o.value)) for o in rule.sum_ops)
        return sa.func.coalesce(sa.func.sum(summed), 0), ops

    def probes(self, rule: EventRule) -> list[Probe]:
        """One probe per aggregate of `rule`, each over this member's matching events."""
        mine = [events_table.c.member_ref == self.m.c.id, *self.event_where(rule)]
        found = []
        if rule.count:
            events = sa.select(sa.literal_column("1", sa.Integer)).where(*mine).correlate(self.m)
            found.append(Probe.counting(events, rule.count, self.ctx.dialect))
        if rule.sum_ops:
            total, ops = self.event_sum(rule)
            found.append(Probe(sa.select(total.label("value")).where(*mine).correlate(self.m), ops, self.ctx.dialect))
        return found

    def probed_candidates(self, others: list[Rule], events: list[EventRule], trail: tuple[str, ...],
                          negated: bool) -> sa.ColumnElement[bool]:
        """PostgreSQL, for a segment's own rule: the members passing `others`, each probed for its
        events, as an array of ids computed once. The probes are LATERAL joins: as correlated
        subqueries they would keep the member scan out of parallel workers (lapsed_vip 0.39 ->
        0.26-0.30 s, benchmarks/README.md). Nested under `any` or `not`, the probes stay
        correlated, so that they run only for the members that reach them."""
        candidates = members_table.alias("candidates")
        inner = _Compiler(self.ctx, candidates, self.shared)
        source: sa.FromClause = candidates
        conditions = [inner.rule(item, trail, negated) for item in others]
        probes = [probe for item in events for probe in inner.probes(item)]
        for number, probe in enumerate(probes, 1):
            source, passes = probe.joined(source, f"probe_{number}")
            conditions += passes
        query = sa.select(candidates.c.id).select_from(source).where(*conditions)
        return self.m.c.id == sa.any_(sa.func.array(query.scalar_subquery()))

    def emails(self, rule: EmailRule) -> sa.ColumnElement[bool]:
        """Members by how many of our emails they received, opened or clicked (distinct sends)."""
        s = sends_table
        return self._grouped_membership(self.email_rows(rule), s.c.member_ref,
                                        sa.func.count(sa.distinct(s.c.send_id)), rule.count)

    def email_rows(self, rule: EmailRule) -> sa.Select[Any]:
        """The sends (with their members) that `rule` counts: one row per matching send or hit."""
        s, t, ctx = sends_table, tracking_events_table, self.ctx
        at = sa.literal(ctx.at, UTCDateTime())
        since = sa.literal(rule.within.before(ctx.at), UTCDateTime()) if rule.within else None
        if rule.action == "received":
            where = [s.c.state == "sent", s.c.sent_at <= at]
            if since is not None:
                where.append(s.c.sent_at >= since)
            query = sa.select(s.c.member_ref).where(*where)
        else:
            where = [t.c.kind == ("open" if rule.action == "opened" else "click"), t.c.occurred_at <= at]
            if since is not None:
                where.append(t.c.occurred_at >= since)
            if not rule.include_automated:
                where += [t.c.machine.is_(False), t.c.bot.is_(False)]
            query = sa.select(s.c.member_ref).select_from(t.join(s, s.c.send_id == t.c.send_id)).where(*where)
        if rule.flow:
            query = query.where(s.c.flow == rule.flow)
        if rule.step:  # a journey's send: occurrence key `<instance>/<step id>`
            query = query.where(s.c.occurrence_key.endswith(f"/{rule.step}", autoescape=True))
        return query

    def _aggregate_membership(self, where: list[Any], aggregate: sa.ColumnElement[Any],
                              ops: tuple[Op, ...]) -> sa.ColumnElement[bool]:
        """Members whose aggregate satisfies ops; members with no matching event count as 0."""
        e = events_table
        return self._grouped_membership(sa.select(e.c.member_ref).where(*where), e.c.member_ref, aggregate, ops)

    def _grouped_membership(self, query: sa.Select[Any], member_ref: sa.ColumnElement[Any],
                            aggregate: sa.ColumnElement[Any], ops: tuple[Op, ...]) -> sa.ColumnElement[bool]:
        """Members whose `aggregate` over `query`'s rows (grouped per member) satisfies `ops`;
        members with no rows count as 0, so `count: 0` becomes NOT IN the members with some."""
        holds = sa.and_(*(compare(aggregate, op, self.ctx.dialect) for op in ops))
        if self.ctx.members is not None:
            query = query.where(member_ref.in_(self.ctx.members))
        grouped = query.group_by(member_ref)
        if all(holds_for_number(Decimal(0), op) for op in ops):
            return self.m.c.id.not_in(grouped.having(sa.not_(holds)))
        if self.ctx.dialect == "postgresql":
            # `= ANY(ARRAY(...))`: the grouped members are computed once. As `IN (subquery)`,
            # PostgreSQL may put the aggregate under a parallel hash join whose every process
            # builds it again (frequent_buyers in benchmarks/README.md).
            return self.m.c.id == sa.any_(sa.func.array(grouped.having(holds).scalar_subquery()))
        return self.m.c.id.in_(grouped.having(holds))

    def event_value_op(self, condition: ValueRule, op: Op) -> sa.ColumnElement[bool]:
        e = events_table
        name = condition.path[0]
        if len(condition.path) == 1 and name in ("amount", "points", "currency"):
            column = self.money(e.c.amount) if name == "amount" else e.c[name]
            if condition.type == "number" and self.ctx.dialect == "sqlite":
                op = Op(op.name, _floats(op.value))
            return compare(column, op, self.ctx.dialect)
        return self.value_op(e.c.properties, condition, op)


@dataclass(frozen=True)
class Probe:
    """An aggregate over one member's matching events (an index range scan per member) and the
    operators it must meet. A count that only has to reach N stops at the Nth event, and any
    other count stops one past the largest number it is compared with."""

    value: sa.Select[Any]  # one row: the aggregate, as `value`; for `at_least`, the Nth event
    ops: tuple[Op, ...]
    dialect: str
    at_least: int | None = None

    @classmethod
    def counting(cls, events: sa.Select[Any], ops: tuple[Op, ...], dialect: str) -> Probe:
        if all(op.name in ("gt", "gte") for op in ops):
            need = max(int(_floor(op.value)) + 1 if op.name == "gt" else int(_ceil(op.value)) for op in ops)
            return cls(events.offset(max(need, 1) - 1).limit(1), ops, dialect, at_least=need)
        bounds = [v for op in ops for v in (op.value if isinstance(op.value, tuple) else (op.value,))]
        capped = events.limit(max(int(_floor(max(bounds))) + 1, 1)).subquery("capped")
        return cls(sa.select(sa.func.count().label("value")).select_from(capped), ops, dialect)

    def condition(self) -> sa.ColumnElement[bool]:
        """This member's probe as a condition (a correlated subquery)."""
        if self.at_least is not None:
            return sa.exists(self.value) if self.at_least > 0 else sa.true()
        value = self.value.scalar_subquery()
        return sa.and_(*(compare(value, op, self.dialect) for op in self.ops))

    def joined(self, source: sa.FromClause, name: str) -> tuple[sa.FromClause, list[sa.ColumnElement[bool]]]:
        """`source` LATERAL-joined to this probe, and the conditions its value must meet."""
        if self.at_least is not None and self.at_least <= 0:
            return source, []
        probe = self.value.lateral(name)
        passes = [] if self.at_least is not None else [compare(probe.c.value, op, self.dialect) for op in self.ops]
        return source.join(probe, sa.true()), passes


# -- shared helpers (also used by the reference evaluator) ----------------------------------------

def compare(column: sa.ColumnElement[Any], op: Op, dialect: str) -> sa.ColumnElement[bool]:
    """A comparison operator applied to a column expression; values bound as parameters."""
    value = op.value
    if op.name in ("is_set", "is_null"):
        return _is_set(column, op)
    if op.name == "eq":
        return column == value
    if op.name == "ne":
        return column != value
    if op.name == "gt":
        return column > value
    if op.name == "gte":
        return column >= value
    if op.name == "lt":
        return column < value
    if op.name == "lte":
        return column <= value
    if op.name == "between":
        return sa.and_(column >= value[0], column <= value[1])
    if op.name == "in":
        return column.in_(list(value))
    if op.name == "not_in":
        return column.not_in(list(value))
    if op.name == "contains":  # case-sensitive on both databases (LIKE is not, on SQLite)
        position = sa.func.instr(column, value) if dialect == "sqlite" else sa.func.strpos(column, value)
        return position > 0
    if op.name == "starts_with":
        return sa.func.substr(column, 1, len(value)) == value
    raise ValueError(f"operator {op.name} is not a comparison")


def holds_for_number(number: Decimal, op: Op) -> bool:
    value = op.value
    return {
        "eq": lambda: number == value, "ne": lambda: number != value, "gt": lambda: number > value,
        "gte": lambda: number >= value, "lt": lambda: number < value, "lte": lambda: number <= value,
        "between": lambda: value[0] <= number <= value[1],
    }[op.name]()


def tiers_matching(ladder: TierLadder, op: Op) -> list[str]:
    names = list(ladder.names)
    if op.name == "eq":
        return [op.value]
    if op.name == "ne":
        return [n for n in names if n != op.value]
    if op.name == "in":
        return list(op.value)
    if op.name == "not_in":
        return [n for n in names if n not in op.value]
    rank = ladder.rank(op.value)
    pick = {"at_least": lambda r: r >= rank, "at_most": lambda r: r <= rank,
            "above": lambda r: r > rank, "below": lambda r: r < rank}[op.name]
    return [n for i, n in enumerate(names) if pick(i)]


def anniversary_keys(day: date) -> set[int]:
    """The month-day keys (month*100 + day) whose anniversary falls on `day`: 28 February also
    takes 29 February in common years."""
    keys = {day.month * 100 + day.day}
    if day.month == 2 and day.day == 28 and anniversary_on(date(2000, 2, 29), day.year) == day:
        keys.add(229)
    return keys


def month_day_key(column: sa.ColumnElement[Any], dialect: str) -> sa.ColumnElement[int]:
    """month*100 + day of a date column, written exactly as the expression indexes of
    migration 0003 are, so that the database uses them (constants are literals, not parameters)."""
    if dialect == "sqlite":
        return sa.cast(sa.func.strftime(sa.literal_column("'%m%d'"), column), sa.Integer)
    return sa.extract("month", column) * sa.literal_column("100") + sa.extract("day", column)


def as_date(value: Any, ctx: Context) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    return value.resolve(ctx.at, ctx.zone).astimezone(ctx.zone).date()


def _ordered(column: sa.ColumnElement[Any], op: Op, bound: Any) -> sa.ColumnElement[bool]:
    """before / after / since / between (and is_set / is_null) against values made by `bound`."""
    if op.name in ("is_set", "is_null"):
        return _is_set(column, op)
    if op.name == "between":
        return sa.and_(column >= bound(op.value[0]), column <= bound(op.value[1]))
    comparisons = {"before": operator.lt, "after": operator.gt, "since": operator.ge}
    return comparisons[op.name](column, bound(op.value))


def _is_set(column: sa.ColumnElement[Any], op: Op) -> sa.ColumnElement[bool]:
    wants_set = op.value if op.name == "is_set" else not op.value
    return column.is_not(None) if wants_set else column.is_(None)


def _never_null(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[bool]:
    """Turn SQL's unknown (a comparison with NULL) into false, so `not` means what people expect."""
    return sa.func.coalesce(condition, sa.false())


def _floats(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, tuple):
        return tuple(_floats(v) for v in value)
    return value


def _ceil(value: Decimal) -> Decimal:
    return value.to_integral_value(rounding="ROUND_CEILING")


def _floor(value: Decimal) -> Decimal:
    return value.to_integral_value(rounding="ROUND_FLOOR")

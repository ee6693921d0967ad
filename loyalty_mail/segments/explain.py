"""Why one member is not in a segment: the first rule that fails, with the member's value.

Every sub-rule is decided by the database through the compiler, restricted to the one member,
so an explanation never disagrees with the segment itself; this module only finds the rule
that decides and words it:

    not in segment lapsed_90_days: days_since_last_purchase is 10 (last_purchase_at 2026-11-20),
    the rule needs at least 90
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from ..models import events_table, members_table, point_lots_table, sends_table
from .compiler import Context, _Compiler
from .fields import NPS_CATEGORIES
from .spec import (All, AnyOf, EmailRule, EventRule, FieldRule, Not, Op, Rule, Segment, SegmentRef, TopicRule,
                   ValueRule)
from .timeexpr import Duration, TimeValue

__all__ = ["why_not"]


def why_not(conn: sa.Connection, segment: Segment, ctx: Context, member_ref: int) -> str | None:
    """None when the member is in `segment` at ctx.at; otherwise which rule keeps them out."""
    explainer = _Explainer(conn, ctx, member_ref)
    if explainer.holds(segment.rule):
        return None
    return f"not in segment {segment.name}: {explainer.fails(segment.rule)}"


# One condition of a leaf rule: the rule with that condition alone, what the member has, and
# what the condition asks for.
_Part = tuple[Rule, str, str]


class _Explainer:
    def __init__(self, conn: sa.Connection, ctx: Context, member_ref: int) -> None:
        self.conn, self.ctx, self.ref = conn, ctx, member_ref
        self.compiler = _Compiler(ctx)

    def holds(self, rule: Rule) -> bool:
        """Does `rule` hold for this member? Decided by the compiled SQL, never here."""
        m = members_table
        if isinstance(rule, EventRule):  # a probe of this member's events, not every member's
            condition = self.compiler.event(rule, correlated=True)
        else:
            condition = self.compiler.rule(rule, (), negated=False)
        query = sa.select(m.c.id).where(m.c.id == self.ref, condition)
        return self.conn.execute(query).first() is not None

    def fails(self, rule: Rule) -> str:
        """Why `rule`, which does not hold, does not."""
        if isinstance(rule, All):
            failing = next((item for item in rule.items if not self.holds(item)), None)
            # Each item holds alone but not all together cannot happen; say so rather than guess.
            return self.fails(failing) if failing is not None else "the rules do not hold together"
        if isinstance(rule, AnyOf):
            reasons = [self.fails(item) for item in rule.items]
            if len(reasons) == 1:
                return reasons[0]
            return "none of the alternatives holds: " + "; ".join(
                f"({n}) {reason}" for n, reason in enumerate(reasons, 1))
        if isinstance(rule, Not):
            return self.excluded(rule.item)
        if isinstance(rule, SegmentRef):
            return f"not in segment {rule.name}: {self.fails(self.ctx.catalog.get(rule.name).rule)}"
        parts = self.parts(rule)
        value, needs = next(((v, n) for sub, v, n in parts if not self.holds(sub)),
                            (parts[0][1], " and ".join(n for _, _, n in parts)))
        return f"{value}, the rule needs {needs}"

    def excluded(self, rule: Rule) -> str:
        """Why `not: rule` fails: `rule` holds for this member."""
        if isinstance(rule, (FieldRule, ValueRule, EventRule, EmailRule, TopicRule)):
            parts = self.parts(rule)
            values = list(dict.fromkeys(v for _, v, _ in parts))
            return f"{'; '.join(values)}, the rule needs not {' and '.join(n for _, _, n in parts)}"
        if isinstance(rule, SegmentRef):
            return f"in segment {rule.name}, the rule needs not in segment {rule.name}"
        return f"the rule needs the opposite of: {self.because(rule)}"

    def because(self, rule: Rule) -> str:
        """Why `rule`, which holds, holds."""
        if isinstance(rule, All):
            return "; ".join(self.because(item) for item in rule.items)
        if isinstance(rule, AnyOf):
            holding = next((item for item in rule.items if self.holds(item)), rule.items[0])
            return self.because(holding)
        if isinstance(rule, Not):
            return self.fails(rule.item)
        if isinstance(rule, SegmentRef):
            return f"in segment {rule.name}"
        parts = self.parts(rule)
        values = list(dict.fromkeys(v for _, v, _ in parts))
        return f"{'; '.join(values)}, matching {' and '.join(n for _, _, n in parts)}"

    # -- leaf rules: one part per condition ----------------------------------------------------

    def parts(self, rule: Rule) -> list[_Part]:
        if isinstance(rule, FieldRule) and rule.field.kind == "points_expiring":
            within = next(op for op in rule.ops if op.name == "within")
            value = self.expiring_value(rule, within.value)
            return [(replace(rule, ops=(within, op)), value,
                     f"{needs(op, 'number')} points expiring within the next {within.value}")
                    for op in rule.ops if op is not within]
        if isinstance(rule, FieldRule):
            return [(replace(rule, ops=(op,)), self.field_value(rule, op), needs(op, rule.field.kind))
                    for op in rule.ops]
        if isinstance(rule, ValueRule):
            value = self.attribute_value(rule)
            return [(replace(rule, ops=(op,)), value, needs(op, rule.type)) for op in rule.ops]
        if isinstance(rule, EventRule):
            return self.event_parts(rule)
        if isinstance(rule, EmailRule):
            value = self.email_value(rule)
            return [(replace(rule, count=(op,)), value, needs(op, "count")) for op in rule.count]
        if isinstance(rule, TopicRule):
            receives = self.holds(rule)
            return [(rule, f"{'subscribed' if receives else 'not subscribed'} to {rule.topic}",
                     f"subscribed to {rule.topic}")]
        raise TypeError(f"not a leaf rule: {rule!r}")

    def scalar(self, expression: sa.ColumnElement[Any]) -> Any:
        m = members_table
        return self.conn.execute(sa.select(expression).where(m.c.id == self.ref)).scalar()

    def field_value(self, rule: FieldRule, op: Op) -> str:
        spec, m, ctx = rule.field, members_table, self.ctx
        if spec.kind == "days_since":
            assert spec.column is not None
            moment = self.scalar(m.c[spec.column])
            if moment is None:
                return f"{spec.name} is not set ({spec.column} is not set)"
            days = int((ctx.at - moment).total_seconds() // 86400)
            return f"{spec.name} is {days} ({spec.column} {_local_date(moment, ctx)})"
        if spec.kind in ("time", "date"):
            assert spec.column is not None
            moment = self.scalar(m.c[spec.column])
            if moment is None:
                return f"{spec.name} is not set"
            if op.name == "anniversary":
                zone = ZoneInfo(self.scalar(m.c.timezone) or ctx.default_timezone)
                day = self.scalar(m.c.joined_on) if spec.kind == "time" else moment
                return (f"{spec.name} is {day.isoformat()} (the member's local date is "
                        f"{ctx.at.astimezone(zone).date().isoformat()})")
            if spec.kind == "date":
                return f"{spec.name} is {moment.isoformat()}"
            return f"{spec.name} is {_local_date(moment, ctx)} ({_ago(moment, ctx.at)})"
        if spec.kind == "category":
            score = self.scalar(m.c.nps_score)
            if score is None:
                return f"{spec.name} is not set (no NPS answer)"
            category = next(name for name, (low, high) in NPS_CATEGORIES.items() if low <= score <= high)
            return f"{spec.name} is {category} (nps_score {score})"
        value = self.scalar(self.compiler.column_for(spec.name))
        return f"{spec.name} is {'not set' if value is None else _shown(value, spec.kind)}"

    def expiring_value(self, rule: FieldRule, within: Duration) -> str:
        lots = point_lots_table
        total = self.conn.execute(sa.select(sa.func.coalesce(sa.func.sum(lots.c.remaining), 0))
                                  .where(lots.c.member_ref == self.ref, *self.compiler.expiring_window(rule))
                                  ).scalar_one()
        nearest = self.scalar(self.compiler.column_for("next_points_expiry_at"))
        after = f", the next on {_local_date(nearest, self.ctx)}" if nearest is not None and total else ""
        return f"points_expiring is {_number(total)} within the next {within}{after}"

    def attribute_value(self, rule: ValueRule) -> str:
        label = "attributes." + ".".join(rule.path)
        value = self.scalar(self.compiler.json_value(members_table.c.attributes, rule.path, rule.type))
        if value is None:
            return f"{label} is not set" + ("" if rule.type == "text" else f" as a {rule.type}")
        return f"{label} is {_shown(value, 'bool' if rule.type == 'boolean' else rule.type)}"

    def event_parts(self, rule: EventRule) -> list[_Part]:
        e = events_table
        where = [e.c.member_ref == self.ref, *self.compiler.event_where(rule)]
        scope = _event_scope(rule)
        parts: list[_Part] = []
        if rule.count:
            count = self.conn.execute(sa.select(sa.func.count()).where(*where)).scalar_one()
            value = f"{count:,} {rule.type} event{'' if count == 1 else 's'}{scope}"
            parts += [(replace(rule, count=(op,), sum_ops=()), value, needs(op, "count")) for op in rule.count]
        if rule.sum_ops:
            total, _ = self.compiler.event_sum(rule)
            summed = self.conn.execute(sa.select(total).where(*where)).scalar_one()
            value = f"the {rule.sum_of} of {rule.type} events{scope} sums to {_number(summed)}"
            parts += [(replace(rule, count=(), sum_ops=(op,)), value, f"a sum of {needs(op, 'number')}")
                      for op in rule.sum_ops]
        return parts

    def email_value(self, rule: EmailRule) -> str:
        s = sends_table
        rows = self.compiler.email_rows(rule)
        count = self.conn.execute(rows.with_only_columns(sa.func.count(sa.distinct(s.c.send_id)))
                                  .where(s.c.member_ref == self.ref)).scalar_one()
        what = f"{rule.action} {count:,} email{'' if count == 1 else 's'}"
        if rule.flow:
            what += f" of flow {rule.flow}"
        if rule.within:
            what += f" within the last {rule.within}"
        if rule.action != "received" and not rule.include_automated:
            what += " (people only)"
        return what


def _event_scope(rule: EventRule) -> str:
    """Which events a rule counts, in words: ` within the last 30 days where store equal to 'Q1'`."""
    scope = ""
    if rule.within:
        scope += f" within the last {rule.within}"
    if rule.since:
        scope += f" since {rule.since}"
    if rule.until:
        scope += f" until {rule.until}"
    conditions = [f"{'.'.join(c.path)} {needs(op, c.type)}" for c in rule.where for op in c.ops]
    if conditions:
        scope += " where " + " and ".join(conditions)
    return scope


_WORDS = {"eq": "exactly", "ne": "other than", "gt": "more than", "gte": "at least", "lt": "less than",
          "lte": "at most", "in": "one of", "not_in": "none of", "contains": "containing",
          "starts_with": "starting with", "at_least": "at least", "at_most": "at most",
          "above": "above", "below": "below", "before": "before", "after": "after", "since": "since",
          "older_than": "older than"}
_NUMERIC = ("number", "count", "days_since", "derived_number")


def needs(op: Op, kind: str) -> str:
    """What an operator asks for, in words: `at least 90`, `before 90 days ago`, `one of gold, platinum`."""
    name, value = op.name, op.value
    if name in ("is_set", "is_null"):
        return "a value" if value == (name == "is_set") else "no value"
    if name == "anniversary":
        return ("its anniversary today (the member's local date)" if value == 0
                else f"its anniversary within the next {value} days")
    if name == "within":
        return f"within the last {value}"
    if name == "within_next":
        return f"within the next {value}"
    if name == "between":
        return f"between {_shown(value[0], kind)} and {_shown(value[1], kind)}"
    if name in ("in", "not_in"):
        return f"{_WORDS[name]} {', '.join(_shown(v, kind) for v in value)}"
    if name == "eq" and kind not in _NUMERIC:
        return _shown(value, kind)
    return f"{_WORDS[name]} {_shown(value, kind)}"


def _shown(value: Any, kind: str) -> str:
    """A value as a person reads it: numbers with separators, text quoted, dates as ISO."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if kind == "bool" and value in (0, 1):
        return "true" if value else "false"
    if isinstance(value, (Decimal, int, float)):
        return _number(value)
    if isinstance(value, (TimeValue, Duration)):
        return str(value)
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if kind == "text":
        return f"'{value}'"
    return str(value)


def _number(value: Any) -> str:
    rounded = Decimal(str(value)).quantize(Decimal("0.01"))
    if rounded == rounded.to_integral_value():
        return f"{int(rounded):,}"
    return f"{rounded:,}"


def _local_date(moment: datetime, ctx: Context) -> str:
    return moment.astimezone(ctx.zone).date().isoformat()


def _ago(moment: datetime, at: datetime) -> str:
    seconds = int((at - moment).total_seconds())
    later = seconds < 0
    seconds = abs(seconds)
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = seconds // size
            span = f"{n} {unit}{'' if n == 1 else 's'}"
            return f"{span} later" if later else f"{span} ago"
    return "at that instant"

"""The segment rules evaluated in plain Python, one member at a time: the oracle for the compiler.

Written from the rules' documented meaning, not from the SQL, and kept deliberately simple and
slow. Tests compare its answers with the compiled SQL on random members, events, rules and
instants; the naive benchmark path uses it too. Never used to send anything.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from loyalty_mail.segments.compiler import Context
from loyalty_mail.segments.fields import NPS_CATEGORIES
from loyalty_mail.segments.spec import All, AnyOf, EmailRule, EventRule, FieldRule, Not, Op, Rule, SegmentRef, ValueRule
from loyalty_mail.segments.timeexpr import TimeValue, anniversary_on

_NUMERIC_TEXT = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")


@dataclass
class MemberFacts:
    """A member as the rules see it (the columns of the members table)."""

    id: int
    member_id: str
    email: str
    tier: str
    first_name: str | None = None
    last_name: str | None = None
    locale: str | None = None
    timezone: str | None = None
    points: int = 0
    total_spend: Decimal = Decimal(0)
    purchase_count: int = 0
    joined_at: datetime | None = None
    joined_on: date | None = None
    last_purchase_at: datetime | None = None
    unsubscribed_at: datetime | None = None
    birthday: date | None = None
    nps_score: int | None = None
    subscribed: bool = True
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass
class EventFacts:
    member_ref: int
    type: str
    occurred_at: datetime
    amount: Decimal | None = None
    currency: str | None = None
    points: int | None = None
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass
class HitFacts:
    """Something tracked on one of our emails (a tracking_events row)."""

    kind: str  # open | click | delivered | bounce | ...
    occurred_at: datetime
    machine: bool = False
    bot: bool = False


@dataclass
class EmailFacts:
    """One of our emails to a member (a sends row) and what was tracked on it."""

    member_ref: int
    send_id: str
    flow: str
    state: str
    sent_at: datetime | None = None
    hits: list[HitFacts] = field(default_factory=list)
    occurrence_key: str = ""


def matching_ids(rule: Rule, members: Iterable[MemberFacts], events: Iterable[EventFacts], ctx: Context,
                 emails: Iterable[EmailFacts] = ()) -> set[int]:
    by_member: dict[int, list[EventFacts]] = {}
    for event in events:
        by_member.setdefault(event.member_ref, []).append(event)
    mail: dict[int, list[EmailFacts]] = {}
    for email in emails:
        mail.setdefault(email.member_ref, []).append(email)
    return {m.id for m in members if evaluate(rule, m, by_member.get(m.id, []), ctx, mail.get(m.id, []))}


def evaluate(rule: Rule, member: MemberFacts, events: list[EventFacts], ctx: Context,
             emails: Sequence[EmailFacts] = ()) -> bool:
    if isinstance(rule, All):
        return all(evaluate(item, member, events, ctx, emails) for item in rule.items)
    if isinstance(rule, AnyOf):
        return any(evaluate(item, member, events, ctx, emails) for item in rule.items)
    if isinstance(rule, Not):
        return not evaluate(rule.item, member, events, ctx, emails)
    if isinstance(rule, SegmentRef):
        return evaluate(ctx.catalog.get(rule.name).rule, member, events, ctx, emails)
    if isinstance(rule, FieldRule):
        return all(_field(rule, op, member, ctx) for op in rule.ops)
    if isinstance(rule, ValueRule):
        value = _json_value(member.attributes, rule.path, rule.type)
        return all(_compare(value, op) for op in rule.ops)
    if isinstance(rule, EventRule):
        return _event(rule, events, ctx)
    if isinstance(rule, EmailRule):
        return _emails(rule, emails, ctx)
    raise TypeError(rule)


def _field(rule: FieldRule, op: Op, member: MemberFacts, ctx: Context) -> bool:
    spec = rule.field
    name = spec.name
    if op.name == "anniversary":
        original = member.joined_on if name == "joined_at" else member.birthday
        if original is None:
            return False
        today = ctx.at.astimezone(ZoneInfo(member.timezone or ctx.default_timezone)).date()
        for k in range(op.value + 1):
            target = today + timedelta(days=k)
            if anniversary_on(original, target.year) == target and original.year < target.year:
                return True
        return False
    if spec.kind == "days_since":
        moment = getattr(member, spec.column)
        if op.name in ("is_set", "is_null"):
            return _compare(moment, op)
        if moment is None:
            return False
        return _compare(Decimal(math.floor((ctx.at - moment) / timedelta(days=1))), op)
    if spec.kind == "time":
        return _time(getattr(member, spec.column), op, ctx)
    if spec.kind == "date":
        return _date(member.birthday, op, ctx)
    if spec.kind == "tier":
        rank = ctx.ladder.names.index(member.tier)
        value = op.value
        if op.name in ("at_least", "at_most", "above", "below"):
            other = ctx.ladder.names.index(value)
            return {"at_least": rank >= other, "at_most": rank <= other, "above": rank > other,
                    "below": rank < other}[op.name]
        return _compare(member.tier, op)
    if spec.kind == "category":
        category = next((c for c, (lo, hi) in NPS_CATEGORIES.items()
                         if member.nps_score is not None and lo <= member.nps_score <= hi), None)
        return _compare(category, op)
    return _compare(_member_value(name, member, ctx), op)


def _member_value(name: str, member: MemberFacts, ctx: Context) -> Any:
    if name == "locale":
        return member.locale or ctx.default_locale
    if name == "timezone":
        return member.timezone or ctx.default_timezone
    if name == "average_order_value":
        return float(member.total_spend) / member.purchase_count if member.purchase_count > 0 else None
    if name == "clv":
        years = 1.0
        if member.joined_at is not None:
            days = (ctx.at - member.joined_at) / timedelta(days=1)
            years = max(days / 365.25, 1.0) if days >= 365.25 else 1.0
        return float(member.total_spend) * float(ctx.clv_years) / years
    if name == "points_to_next_tier":
        names = ctx.ladder.names
        rank = names.index(member.tier)
        if rank + 1 >= len(names):
            return None
        value = member.points if ctx.ladder.basis == "points" else member.total_spend
        return ctx.ladder.levels[rank + 1].threshold - Decimal(value)
    return getattr(member, name)


def _compare(value: Any, op: Op) -> bool:
    """One operator on one value. A missing value satisfies only is_null / is_set: false."""
    if op.name == "is_set":
        return (value is not None) == op.value
    if op.name == "is_null":
        return (value is None) == op.value
    if value is None:
        return False
    target = op.value
    if isinstance(value, float):
        target = _as_float(target)
    checks = {
        "eq": lambda: value == target, "ne": lambda: value != target,
        "gt": lambda: value > target, "gte": lambda: value >= target,
        "lt": lambda: value < target, "lte": lambda: value <= target,
        "between": lambda: target[0] <= value <= target[1],
        "in": lambda: value in target, "not_in": lambda: value not in target,
        "contains": lambda: target in value, "starts_with": lambda: value.startswith(target),
    }
    return checks[op.name]()


def _as_float(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, tuple):
        return tuple(_as_float(v) for v in value)
    return value


def _resolve(value: TimeValue, ctx: Context) -> datetime:
    return value.resolve(ctx.at, ZoneInfo(ctx.default_timezone))


def _time(moment: datetime | None, op: Op, ctx: Context) -> bool:
    if moment is not None and op.name == "within":
        return op.value.before(ctx.at) <= moment <= ctx.at
    if moment is not None and op.name == "older_than":
        return moment < op.value.before(ctx.at)
    if moment is not None and op.name == "within_next":
        return ctx.at <= moment <= op.value.after(ctx.at)
    return _ordered(moment, op, lambda value: _resolve(value, ctx))


def _as_date(value: Any, ctx: Context) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    zone = ZoneInfo(ctx.default_timezone)
    return _resolve(value, ctx).astimezone(zone).date()


def _date(day: date | None, op: Op, ctx: Context) -> bool:
    return _ordered(day, op, lambda value: _as_date(value, ctx))


def _ordered(value: Any, op: Op, convert: Any) -> bool:
    """before / after / since / between on a time or date; a missing value satisfies none of them."""
    if op.name in ("is_set", "is_null"):
        return _compare(value, op)
    if value is None:
        return False
    if op.name == "between":
        return convert(op.value[0]) <= value <= convert(op.value[1])
    return {"before": value < convert(op.value), "after": value > convert(op.value),
            "since": value >= convert(op.value)}[op.name]


def _json_value(document: Any, path: tuple[str, ...], kind: str) -> Any:
    value = document
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    if kind == "text":
        return value if isinstance(value, str) else None
    if kind == "number":
        if isinstance(value, bool):
            return None
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str) and _NUMERIC_TEXT.match(value):
            return float(value)
        return None
    if isinstance(value, bool):
        return value
    return {"true": True, "false": False}.get(value) if isinstance(value, str) else None


def _event(rule: EventRule, events: list[EventFacts], ctx: Context) -> bool:
    chosen = []
    for event in events:
        if event.type != rule.type or event.occurred_at > ctx.at:
            continue
        if rule.within and event.occurred_at < rule.within.before(ctx.at):
            continue
        if rule.since and event.occurred_at < _resolve(rule.since, ctx):
            continue
        if rule.until and event.occurred_at > _resolve(rule.until, ctx):
            continue
        if all(all(_compare(_event_value(event, c), op) for op in c.ops) for c in rule.where):
            chosen.append(event)
    if rule.count and not all(_compare(Decimal(len(chosen)), op) for op in rule.count):
        return False
    if rule.sum_ops:
        values = [_event_value(e, ValueRule((rule.sum_of,), "number", (), None)) for e in chosen]  # type: ignore[arg-type]
        total = float(sum(v for v in values if v is not None))
        if not all(_compare(total, op) for op in rule.sum_ops):
            return False
    return True


def _emails(rule: EmailRule, emails: Sequence[EmailFacts], ctx: Context) -> bool:
    """How many of our emails the member received (sent by `at`), or opened or clicked (at least
    once by `at`; people only unless include_automated), within the window and flow."""
    since = rule.within.before(ctx.at) if rule.within else None

    def in_window(instant: datetime | None) -> bool:
        return instant is not None and instant <= ctx.at and (since is None or instant >= since)

    counted = 0
    for email in emails:
        if rule.flow and email.flow != rule.flow:
            continue
        if rule.step and not email.occurrence_key.endswith(f"/{rule.step}"):
            continue
        if rule.action == "received":
            counted += email.state == "sent" and in_window(email.sent_at)
            continue
        kind = "open" if rule.action == "opened" else "click"
        counted += any(hit.kind == kind and in_window(hit.occurred_at)
                       and (rule.include_automated or not (hit.machine or hit.bot)) for hit in email.hits)
    return all(_compare(Decimal(counted), op) for op in rule.count)


def _event_value(event: EventFacts, condition: ValueRule) -> Any:
    name = condition.path[0]
    if len(condition.path) == 1 and name in ("amount", "points", "currency"):
        value = getattr(event, name)
        if value is None:
            return None
        return value if name == "currency" else float(value)
    return _json_value(event.properties, condition.path, condition.type)

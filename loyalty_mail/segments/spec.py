"""Segment files -> typed rules, with every mistake reported at its file:line:column.

A segment file holds `name` (optional; the file name), `description`, and one rule. A rule is a
mapping with one key: `all: [rules]`, `any: [rules]`, `not: rule`, `segment: other`,
`subscribed_to: topic`,
`event: {...}` (or its shorthand `purchases: {...}`), `attributes.PATH: ...`, or a field name
from fields.FIELDS with either a value (equality; a list means `in`) or a mapping of operators
that must all hold.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Union

from ..config import TierSettings
from ..errors import ConfigError, Location, Problem, shown
from ..tiers import TierLadder
from ..yaml_source import PathKey, YamlDocument, load_yaml_file
from .fields import (
    ATTRIBUTE_TYPES,
    EVENT_COLUMNS,
    EVENT_KEYS,
    FIELDS,
    NPS_CATEGORIES,
    NUMBER_OPS,
    TEXT_OPS,
    FieldSpec,
)
from .timeexpr import MAX_DAYS, Duration, TimeValue, parse_date, parse_duration, parse_time

SEGMENT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
PATH_PART = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_LIST = 1000
MAX_DEPTH = 32
# What one segment may hold, counting every segment it uses (segment: NAME) once; see the README's
# segment reference. They keep every segment query within the databases' limits (65,535 bound
# parameters on PostgreSQL, 32,766 on SQLite) and its compile time small.
MAX_CONDITIONS = 500
MAX_EVENT_CONDITIONS = 50
MAX_SEGMENTS_USED = 50
MAX_WEIGHT = 20_000
# Every use of a segment repeats its conditions in the query the database plans (SQLite expands
# each reference to a common table expression: segments that use one segment twice, nested, double
# at each level); counted per use, a segment's conditions stay below this.
MAX_EXPANDED_CONDITIONS = 2_000
ANNIVERSARY_WEIGHT = 2000


@dataclass(frozen=True)
class Op:
    """One operator and its checked value, e.g. gte 3, within 30 days, in [gold, platinum]."""

    name: str
    value: Any


@dataclass(frozen=True)
class FieldRule:
    field: FieldSpec
    ops: tuple[Op, ...]
    location: Location


@dataclass(frozen=True)
class ValueRule:
    """A condition on a JSON value: a custom attribute, or an event property/column."""

    path: tuple[str, ...]
    type: str  # text | number | boolean
    ops: tuple[Op, ...]
    location: Location


@dataclass(frozen=True)
class EventRule:
    type: str
    count: tuple[Op, ...]
    sum_of: str | None  # amount | points | a numeric property
    sum_ops: tuple[Op, ...]
    within: Duration | None
    since: TimeValue | None
    until: TimeValue | None
    where: tuple[ValueRule, ...]
    location: Location


@dataclass(frozen=True)
class EmailRule:
    """Engagement with our emails: received, opened or clicked (of one flow or any), counted per
    email, within a window; people only unless `include_automated` (machine opens, bot clicks)."""

    action: str  # received | opened | clicked
    flow: str | None
    count: tuple[Op, ...]
    within: Duration | None
    include_automated: bool
    location: Location
    step: str | None = None  # a journey's step id: only the emails that step sent
    # where `flow:` and `step:` are written, for errors found once every journey is read
    flow_at: Location | None = dataclass_field(default=None, compare=False)
    step_at: Location | None = dataclass_field(default=None, compare=False)


EMAIL_ACTIONS = ("received", "opened", "clicked")
EMAIL_KEYS = ("action", "flow", "step", "count", "within", "include_automated")


@dataclass(frozen=True)
class SegmentRef:
    name: str
    location: Location


@dataclass(frozen=True)
class TopicRule:
    """The member receives a topic: subscribed to email and to the topic (config.yaml `topics`)."""

    topic: str
    location: Location


@dataclass(frozen=True)
class All:
    items: tuple[Rule, ...]


@dataclass(frozen=True)
class AnyOf:
    items: tuple[Rule, ...]


@dataclass(frozen=True)
class Not:
    item: Rule


Rule = Union[FieldRule, ValueRule, EventRule, EmailRule, TopicRule, SegmentRef, All, AnyOf, Not]


@dataclass(frozen=True)
class Segment:
    name: str
    description: str
    rule: Rule
    file: str
    line: int = 1


class _Invalid(Exception):
    """Raised inside the parser to abandon one rule; the problem is already recorded."""


class _TooLarge(Exception):
    """Raised inside the parser to abandon the whole segment at a limit; the problem is recorded."""


class SegmentParser:
    """Parses one segment file's document; problems accumulate in `problems`."""

    def __init__(self, doc: YamlDocument, ladder: TierLadder, topics: tuple[str, ...] | None = None):
        self.doc = doc
        self.ladder = ladder
        self.topics = topics  # None: any topic name (checked where the topics are known)
        self.problems: list[Problem] = []
        self.conditions = 0
        self.event_conditions = 0

    def fail(self, path: PathKey, message: str, *, key: bool = False) -> _Invalid:
        self.problems.append(Problem(self.doc.locate(path, key=key), message))
        return _Invalid()

    def segment(self, stem: str) -> Segment | None:
        data = self.doc.value
        if not isinstance(data, dict):
            self.fail((), "a segment file is a mapping with name, description and one rule")
            return None
        name = data.get("name", stem)
        if not isinstance(name, str) or not SEGMENT_NAME.match(name):
            self.fail(("name",), f"segment names are lowercase letters, digits and _ (found {shown(name)})")
        elif name != stem:
            self.fail(("name",), f"name '{name}' differs from the file name '{stem}'; make them the same")
        description = data.get("description", "")
        if not isinstance(description, str):
            self.fail(("description",), "description must be text")
            description = ""
        rule_keys = [k for k in data if k not in ("name", "description")]
        if not rule_keys:
            self.fail((), "the segment has no rule: add all:, any:, not:, or a condition such as "
                          "tier: {at_least: gold}")
            return None
        if len(rule_keys) > 1:
            self.fail((rule_keys[1],), "a segment has one rule at the top; combine several with all: "
                                       f"or any: (found {', '.join(map(str, rule_keys))})", key=True)
            return None
        try:
            rule = self.rule({rule_keys[0]: data[rule_keys[0]]}, (), depth=0)
        except (_Invalid, _TooLarge):
            return None
        return Segment(name=str(name), description=description, rule=rule, file=self.doc.file,
                       line=self.doc.locate((rule_keys[0],), key=True).line)

    def counted(self, path: PathKey, key: str) -> None:
        """Count one condition; past the limits the whole segment is refused."""
        self.conditions += 1
        if key in ("event", "purchases", "emails", "points_expiring"):
            self.event_conditions += 1
        if self.conditions > MAX_CONDITIONS:
            self.fail(path, f"more than {MAX_CONDITIONS} conditions in one segment; use fewer (an in: "
                            "list instead of many eq:, or a segment that others use)", key=True)
            raise _TooLarge()
        if self.event_conditions > MAX_EVENT_CONDITIONS:
            self.fail(path, f"more than {MAX_EVENT_CONDITIONS} event:, purchases: and emails: conditions "
                            "in one segment; each one scans events, use fewer", key=True)
            raise _TooLarge()

    # -- rules -----------------------------------------------------------------------------
    def rule(self, value: Any, path: PathKey, depth: int) -> Rule:
        if depth > MAX_DEPTH:
            raise self.fail(path, f"rules are nested more than {MAX_DEPTH} deep")
        if not isinstance(value, dict) or len(value) != 1:
            raise self.fail(path, "each rule is a mapping with one key, e.g. - tier: {at_least: gold} "
                                  f"(found {_describe(value)})")
        (key, body), = value.items()
        here = path + (key,)
        if not isinstance(key, str):
            raise self.fail(here, f"rule names are text, found {shown(key)}", key=True)
        if key in ("all", "any"):
            if not isinstance(body, list) or not body:
                raise self.fail(here, f"{key}: takes a non-empty list of rules")
            items, failed = [], False
            for i, item in enumerate(body):
                try:
                    items.append(self.rule(item, here + (i,), depth + 1))
                except _Invalid:
                    failed = True
            if failed:
                raise _Invalid()
            return All(tuple(items)) if key == "all" else AnyOf(tuple(items))
        if key == "not":
            return Not(self.rule(body, here, depth + 1))
        self.counted(here, key)
        if key == "segment":
            if not isinstance(body, str) or not SEGMENT_NAME.match(body):
                raise self.fail(here, f"segment: takes a segment name, found {shown(body)}")
            return SegmentRef(body, self.doc.locate(here))
        if key == "subscribed_to":
            if not isinstance(body, str) or not SEGMENT_NAME.match(body):
                raise self.fail(here, f"subscribed_to: takes a topic name, found {_describe(body)}")
            if self.topics is not None and body not in self.topics:
                raise self.fail(here, f"unknown topic '{body}' (topics in config.yaml: "
                                      f"{', '.join(self.topics) or 'none'})")
            return TopicRule(body, self.doc.locate(here))
        if key in ("event", "purchases"):
            return self.event(body, here, purchases=key == "purchases")
        if key == "emails":
            return self.emails(body, here)
        if key.startswith("attributes."):
            parts = tuple(key.split(".")[1:])
            if not parts or not all(PATH_PART.match(p) for p in parts):
                raise self.fail(here, f"'{key}' is not an attribute path (attributes.name, letters, "
                                      "digits and _)", key=True)
            return self.value_rule(parts, body, here, what=f"attribute '{'.'.join(parts)}'")
        spec = FIELDS.get(key)
        if spec is None:
            raise self.fail(here, f"unknown field '{key}' (expected: all, any, not, segment, event, "
                                  f"purchases, emails, subscribed_to, attributes.NAME, {', '.join(FIELDS)})", key=True)
        return self.field(spec, body, here)

    def _op_mapping(self, body: Any, path: PathKey, shorthand_ok: bool, allowed: tuple[str, ...],
                    what: str) -> list[tuple[str, Any, PathKey]]:
        if isinstance(body, dict):
            if not body:
                raise self.fail(path, f"no operator given for {what} (expected: {', '.join(allowed)})")
            ops = []
            for name, value in body.items():
                if name not in allowed:
                    self.fail(path + (name,), f"unknown operator '{name}' for {what} "
                                              f"(expected: {', '.join(allowed)})", key=True)
                    continue
                ops.append((name, value, path + (name,)))
            if len(ops) != len(body):
                raise _Invalid()
            return ops
        if not shorthand_ok:
            raise self.fail(path, f"{what} needs an operator mapping such as {{{allowed[0]}: ...}} "
                                  f"(expected: {', '.join(allowed)})")
        return [("in" if isinstance(body, list) else "eq", body, path)]

    def field(self, spec: FieldSpec, body: Any, path: PathKey) -> FieldRule:
        shorthand = spec.kind in ("text", "number", "bool", "tier", "category", "days_since",
                                  "derived_number")
        what = f"field '{spec.name}'"
        ops = [Op(name, self.operand(spec.kind, name, value, p, what))
               for name, value, p in self._op_mapping(body, path, shorthand, spec.operators, what)]
        if spec.kind == "points_expiring":
            if not any(op.name == "within" for op in ops):
                raise self.fail(path, f"{what} needs within: how far ahead to look, e.g. "
                                      "{within: 30 days, gte: 500}")
            if all(op.name == "within" for op in ops):
                ops.append(Op("gte", Decimal(1)))
        return FieldRule(spec, tuple(ops), self.doc.locate(path))

    def value_rule(self, parts: tuple[str, ...], body: Any, path: PathKey, what: str) -> ValueRule:
        declared = body.get("as") if isinstance(body, dict) else None
        if isinstance(body, dict) and "as" in body:
            body = {k: v for k, v in body.items() if k != "as"}
            if declared not in ATTRIBUTE_TYPES:
                raise self.fail(path + ("as",), f"as: takes one of {', '.join(ATTRIBUTE_TYPES)}, "
                                                f"found {shown(declared)}")
        sample = _first_value(body)
        kind = declared or ("boolean" if isinstance(sample, bool) else
                            "number" if isinstance(sample, (int, float)) else "text")
        allowed = {"text": TEXT_OPS, "number": NUMBER_OPS, "boolean": ("eq", "is_set", "is_null")}[kind]
        ops = [Op(name, self.operand(_VALUE_KINDS[kind], name, value, p, what))
               for name, value, p in self._op_mapping(body, path, True, allowed, what)]
        return ValueRule(parts, kind, tuple(ops), self.doc.locate(path))

    def event(self, body: Any, path: PathKey, purchases: bool) -> EventRule:
        label = "purchases" if purchases else "event"
        if not isinstance(body, dict):
            raise self.fail(path, f"{label}: takes a mapping such as {{count: {{gte: 3}}, within: 30 days}}")
        allowed = tuple(k for k in EVENT_KEYS if not (purchases and k == "type"))
        bad = [k for k in body if k not in allowed]
        for key in bad:
            self.fail(path + (key,), f"unknown key '{key}' in {label} (expected: {', '.join(allowed)})",
                      key=True)
        if bad:
            raise _Invalid()
        kind = "purchase" if purchases else body.get("type")
        if not isinstance(kind, str) or not EVENT_TYPE.match(kind):
            raise self.fail(path + ("type",) if "type" in body else path,
                            f"event: needs type: an event type such as purchase (found {shown(kind)})")
        count = self.count(body["count"], path + ("count",)) if "count" in body else ()
        sum_of: str | None = None
        sum_ops: tuple[Op, ...] = ()
        if "sum" in body:
            total = body["sum"]
            if not isinstance(total, dict) or len(total) != 1:
                raise self.fail(path + ("sum",), "sum: takes one property and a condition, "
                                                 "e.g. sum: {amount: {gte: 5000000}}")
            (sum_of, condition), = total.items()
            if not isinstance(sum_of, str) or not PATH_PART.match(sum_of):
                raise self.fail(path + ("sum",), f"sum: names a property such as amount, found {shown(sum_of)}")
            sum_ops = tuple(Op(n, self.operand("number", n, v, p, f"sum of {sum_of}"))
                            for n, v, p in self._op_mapping(condition, path + ("sum", sum_of), True,
                                                            ("eq", "ne", "gt", "gte", "lt", "lte", "between"),
                                                            f"sum of {sum_of}"))
        if not count and not sum_ops:
            count = (Op("gte", Decimal(1)),)
        within = self._try(lambda: parse_duration(body["within"]), path + ("within",)) if "within" in body else None
        since = self._try(lambda: parse_time(body["since"]), path + ("since",)) if "since" in body else None
        until = self._try(lambda: parse_time(body["until"]), path + ("until",)) if "until" in body else None
        where = self.event_where(body["where"], path + ("where",)) if "where" in body else ()
        return EventRule(kind, count, sum_of, sum_ops, within, since, until, where,
                         self.doc.locate(path))

    def event_where(self, filters: Any, path: PathKey) -> tuple[ValueRule, ...]:
        """`where: {amount: {gte: 1000000}, store: Q1}`: conditions on one event's columns and
        properties (segments' event rules and event-triggered flows)."""
        if not isinstance(filters, dict) or not filters:
            raise self.fail(path, "where: takes a mapping of property conditions, e.g. where: {store: Q1}")
        where = []
        for prop, condition in filters.items():
            if not isinstance(prop, str) or not PATH_PART.match(prop):
                raise self.fail(path + (prop,), f"'{prop}' is not a property name", key=True)
            if prop in EVENT_COLUMNS and isinstance(condition, dict) and "as" not in condition:
                condition = {**condition, "as": "number" if EVENT_COLUMNS[prop] == "number" else "text"}
            where.append(self.value_rule((prop,), condition, path + (prop,),
                                         what=f"event property '{prop}'"))
        return tuple(where)

    def count(self, body: Any, path: PathKey) -> tuple[Op, ...]:
        """`count: 3` or `count: {gte: 3}`: how many, as operators."""
        return tuple(Op(n, self.operand("count", n, v, p, "count"))
                     for n, v, p in self._op_mapping(body, path, True,
                                                     ("eq", "ne", "gt", "gte", "lt", "lte", "between"), "count"))

    def emails(self, body: Any, path: PathKey) -> EmailRule:
        if not isinstance(body, dict):
            raise self.fail(path, "emails: takes a mapping such as {action: opened, count: 0, within: 60 days}")
        bad = [k for k in body if k not in EMAIL_KEYS]
        for key in bad:
            self.fail(path + (key,), f"unknown key '{key}' in emails (expected: {', '.join(EMAIL_KEYS)})",
                      key=True)
        if bad:
            raise _Invalid()
        action = body.get("action")
        if action not in EMAIL_ACTIONS:
            raise self.fail(path + ("action",) if "action" in body else path,
                            f"emails: action: takes one of {', '.join(EMAIL_ACTIONS)} (found {shown(action)})")
        flow = body.get("flow")
        if flow is not None and (not isinstance(flow, str) or not SEGMENT_NAME.match(flow)):
            raise self.fail(path + ("flow",), f"emails: flow: takes a flow name, found {shown(flow)}")
        step = body.get("step")
        if step is not None and (flow is None or not isinstance(step, str) or not SEGMENT_NAME.match(step)):
            raise self.fail(path + ("step",), "emails: step: takes a journey step id, with flow: naming "
                                              f"the journey (found {shown(step)})")
        automated = body.get("include_automated", False)
        if not isinstance(automated, bool):
            raise self.fail(path + ("include_automated",), "include_automated: takes true or false")
        count = self.count(body["count"], path + ("count",)) if "count" in body else (Op("gte", Decimal(1)),)
        within = self._try(lambda: parse_duration(body["within"]), path + ("within",)) if "within" in body else None
        return EmailRule(action, flow, count, within, automated, self.doc.locate(path), step,
                         flow_at=self.doc.locate(path + ("flow",)), step_at=self.doc.locate(path + ("step",)))

    def _try(self, parse: Any, path: PathKey) -> Any:
        try:
            return parse()
        except ValueError as exc:
            raise self.fail(path, str(exc)) from None

    # -- operands --------------------------------------------------------------------------
    def operand(self, kind: str, op: str, value: Any, path: PathKey, what: str) -> Any:
        try:
            return self._operand(kind, op, value, what)
        except ValueError as exc:
            raise self.fail(path, f"{what}: {op}: {exc}") from None

    def _operand(self, kind: str, op: str, value: Any, what: str) -> Any:
        if op in ("is_set", "is_null"):
            if not isinstance(value, bool):
                raise ValueError(f"takes true or false, found {shown(value)}")
            return value
        if op in ("in", "not_in"):
            if not isinstance(value, list) or not value or len(value) > MAX_LIST:
                raise ValueError(f"takes a list of 1 to {MAX_LIST} values, found {_describe(value)}")
            return tuple(self._scalar(kind, v) for v in value)
        if op == "between":
            if not isinstance(value, list) or len(value) != 2:
                raise ValueError(f"takes a list of two values [low, high], found {_describe(value)}")
            low, high = (self._scalar(kind, v) for v in value)
            if kind in ("number", "count", "days_since", "derived_number", "date", "points_expiring") and low > high:
                raise ValueError(f"the low end {value[0]} is above the high end {value[1]}")
            return (low, high)
        if op == "anniversary":
            return _anniversary(value)
        if kind in ("time", "expiry_time"):
            if op in ("within", "older_than", "within_next"):
                return parse_duration(value)
            return parse_time(value)
        if kind == "points_expiring" and op == "within":
            return parse_duration(value)
        if kind == "tier" and op in ("at_least", "at_most", "above", "below"):
            return self._scalar(kind, value)
        return self._scalar(kind, value)

    def _scalar(self, kind: str, value: Any) -> Any:
        if kind in ("number", "derived_number", "points_expiring"):
            return _number(value)
        if kind in ("count", "days_since"):
            number = _number(value)
            if number != number.to_integral_value() or number < 0:
                raise ValueError(f"expected a whole number of {'events' if kind == 'count' else 'days'}, "
                                 f"found {shown(value)}")
            if kind == "days_since" and number > MAX_DAYS:
                raise ValueError(f"expected at most {MAX_DAYS} days (100 years), found {shown(value)}")
            return number
        if kind == "text":
            if isinstance(value, bool) or not isinstance(value, (str, int, Decimal, float)):
                raise ValueError(f"expected text, found {_describe(value)}")
            text = str(value)
            if len(text) > 1000:
                raise ValueError("text longer than 1000 characters")
            if "\x00" in text:
                raise ValueError("text may not contain NUL characters")
            return text
        if kind == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"expected true or false, found {shown(value)}")
            return value
        if kind == "tier":
            if not isinstance(value, str) or value not in self.ladder.names:
                raise ValueError(f"expected a tier ({', '.join(self.ladder.names)}), found {shown(value)}"
                                 if not isinstance(value, str) else
                                 f"unknown tier {shown(value)} (tiers: {', '.join(self.ladder.names)})")
            return value
        if kind == "category":
            if not isinstance(value, str) or value not in NPS_CATEGORIES:
                raise ValueError(f"expected an NPS category ({', '.join(NPS_CATEGORIES)}), found {shown(value)}"
                                 if not isinstance(value, str) else
                                 f"unknown NPS category {shown(value)} (expected: {', '.join(NPS_CATEGORIES)})")
            return value
        if kind in ("time", "expiry_time"):
            return parse_time(value)
        if kind == "date":
            try:
                return parse_date(value)
            except ValueError:
                pass
            try:
                return parse_time(value)
            except ValueError:
                raise ValueError(f"expected a date such as 2026-01-31 or a time such as '18 years ago', "
                                 f"found {shown(value)}") from None
        raise ValueError(f"unsupported value {shown(value)}")


_VALUE_KINDS = {"text": "text", "number": "number", "boolean": "bool"}


def parse_event_where(filters: Any, doc: YamlDocument, path: PathKey
                      ) -> tuple[tuple[ValueRule, ...], list[Problem]]:
    """An event filter written at `path` of `doc` (a flow's `where:`): its conditions, or the
    problems found in it (with file:line). An event filter names no tier."""
    parser = SegmentParser(doc, TierLadder.from_settings(TierSettings()))
    try:
        return parser.event_where(filters, path), parser.problems
    except _Invalid:
        return (), parser.problems


def parse_rule(value: Any, doc: YamlDocument, path: PathKey, ladder: TierLadder
               ) -> tuple[Rule | None, list[Problem]]:
    """One rule written inline at `path` of `doc` (a journey's `exit_when:` or a branch's `if:`):
    the rule, or None and the problems found in it (with file:line)."""
    parser = SegmentParser(doc, ladder)
    try:
        return parser.rule(value, path, 0), parser.problems
    except (_Invalid, _TooLarge):
        return None, parser.problems


def flow_filter_problems(data: dict[str, Any], doc: YamlDocument) -> list[Problem]:
    """A config check (see config.load_settings): each flow's `where:` as an event filter."""
    flows = data.get("flows")
    problems: list[Problem] = []
    for index, flow in enumerate(flows if isinstance(flows, list) else []):
        if isinstance(flow, dict) and flow.get("where") is not None:
            problems += parse_event_where(flow["where"], doc, ("flows", index, "where"))[1]
    return problems


def _anniversary(value: Any) -> Any:
    if value == "today":
        return 0
    if isinstance(value, dict) and set(value) == {"within_next"}:
        duration = parse_duration(value["within_next"])
        if duration.unit not in ("day", "week") or duration.days_exact() > 366:
            raise ValueError("within_next: takes days or weeks, at most 366 days")
        return duration.days_exact()
    raise ValueError(f"takes today or {{within_next: 7 days}}, found {_describe(value)}")


def _number(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise ValueError(f"expected a number, found {_describe(value)}")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"expected a number, found {shown(value)}") from None
    if not number.is_finite() or abs(number) >= Decimal("1e15"):
        raise ValueError(f"expected a number below 10^15, found {shown(value)}")
    return number


def _first_value(body: Any) -> Any:
    if isinstance(body, dict):
        for name, value in body.items():
            if name in ("is_set", "is_null"):
                continue
            return value[0] if isinstance(value, list) and value else value
        return None
    return body[0] if isinstance(body, list) and body else body


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping" if value else "an empty mapping"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    return shown(value)


@dataclass(frozen=True)
class SegmentCatalog:
    """All segments of a program, checked for unknown references and cycles."""

    segments: dict[str, Segment]

    def get(self, name: str) -> Segment:
        from ..errors import NotFound

        if name not in self.segments:
            known = ", ".join(sorted(self.segments)) or "none"
            raise NotFound(f"no segment named {shown(name)} (segments: {known})")
        return self.segments[name]


def load_segments(directory: Path, ladder: TierLadder, *, display_root: Path | None = None,
                  topics: tuple[str, ...] | None = None) -> tuple[SegmentCatalog, list[Problem]]:
    """Parse every segments/*.yaml file; returns the valid segments and every problem found.
    `topics`: the topics `subscribed_to:` may name (None: any)."""
    problems: list[Problem] = []
    segments: dict[str, Segment] = {}
    files = sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]) if directory.is_dir() else []
    for path in files:
        display = _display(path, display_root)
        try:
            doc = load_yaml_file(path, display_name=display, root=directory.parent)
        except ConfigError as exc:
            problems += exc.problems
            continue
        parser = SegmentParser(doc, ladder, topics)
        segment = parser.segment(path.stem)
        problems += parser.problems
        if segment is not None and not parser.problems:
            segments[segment.name] = segment
    problems += _check_references(segments, {p.stem for p in files})
    _drop_segments_of(problems, segments)
    too_large = _check_sizes(segments)
    _drop_segments_of(too_large, segments)
    return SegmentCatalog(segments), problems + too_large


def _drop_segments_of(problems: list[Problem], segments: dict[str, Segment]) -> None:
    for problem in problems:
        if problem.location is not None:
            segments.pop(Path(problem.location.file).stem, None)


@dataclass(frozen=True)
class Size:
    """How much a rule asks of the database: conditions, event scans, and a weight that bounds
    the bound parameters of its SQL (each condition 10, each operand 2 or its list's length + 1,
    an anniversary ANNIVERSARY_WEIGHT)."""

    conditions: int
    events: int
    weight: int

    def __add__(self, other: Size) -> Size:
        return Size(self.conditions + other.conditions, self.events + other.events, self.weight + other.weight)


def rule_size(rule: Rule) -> Size:
    """The size of `rule` itself; a `segment:` reference counts as one condition."""
    if isinstance(rule, (All, AnyOf)):
        return sum((rule_size(item) for item in rule.items), Size(0, 0, 0))
    if isinstance(rule, Not):
        return rule_size(rule.item)
    if isinstance(rule, SegmentRef):
        return Size(1, 0, 1)
    if isinstance(rule, (FieldRule, ValueRule)):
        return Size(1, 0, 10 + _ops_weight(rule.ops))
    if isinstance(rule, TopicRule):
        return Size(1, 0, 12)
    if isinstance(rule, EventRule):
        where = sum(10 + _ops_weight(condition.ops) for condition in rule.where)
        return Size(1, 1, 20 + _ops_weight(rule.count) + _ops_weight(rule.sum_ops) + where)
    return Size(1, 1, 20 + _ops_weight(rule.count))


def _ops_weight(ops: tuple[Op, ...]) -> int:
    return sum(ANNIVERSARY_WEIGHT if op.name == "anniversary" else
               len(op.value) + 1 if isinstance(op.value, tuple) else 2 for op in ops)


def segments_used(name: str, segments: dict[str, Segment], limit: int = MAX_SEGMENTS_USED) -> list[str]:
    """The segments that `name` uses, directly or through others, each once (at most limit + 1)."""
    found: dict[str, None] = {}
    pending = [name]
    while pending and len(found) <= limit:
        for ref in references(segments[pending.pop()].rule):
            if ref.name in segments and ref.name not in found and ref.name != name:
                found[ref.name] = None
                pending.append(ref.name)
    return list(found)


def _check_sizes(segments: dict[str, Segment]) -> list[Problem]:
    """Every segment within the limits, counting the segments it uses once each."""
    own = {name: rule_size(segment.rule) for name, segment in segments.items()}
    expanded = _expanded_conditions(segments, own)
    problems = []
    for name, segment in sorted(segments.items()):
        where = Location(segment.file, segment.line)
        used = segments_used(name, segments)
        if len(used) > MAX_SEGMENTS_USED:
            problems.append(Problem(where, f"segment '{name}' uses more than {MAX_SEGMENTS_USED} other "
                                           "segments (segment: NAME, directly or through others)"))
            continue
        total = sum((own[other] for other in used), own[name])
        if expanded[name] > MAX_EXPANDED_CONDITIONS:
            problems.append(Problem(where, f"segment '{name}' has more than {MAX_EXPANDED_CONDITIONS:,} "
                                           "conditions once each use of a segment counts its conditions "
                                           "again (segments that use the same segment more than once, "
                                           "nested, double at each level); use each segment once, or "
                                           "write the shared conditions in one segment"))
        elif total.conditions > MAX_CONDITIONS:
            problems.append(Problem(where, f"segment '{name}' has {total.conditions} conditions with the "
                                           f"segments it uses; at most {MAX_CONDITIONS} are allowed"))
        elif total.events > MAX_EVENT_CONDITIONS:
            problems.append(Problem(where, f"segment '{name}' has {total.events} event:, purchases: and "
                                           "emails: conditions with the segments it uses; at most "
                                           f"{MAX_EVENT_CONDITIONS} are allowed"))
        elif total.weight > MAX_WEIGHT:
            problems.append(Problem(where, f"segment '{name}' has too many values to compare with "
                                           f"(weight {total.weight:,}, at most {MAX_WEIGHT:,}: each "
                                           "condition counts 10, each value in a list 1, each "
                                           f"anniversary {ANNIVERSARY_WEIGHT}); use fewer or shorter lists"))
    return problems


def _expanded_conditions(segments: dict[str, Segment], own: dict[str, Size]) -> dict[str, int]:
    """Each segment's conditions with every `segment:` reference replaced by the conditions of the
    segment it names, use by use (capped just past MAX_EXPANDED_CONDITIONS). Linear in the
    references: each segment's count is computed once (the segments have no cycles here)."""
    counts: dict[str, int] = {}
    for start in segments:
        stack = [start]
        while stack:
            name = stack[-1]
            if name in counts:
                stack.pop()
                continue
            refs = [ref.name for ref in references(segments[name].rule) if ref.name in segments]
            pending = [ref for ref in refs if ref not in counts and ref not in stack]
            if pending:
                stack.extend(pending)
                continue
            total = own[name].conditions + sum(counts.get(ref, 0) for ref in refs)
            counts[name] = min(total, MAX_EXPANDED_CONDITIONS + 1)
            stack.pop()
    return counts


def _display(path: Path, root: Path | None) -> str:
    try:
        return str((path.parent.resolve() / path.name).relative_to((root or Path.cwd()).resolve()))
    except ValueError:
        return str(path)


def references(rule: Rule) -> list[SegmentRef]:
    if isinstance(rule, SegmentRef):
        return [rule]
    if isinstance(rule, (All, AnyOf)):
        return [ref for item in rule.items for ref in references(item)]
    if isinstance(rule, Not):
        return references(rule.item)
    return []


def _check_references(segments: dict[str, Segment], files: set[str]) -> list[Problem]:
    problems = []
    for segment in segments.values():
        for ref in references(segment.rule):
            if ref.name not in files:
                known = ", ".join(sorted(files)) or "none"
                problems.append(Problem(ref.location, f"unknown segment '{ref.name}' (segments: {known})"))
    # Cycles: depth-first search over the reference graph.
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for ref in references(segments[name].rule):
            if ref.name not in segments:
                continue
            if state.get(ref.name) == 1:
                cycle = trail[trail.index(ref.name):] + [ref.name] if ref.name in trail else [name, ref.name]
                problems.append(Problem(ref.location, f"segments refer to each other in a cycle: "
                                                      f"{' -> '.join(cycle)}"))
            elif ref.name not in state:
                visit(ref.name, trail + [ref.name])
        state[name] = 2

    for name in sorted(segments):
        if name not in state:
            visit(name, [name])
    return problems

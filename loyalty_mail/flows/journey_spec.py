"""A journey's `steps:` -> typed steps with stable ids, and the map of where each step leads.

    - send: welcome                      an email (or send: {template: welcome})
      variants: [...]                    an A/B test of this step (as a flow's), optional `winner:`
    - wait: 3 days                       a duration; whole days keep the member's local time of day
    - wait: {until: "10:00"}             the next 10:00 in the member's time zone
    - wait_until: {event: purchase, timeout: 7 days}     (or {segment: NAME, timeout: ...})
      on_timeout: [...]                  steps taken only when the timeout passes first
    - branch: {if: RULE, then: [...], else: [...]}        RULE: any segment rule

Every step may carry `id:`; without one its id comes from its content (`welcome`, `wait_3_days`,
`wait_until_purchase`, `branch_<digest of its rule>`, `_2` added to a repeat). Ids are what the
journey_steps table records, so they must survive edits: give a step an explicit id before
changing what it says.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from datetime import time as dtime
from collections.abc import Collection, Iterator, Mapping
from typing import Any, Union

import yaml
from pydantic import ValidationError

from ..config import FlowSettings, TierSettings, VariantSettings, WinnerRule, check_variants
from ..durations import Duration, parse_duration
from ..errors import Location, Problem
from ..segments.spec import EmailRule, Rule, parse_rule
from ..tiers import TierLadder
from ..yaml_source import PathKey, YamlDocument

STEP_ID = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
MAX_STEPS = 100
MAX_DEPTH = 5
MAX_TEST_NAME = 64   # variant_winners.flow
KINDS = ("send", "wait", "wait_until", "branch")
END, EXIT = "$end", "$exit"
# The detail of a `$exit` row, which says why the member left (reports count exits by it).
EXIT_WHEN, LEFT = "exit_when matched", "left the journey: "


@dataclass(frozen=True)
class SendStep:
    id: str
    template: str
    variants: tuple[VariantSettings, ...] = ()   # an A/B test of this step, named `<flow>.<id>`
    winner: WinnerRule | None = None


@dataclass(frozen=True)
class WaitStep:
    id: str
    duration: Duration | None      # or
    until: dtime | None            # the next time of day, member's zone


@dataclass(frozen=True)
class WaitUntilStep:
    id: str
    event: str | None              # an event of this type, or
    segment: str | None            # entering this segment
    timeout: Duration
    on_timeout: tuple[Step, ...]


@dataclass(frozen=True)
class BranchStep:
    id: str
    condition: Rule
    then: tuple[Step, ...]
    otherwise: tuple[Step, ...]


Step = Union[SendStep, WaitStep, WaitUntilStep, BranchStep]


@dataclass(frozen=True)
class Journey:
    """A flow's steps, numbered in reading order, and where each one leads (None: the end)."""

    flow: str
    steps: tuple[Step, ...]
    exit_when: Rule | None
    by_id: dict[str, Step] = field(default_factory=dict)
    number: dict[str, int] = field(default_factory=dict)
    after: dict[str, str | None] = field(default_factory=dict)      # when the step is done
    then_next: dict[str, str | None] = field(default_factory=dict)  # branch: the condition held
    else_next: dict[str, str | None] = field(default_factory=dict)  # branch: it did not
    timeout_next: dict[str, str | None] = field(default_factory=dict)  # wait_until: timed out
    exit_text: str = ""   # exit_when as written: `{purchases: {count: {gte: 1}}}`
    paths: dict[str, PathKey] = field(default_factory=dict)   # where each step is written
    # ids derived from content that a like step shares (`wait_1_days`, `wait_1_days_2`): which is
    # which depends on their order, so an edit to one can hand its id to the other
    ordinal: frozenset[str] = frozenset()

    @property
    def first(self) -> str:
        return self.steps[0].id

    def rules(self) -> list[Rule]:
        """Every rule the journey evaluates: exit_when and each branch's condition."""
        return ([self.exit_when] if self.exit_when is not None else []) + [
            s.condition for s in self.by_id.values() if isinstance(s, BranchStep)]

    def templates(self) -> list[str]:
        return [s.template for s in self.by_id.values() if isinstance(s, SendStep)]

    def tests(self) -> list[SendStep]:
        """The send steps with an A/B test, in reading order."""
        return [s for s in self.by_id.values() if isinstance(s, SendStep) and s.variants]


def ab_test_name(flow: str, step: str | None = None) -> str:
    """The name of an A/B test: a flow's (or a campaign's) own name, or `<flow>.<step id>` for a
    journey's send step (flow names and step ids have no `.`)."""
    return flow if step is None else f"{flow}.{step}"


def split_test(name: str) -> tuple[str, str | None]:
    """(flow, step id or None) of a test name."""
    flow, _, step = name.partition(".")
    return flow, step or None


def describe(step: Step) -> str:
    """`send welcome`, `wait 3 days`, `wait_until purchase`, `branch`: a step in a few words."""
    if isinstance(step, SendStep):
        return f"send {step.template}"
    if isinstance(step, WaitStep):
        return f"wait {step.duration}" if step.duration else f"wait until {step.until:%H:%M}"
    if isinstance(step, WaitUntilStep):
        return f"wait_until {step.event or 'segment ' + str(step.segment)}"
    return "branch"


def build(flow: str, steps: tuple[Step, ...], exit_when: Rule | None, exit_text: str = "",
          paths: dict[str, PathKey] | None = None, ordinal: frozenset[str] = frozenset()) -> Journey:
    journey = Journey(flow, steps, exit_when, exit_text=exit_text, paths=dict(paths or {}), ordinal=ordinal)

    def walk(block: tuple[Step, ...], follow: str | None) -> str | None:
        """Number `block` and link it; returns its first step's id (or `follow` when empty)."""
        for i, step in enumerate(block):
            journey.by_id[step.id] = step
            journey.number[step.id] = len(journey.number) + 1
            nxt = block[i + 1].id if i + 1 < len(block) else follow
            journey.after[step.id] = nxt
            if isinstance(step, BranchStep):
                journey.then_next[step.id] = walk(step.then, nxt)
                journey.else_next[step.id] = walk(step.otherwise, nxt)
            elif isinstance(step, WaitUntilStep):
                journey.timeout_next[step.id] = walk(step.on_timeout, nxt)
        return block[0].id if block else follow

    walk(steps, None)
    return journey


class _Parser:
    def __init__(self, flow: str, doc: YamlDocument, ladder: TierLadder) -> None:
        self.flow, self.doc, self.ladder = flow, doc, ladder
        self.problems: list[Problem] = []
        self.explicit: set[str] = set()
        self.seen: dict[str, int] = {}
        self.derived: set[str] = set()  # every id given from content (`welcome`, `welcome_2`...)
        self.paths: dict[str, PathKey] = {}
        self.count = 0

    def fail(self, path: PathKey, message: str, key: bool = False) -> None:
        self.problems.append(Problem(self.doc.locate(path, key=key), f"flow '{self.flow}': {message}"))

    def block(self, value: Any, path: PathKey, depth: int) -> tuple[Step, ...]:
        if not isinstance(value, list):
            self.fail(path, "a list of steps is expected, e.g. [{send: welcome}, {wait: 3 days}]")
            return ()
        if depth > MAX_DEPTH:
            self.fail(path, f"steps are nested more than {MAX_DEPTH} deep")
            return ()
        out = []
        for i, item in enumerate(value):
            step = self.step(item, path + (i,), depth)
            if step is not None:
                out.append(step)
        return tuple(out)

    def step(self, value: Any, path: PathKey, depth: int) -> Step | None:
        step = self._step(value, path, depth)
        if step is not None:
            self.paths[step.id] = path
        return step

    def _step(self, value: Any, path: PathKey, depth: int) -> Step | None:
        self.count += 1
        if self.count > MAX_STEPS:
            if self.count == MAX_STEPS + 1:
                self.fail(path, f"more than {MAX_STEPS} steps in one journey")
            return None
        if not isinstance(value, dict):
            self.fail(path, f"a step is a mapping with one of {', '.join(KINDS)} (found {value!r})")
            return None
        kinds = [k for k in value if k in KINDS]
        allowed = {"send": {"id", "variants", "winner"}, "wait": {"id"}, "wait_until": {"id", "on_timeout"},
                   "branch": {"id"}}
        if len(kinds) != 1:
            self.fail(path, f"a step has exactly one of {', '.join(KINDS)} (found "
                            f"{', '.join(map(str, value)) or 'nothing'})")
            return None
        kind = kinds[0]
        extra = [k for k in value if k != kind and k not in allowed[kind]]
        for key in extra:
            self.fail(path + (key,), f"unknown key '{key}' in a {kind} step (allowed: "
                                     f"{', '.join([kind, *sorted(allowed[kind])])})", key=True)
        if extra:
            return None
        explicit = value.get("id")
        if explicit is not None:
            if not isinstance(explicit, str) or not STEP_ID.match(explicit):
                self.fail(path + ("id",), f"a step id is lowercase letters, digits and _, up to 48 "
                                          f"(found {explicit!r})")
                return None
            if explicit in self.explicit:
                self.fail(path + ("id",), f"step id '{explicit}' is used twice")
                return None
            self.explicit.add(explicit)
        body, here = value[kind], path + (kind,)
        if kind == "send":
            template = body.get("template") if isinstance(body, dict) else body
            if isinstance(body, dict) and set(body) - {"template"}:
                self.fail(here, f"send: takes a template name or {{template: NAME}} (found keys "
                                f"{', '.join(map(str, body))})")
                return None
            if not isinstance(template, str) or not template:
                self.fail(here, f"send: takes a template name, e.g. send: welcome (found {body!r})")
                return None
            step_id = self.ident(explicit, template)
            return self.test(value, path, SendStep(step_id, template))
        if kind == "wait":
            if isinstance(body, dict):
                until = body.get("until")
                if set(body) != {"until"} or not isinstance(until, str) or not CLOCK.match(until):
                    self.fail(here, "wait: takes a duration (3 days) or {until: \"HH:MM\"}, a time of "
                                    f"day in the member's time zone (found {body!r})")
                    return None
                clock = dtime(int(until[:2]), int(until[3:]))
                return WaitStep(self.ident(explicit, f"wait_until_{until.replace(':', '')}"), None, clock)
            duration = self.duration(body, here, "wait:")
            if duration is None:
                return None
            return WaitStep(self.ident(explicit, f"wait_{duration.amount}_{duration.unit}s"), duration, None)
        if kind == "wait_until":
            return self.wait_until(body, value.get("on_timeout", []), path, explicit, depth)
        return self.branch(body, path, explicit, depth)

    def test(self, value: dict[str, Any], path: PathKey, step: SendStep) -> SendStep | None:
        """A send step's A/B test (`variants:`, optional `winner:`), validated as a flow's."""
        if not value.get("variants") and value.get("variants") is not None and value.get("winner") is not None:
            self.fail(path + ("winner",), f"step '{step.id}': winner: needs variants: to choose from (variants: "
                                          "is empty)", key=True)
            return None
        if "variants" not in value:
            if "winner" in value:
                self.fail(path + ("winner",), f"step '{step.id}': winner: needs variants: to choose from", key=True)
                return None
            return step
        found = value["variants"]
        if not isinstance(found, list):
            self.fail(path + ("variants",), f"step '{step.id}': variants: takes a list, e.g. [{{name: a, "
                                            f"subject: Hi}}, {{name: b, template: other}}] (found {found!r})")
            return None
        variants = [self.model(VariantSettings, raw, path + ("variants", i), f"variants[{i}]", step.id)
                    for i, raw in enumerate(found)]
        winner = (self.model(WinnerRule, value["winner"], path + ("winner",), "winner", step.id)
                  if value.get("winner") is not None else None)
        if any(v is None for v in variants) or (winner is None and value.get("winner") is not None):
            return None
        typed = tuple(v for v in variants if isinstance(v, VariantSettings))
        try:
            check_variants(typed)
        except ValueError as exc:
            self.fail(path + ("variants",), f"step '{step.id}': variants: {exc}")
            return None
        name = ab_test_name(self.flow, step.id)
        if len(name) > MAX_TEST_NAME:
            self.fail(path + ("variants",), f"step '{step.id}': its A/B test is named '{name}', longer than "
                                            f"{MAX_TEST_NAME} characters; give the step a shorter id:", key=True)
            return None
        return replace(step, variants=typed, winner=winner if isinstance(winner, WinnerRule) else None)

    def model(self, model: type[VariantSettings] | type[WinnerRule], raw: Any, path: PathKey, what: str,
              step: str) -> VariantSettings | WinnerRule | None:
        """`raw` validated as `model`, or None with each problem at its line."""
        try:
            return model.model_validate(raw)
        except ValidationError as exc:
            for error in exc.errors():
                loc = tuple(error["loc"])
                where = f"{what}{''.join('.' + str(part) for part in loc)}"
                if error["type"] == "extra_forbidden":
                    allowed = ", ".join(model.model_fields)
                    self.fail(path + loc, f"step '{step}': unknown key '{loc[-1]}' in {what} (allowed: {allowed})",
                              key=True)
                    continue
                message = str(error["msg"]).removeprefix("Value error, ")
                found = error.get("input")
                echo = "" if isinstance(found, dict) or error["type"] in ("missing", "value_error") \
                    else f" (found {found!r})"
                self.fail(path + (loc[:-1] if error["type"] == "missing" else loc),
                          f"step '{step}': {where}: {message}{echo}")
            return None

    def wait_until(self, body: Any, on_timeout: Any, path: PathKey, explicit: str | None,
                   depth: int) -> WaitUntilStep | None:
        here = path + ("wait_until",)
        if not isinstance(body, dict) or "timeout" not in body or len(
                [k for k in ("event", "segment") if k in body]) != 1 or set(body) - {"event", "segment", "timeout"}:
            self.fail(here, "wait_until: takes {event: TYPE, timeout: DURATION} or {segment: NAME, "
                            f"timeout: DURATION}} (found {body!r})")
            return None
        timeout = self.duration(body["timeout"], here + ("timeout",), "timeout:")
        target = body.get("event") or body.get("segment")
        if not isinstance(target, str) or not STEP_ID.match(target):
            self.fail(here, f"wait_until: names an event type or a segment (found {target!r})")
            return None
        steps = self.block(on_timeout, path + ("on_timeout",), depth + 1)
        if timeout is None:
            return None
        return WaitUntilStep(self.ident(explicit, f"wait_until_{target}"), body.get("event"),
                         body.get("segment"), timeout, steps)

    def branch(self, body: Any, path: PathKey, explicit: str | None, depth: int) -> BranchStep | None:
        here = path + ("branch",)
        if not isinstance(body, dict) or "if" not in body or set(body) - {"if", "then", "else"}:
            self.fail(here, f"branch: takes {{if: RULE, then: [steps], else: [steps]}} (found {body!r})")
            return None
        rule, problems = parse_rule(body["if"], self.doc, here + ("if",), self.ladder)
        self.problems += problems
        then = self.block(body.get("then", []), here + ("then",), depth + 1)
        otherwise = self.block(body.get("else", []), here + ("else",), depth + 1)
        if rule is None:
            return None
        digest = hashlib.sha256(json.dumps(body["if"], sort_keys=True, default=str).encode()).hexdigest()[:6]
        return BranchStep(self.ident(explicit, f"branch_{digest}"), rule, then, otherwise)

    def duration(self, value: Any, path: PathKey, what: str) -> Duration | None:
        try:
            duration = parse_duration(value)
        except ValueError as exc:
            self.fail(path, f"{what} {exc}")
            return None
        if duration.unit in ("month", "year"):
            self.fail(path, f"{what} use days or weeks rather than {duration.unit}s (found {value!r})")
            return None
        return duration

    def ident(self, explicit: str | None, derived: str) -> str:
        if explicit:
            return explicit
        base = re.sub(r"[^a-z0-9_]", "_", derived.lower())[:44]
        self.seen[base] = self.seen.get(base, 0) + 1
        given = base if self.seen[base] == 1 else f"{base}_{self.seen[base]}"
        self.derived.add(given)
        return given


def parse_journey(flow: str, steps: Any, exit_when: Any, doc: YamlDocument, path: PathKey,
                  ladder: TierLadder) -> tuple[Journey | None, list[Problem]]:
    """The journey written at `path` of `doc` (a flow's mapping), or None and its problems."""
    parser = _Parser(flow, doc, ladder)
    typed = parser.block(steps, path + ("steps",), 0)
    rule = None
    if exit_when is not None:
        rule, problems = parse_rule(exit_when, doc, path + ("exit_when",), ladder)
        parser.problems += problems
    for clash in sorted(parser.explicit & parser.derived):
        parser.fail(path + ("steps",), f"step id '{clash}' is both given explicitly and derived "
                                       "from another step; give that one an id too")
    if parser.problems:
        return None, parser.problems
    text = yaml.safe_dump(exit_when, default_flow_style=True, width=10_000, sort_keys=False).strip() \
        if exit_when is not None else ""
    ordinal = frozenset(base for base, n in parser.seen.items() if n > 1) | frozenset(
        f"{base}_{k}" for base, n in parser.seen.items() for k in range(2, n + 1))
    return build(flow, typed, rule, text, parser.paths, ordinal), []


def flow_journey(flow: FlowSettings, ladder: TierLadder) -> tuple[Journey | None, list[Problem]]:
    """The journey of a loaded flow (`flow.is_journey`): its steps as the settings hold them."""
    raw = {"steps": list(flow.steps or ()), "exit_when": flow.exit_when}
    return parse_journey(flow.name, raw["steps"], flow.exit_when, YamlDocument(f"flow '{flow.name}'", raw), (),
                         ladder)


def sends_without_trigger(journey: Journey) -> list[SendStep]:
    """The send steps whose email may be decided without the trigger's data.

    A step is decided at entry (with the trigger's occurrence) until the first wait; a later
    tick reads the trigger's data back from the instance's first email (journeys.in_flight). So
    a send that some path reaches after a wait (or wait_until) with no email decided at entry
    before it has only `occurrence.kind`, `key` and `step`, and no `event`; every email after
    that one too, as the first email then carries none."""
    lost: dict[str, SendStep] = {}

    def walk(block: tuple[Step, ...], kept: bool, paused: bool) -> tuple[bool, bool]:
        """(kept, paused) after `block`: an email carrying the data was recorded; a tick ended."""
        for step in block:
            if isinstance(step, SendStep):
                if paused and not kept:
                    lost.setdefault(step.id, step)
                else:
                    kept = True
            elif isinstance(step, WaitStep):
                paused = True
            elif isinstance(step, WaitUntilStep):
                timed_out = walk(step.on_timeout, kept, True)
                kept, paused = kept and timed_out[0], True
            else:
                then, otherwise = walk(step.then, kept, paused), walk(step.otherwise, kept, paused)
                kept, paused = then[0] and otherwise[0], then[1] or otherwise[1]
        return kept, paused

    walk(journey.steps, False, False)
    return list(lost.values())


def _all(steps: tuple[Step, ...]) -> list[Step]:
    out: list[Step] = []
    for step in steps:
        out.append(step)
        if isinstance(step, BranchStep):
            out += _all(step.then) + _all(step.otherwise)
        elif isinstance(step, WaitUntilStep):
            out += _all(step.on_timeout)
    return out


def email_rules(rule: Any) -> Iterator[EmailRule]:
    """Every `emails:` condition inside a rule."""
    if isinstance(rule, EmailRule):
        yield rule
    for item in getattr(rule, "items", ()):
        yield from email_rules(item)
    inner = getattr(rule, "item", None)
    if inner is not None:
        yield from email_rules(inner)


def email_reference_problems(journey: Journey, flows: Collection[str], journeys: Mapping[str, Journey],
                             unread: Collection[str] = ()) -> list[tuple[Location | None, str]]:
    """A journey's `emails:` conditions name a flow that exists and, with `step:`, a step that
    journey has (a typo would make a branch always take `else`): (where, message) for each one
    that does not. `journeys` are the flows with steps; a journey in `unread` has problems of its
    own, so its step ids are unknown and not checked against."""
    problems: list[tuple[Location | None, str]] = []
    for rule in journey.rules():
        for email in email_rules(rule):
            if email.flow is not None and email.flow not in flows:
                close = difflib.get_close_matches(email.flow, sorted(flows), n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                problems.append((email.flow_at or email.location,
                                 f"flow '{journey.flow}': emails: flow: no flow '{email.flow}' "
                                 f"({hint}flows: {', '.join(sorted(flows))})"))
            elif email.step is not None and email.flow is not None and email.flow not in unread:
                target = journeys.get(email.flow)
                steps = sorted(target.by_id) if target is not None else []
                if email.step not in steps:
                    close = difflib.get_close_matches(email.step, steps, n=1)
                    hint = f"did you mean '{close[0]}'? " if close else ""
                    problems.append((email.step_at or email.location,
                                     f"flow '{journey.flow}': emails: step: '{email.step}' is not a step of "
                                     f"'{email.flow}' ({hint}steps: {', '.join(steps) or 'none: not a journey'}"
                                     "; a step without an id: is named after its content, see README "
                                     "\"Journeys\")"))
    return list(dict.fromkeys(problems))


def journey_problems(data: dict[str, Any], doc: YamlDocument) -> list[Problem]:
    """A config check (see config.load_settings): each journey's steps and rules, and the flows
    and steps its `emails:` conditions name, at their lines."""
    flows = data.get("flows")
    try:
        ladder = TierLadder.from_settings(TierSettings.model_validate(data.get("tiers") or {}))
    except ValueError:
        ladder = TierLadder.from_settings(TierSettings())
    problems: list[Problem] = []
    journeys: dict[str, Journey] = {}
    unread: set[str] = set()
    names = [str(f.get("name")) for f in (flows if isinstance(flows, list) else []) if isinstance(f, dict)]
    for index, flow in enumerate(flows if isinstance(flows, list) else []):
        if isinstance(flow, dict) and flow.get("steps") is not None:
            name = str(flow.get("name"))
            journey, wrong = parse_journey(name, flow["steps"], flow.get("exit_when"), doc, ("flows", index),
                                           ladder)
            problems += wrong
            if journey is None:
                unread.add(name)
            else:
                journeys[name] = journey
    for journey in journeys.values():
        problems += [Problem(where, message)
                     for where, message in email_reference_problems(journey, names, journeys, unread)]
    return problems

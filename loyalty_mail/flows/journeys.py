"""Journeys: moving members through a flow's steps at instant `now`, from what journey_steps holds.

A journey instance is one trigger occurrence of the flow (its key, e.g. `welcome` or
`event:812`). Each step a member reaches is one journey_steps row (member, flow, instance, step),
written with the step's `sends` row in one transaction (ledger.record): the latest row of an
instance is where the member is, and `ready_at` when they go on. Like the planner this is a
function of (database, config, now): it reads, and returns the rows to record.

At `now`, for each instance, before every step (and while waiting): when `exit_when` holds the
member leaves (`$exit`). Then, while the next step is due: a send goes through the flow's policy
(lateness, suppression, frequency cap, quiet hours: `decide_send`); a wait records when it ends;
a branch records which way the rule went; a wait_until goes on at the event (or segment entry)
or takes its on_timeout steps once the timeout passes. Past the last step: `$end`.
"""

from __future__ import annotations

import os
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from ..config import FlowSettings
from ..instants import local_text
from ..models import events_table, journey_steps_table, members_table, sends_table
from ..segments.compiler import Context, compile_rule
from ..segments.spec import Rule
from .decisions import PlannedSend, Skip
from .journey_spec import END, EXIT, EXIT_WHEN, LEFT, BranchStep, Journey, SendStep, WaitStep, WaitUntilStep, describe
from .occurrences import MEMBER_COLUMNS, Occurrence, _member, _stream

if TYPE_CHECKING:
    from .planner import Plan

TERMINAL = (END, EXIT)


@dataclass(slots=True)
class StepRow:
    """A journey_steps row to record."""

    member_ref: int
    flow: str
    instance: str
    step: str
    outcome: str          # planned | skipped | suppressed | waiting | then | else | completed | exited | ...
    reached_at: datetime
    ready_at: datetime | None
    detail: str


@dataclass(frozen=True)
class Position:
    """Where one member is in one journey after the plan at `now`."""

    member_id: str
    flow: str
    instance: str
    step: str
    number: int
    what: str                    # `wait_until purchase`
    until: datetime | None       # when they go on (at the latest)
    zone: str
    note: str = ""               # why a due step waits (frequency cap)

    def summary(self) -> str:
        when = ""
        if self.until is not None:
            verb = "times out" if self.what.startswith("wait_until") else (
                "until" if self.what.startswith("wait") else "scheduled for")
            when = f", {verb} {local_text(self.until, self.zone)}"
        note = f"; {self.note}" if self.note else ""
        return f"in {self.flow} at step {self.number} ({self.what}{when}{note})"


@dataclass(frozen=True)
class Exit:
    """A member leaving a journey in the plan at `now` (a `$exit` row): why and where."""

    member_id: str
    flow: str
    instance: str
    reason: str     # what the counts group by: `exit_when matched`, `step removed by an edit`, `left: unsubscribed`
    where: str      # `before step 3 (branch)`, `at step wait_3_days (no longer in the journey)`
    detail: str     # the reason in full: `exit_when {purchases: {count: {gte: 1}}} matched`

    def summary(self) -> str:
        return f"would exit {self.flow} {self.where}: {self.detail}"


def step_removed(step_id: str) -> str:
    return f"step {step_id} is no longer in the journey"


# -- reading journey_steps ------------------------------------------------------------------

def _latest(flow: str, now: datetime) -> sa.Select[Any]:
    """The latest row of each open instance of the journey (recorded by `now`): where its member is."""
    j = journey_steps_table
    later = j.alias("later")
    return (sa.select(j.c.id.label("row_id"), j.c.member_ref, j.c.instance, j.c.step, j.c.outcome,
                      j.c.reached_at, j.c.ready_at)
            .where(j.c.flow == flow, j.c.created_at <= now, j.c.step.not_in(TERMINAL),
                   ~sa.exists().where(later.c.member_ref == j.c.member_ref, later.c.flow == j.c.flow,
                                      later.c.instance == j.c.instance, later.c.id > j.c.id,
                                      later.c.created_at <= now)))


def members_in(flow: str) -> sa.Select[Any]:
    """The ids of the members with rows in the journey: what its rules are asked about."""
    j = journey_steps_table
    return sa.select(j.c.member_ref).where(j.c.flow == flow)


def _acting(j: Any, journey: Journey, now: datetime, exit_condition: sa.ColumnElement[bool] | None
            ) -> sa.ColumnElement[bool]:
    """Instances (latest rows, columns `j`) with something to do at `now`: the next step is due,
    the event a wait_until waits for came, the step is no longer in the journey, or exit_when
    holds (`exit_condition`, over members). The rest only wait."""
    e = events_table
    acting = [j.ready_at <= now, j.step.not_in(list(journey.by_id))]
    for step in journey.by_id.values():
        if isinstance(step, WaitUntilStep) and step.event:
            acting.append(sa.and_(j.step == step.id, sa.exists().where(
                e.c.member_ref == j.member_ref, e.c.type == step.event, e.c.occurred_at > j.reached_at,
                e.c.occurred_at <= now)))
        elif isinstance(step, WaitUntilStep):
            acting.append(j.step == step.id)   # a segment: decided by the walk
    if exit_condition is not None:
        acting.append(exit_condition)
    return sa.or_(*acting)


def in_flight(conn: sa.Connection, flow: FlowSettings, journey: Journey, now: datetime,
              members: list[int] | None, exit_condition: sa.ColumnElement[bool] | None,
              every: bool, rules: list[tuple[Rule, sa.ColumnElement[bool]]]) -> Iterator[Occurrence]:
    """Each open instance of the journey as an occurrence whose data holds its latest row, in
    member order: every one (`every`, or `members` given), else only those with something to do
    at `now` (`exit_condition`: exit_when compiled over members); `waiting` counts the others.
    `rules` (the journey's rules, compiled) are evaluated in the same query, once for all."""
    latest = _latest(flow.name, now).subquery()
    m = members_table
    held = [sa.case((condition, 1), else_=0).label(f"rule_{n}") for n, (_, condition) in enumerate(rules)]
    s = sends_table
    trigger = (sa.select(s.c.occurrence)   # what the trigger gave the instance's first email
               .where(s.c.member_ref == latest.c.member_ref, s.c.flow == flow.name,
                      sa.func.substr(s.c.occurrence_key, 1, sa.func.length(latest.c.instance) + 1)
                      == latest.c.instance + "/")
               .order_by(s.c.id).limit(1).scalar_subquery().label("trigger"))
    query = (sa.select(*MEMBER_COLUMNS, latest, *held, trigger).join(m, m.c.id == latest.c.member_ref)
             .order_by(latest.c.member_ref, latest.c.instance))
    if members is not None:
        query = query.where(latest.c.member_ref.in_(members))
    elif not every:
        query = query.where(_acting(latest.c, journey, now, exit_condition))
    for row in _stream(conn, query):
        occ = _position_occurrence(flow, row)
        occ.data["rules"] = {id(rule): bool(row._mapping[f"rule_{n}"]) for n, (rule, _) in enumerate(rules)}
        occ.data["trigger"] = {k: v for k, v in (row.trigger or {}).items() if k not in ("key", "step")}
        yield occ


def waiting(conn: sa.Connection, journey: Journey, now: datetime,
            exit_condition: sa.ColumnElement[bool] | None) -> dict[str, int]:
    """How many open instances only wait at `now`, by step (those `in_flight` leaves out)."""
    latest = _latest(journey.flow, now).subquery()
    m = members_table
    query = (sa.select(latest.c.step, sa.func.count()).join(m, m.c.id == latest.c.member_ref)
             .where(~_acting(latest.c, journey, now, exit_condition)).group_by(latest.c.step))
    return {step: int(count) for step, count in conn.execute(query)}


def _position_occurrence(flow: FlowSettings, row: Any) -> Occurrence:
    return Occurrence(flow=flow, **_member(row), key=row.instance, occurred_at=row.reached_at,
                      due_at=row.ready_at or row.reached_at, reason=f"at step {row.step}",
                      data={"kind": "journey", "step": row.step, "outcome": row.outcome,
                            "reached_at": row.reached_at, "ready_at": row.ready_at})


def started(conn: sa.Connection, refs: list[int], flows: list[str], now: datetime) -> set[tuple[int, str, str]]:
    """(member, flow, instance) of every instance started by `now`, open or closed."""
    j = journey_steps_table
    rows = conn.execute(sa.select(j.c.member_ref, j.c.flow, j.c.instance).distinct()
                        .where(j.c.member_ref.in_(refs), j.c.flow.in_(flows), j.c.created_at <= now))
    return {(r.member_ref, r.flow, r.instance) for r in rows}


def positions_by_step(conn: sa.Connection, flow: str) -> dict[str, int]:
    """How many open instances of the journey stand at each step (by step id): `check` compares
    them with the journey as configured now."""
    j = journey_steps_table
    t = j.alias("later")
    later = sa.exists().where(t.c.member_ref == j.c.member_ref, t.c.flow == j.c.flow,
                              t.c.instance == j.c.instance, t.c.id > j.c.id)
    rows = conn.execute(sa.select(j.c.step, sa.func.count())
                        .where(j.c.flow == flow, ~later, j.c.step.not_in(TERMINAL)).group_by(j.c.step))
    return {step: int(count) for step, count in rows}


@dataclass(frozen=True)
class RecordedExit:
    """A `$exit` row of a member, with the step they stood at before it (`explain`)."""

    flow: str
    instance: str
    step: str | None     # the step id they were at, None when they left at entry
    at: datetime
    detail: str

    def summary(self, journey: Journey | None, zone: str) -> str:
        """`exited welcome at step 2 (wait 3 days) on 2026-11-21 12:05 +07 (...)`; the time on the
        wall clock of `zone`, the member's."""
        where = ""
        if self.step is not None:
            known = journey is not None and self.step in journey.by_id
            where = (f" at step {journey.number[self.step]} ({describe(journey.by_id[self.step])})"  # type: ignore[union-attr]
                     if known else f" at step {self.step}")
        reason = self.detail
        if self.detail == EXIT_WHEN and journey is not None and journey.exit_text:
            reason = f"exit_when {journey.exit_text} matched"
        return f"exited {self.flow}{where} on {local_text(self.at, zone)} ({reason})"


def recorded_exits(conn: sa.Connection, member_ref: int, until: datetime) -> list[RecordedExit]:
    """The member's exits from journeys recorded by `until`, oldest first."""
    j = journey_steps_table
    rows = conn.execute(sa.select(j.c.flow, j.c.instance, j.c.step, j.c.reached_at, j.c.detail)
                        .where(j.c.member_ref == member_ref, j.c.created_at <= until)
                        .order_by(j.c.flow, j.c.instance, j.c.id)).all()
    found, before = [], None
    for n, row in enumerate(rows):
        same = n and (rows[n - 1].flow, rows[n - 1].instance) == (row.flow, row.instance)
        before = rows[n - 1].step if same else None
        if row.step == EXIT:
            found.append(RecordedExit(row.flow, row.instance, before, row.reached_at, row.detail or ""))
    return sorted(found, key=lambda e: e.at)


def journeys_recorded(conn: sa.Connection) -> list[str]:
    """Every flow name journey_steps holds rows for."""
    j = journey_steps_table
    return sorted(r[0] for r in conn.execute(sa.select(j.c.flow).distinct()))


# -- time ------------------------------------------------------------------------------------

def wait_end(step: WaitStep, start: datetime, zone: ZoneInfo) -> datetime:
    """When a wait that began at `start` ends. Whole days keep the local time of day across a
    DST change; a time of day is the next one strictly after `start`, in the member's zone."""
    if step.until is not None:
        local = start.astimezone(zone)
        end = datetime.combine(local.date(), step.until, tzinfo=zone)
        if end <= local:
            end = datetime.combine(local.date() + timedelta(days=1), step.until, tzinfo=zone)
        return end.astimezone(timezone.utc)
    assert step.duration is not None
    days = step.duration.days_exact()
    if days:
        return (start.astimezone(zone) + timedelta(days=days)).astimezone(timezone.utc)
    return start + step.duration.span()


# -- one chunk of members -------------------------------------------------------------------

class ChunkFacts:
    """What a chunk's journeys ask of the database, each asked once per chunk on first need:
    which members a rule holds for at `now`, and their events of one type since `since`."""

    def __init__(self, conn: sa.Connection, refs: list[int], ctx: Callable[[], Context], now: datetime,
                 since: datetime, segment_rule: Callable[[str], Rule]) -> None:
        self.conn, self.refs, self.ctx, self.now, self.since = conn, refs, ctx, now, since
        self.segment_rule = segment_rule
        self._rules: dict[int, set[int]] = {}
        self._events: dict[str, dict[int, list[datetime]]] = {}

    def holds_segment(self, name: str, member_ref: int) -> bool:
        return self.holds(self.segment_rule(name), member_ref)

    def holds(self, rule: Rule, member_ref: int) -> bool:
        if id(rule) not in self._rules:
            m = members_table
            ctx = replace(self.ctx(), members=tuple(self.refs))  # aggregates for this chunk alone
            query = sa.select(m.c.id).where(m.c.id.in_(self.refs), compile_rule(rule, ctx))
            self._rules[id(rule)] = {r.id for r in self.conn.execute(query)}
        return member_ref in self._rules[id(rule)]

    def event_after(self, kind: str, member_ref: int, after: datetime, until: datetime) -> datetime | None:
        """The first event of type `kind` of the member in (after, until]."""
        if kind not in self._events:
            e = events_table
            found: dict[int, list[datetime]] = defaultdict(list)
            for row in self.conn.execute(sa.select(e.c.member_ref, e.c.occurred_at).where(
                    e.c.member_ref.in_(self.refs), e.c.type == kind, e.c.occurred_at > self.since,
                    e.c.occurred_at <= self.now).order_by(e.c.member_ref, e.c.occurred_at)):
                found[row.member_ref].append(row.occurred_at)
            self._events[kind] = found
        times = self._events[kind].get(member_ref, [])
        i = bisect_right(times, after)
        return times[i] if i < len(times) and times[i] <= until else None


SendDecision = Callable[[Occurrence], "PlannedSend | Skip"]


class Walker:
    """Moves one instance through its journey at `plan.now`; adds sends, skips, rows and its
    position to `plan`."""

    def __init__(self, journey: Journey, facts: ChunkFacts, plan: Plan, decide_send: SendDecision,
                 zone_default: str, recorded: Collection[tuple[int, str, str]] = ()) -> None:
        self.journey, self.facts, self.plan, self.decide_send = journey, facts, plan, decide_send
        self.zone_default = zone_default
        self.recorded = recorded   # (member, flow, occurrence key) the ledger holds: sends decided before

    def start(self, occ: Occurrence) -> None:
        """A trigger occurrence of an instance not started yet (its policy already passed)."""
        self._walk(occ, occ.key, occ.data, self.journey.first, occ.due_at, None, entering=True)

    def resume(self, occ: Occurrence) -> None:
        """An open instance: go on from its latest row."""
        data, journey = occ.data, self.journey
        step_id, reached, ready = data["step"], data["reached_at"], data["ready_at"]
        step = journey.by_id.get(step_id)
        if step is None:
            where = f"at step {step_id} (no longer in the journey)"
            if self._exits(occ, occ.key, where):
                return
            self._exit(occ, occ.key, self.plan.now, step_removed(step_id), "step removed by an edit", where,
                       f"step {step_id} was removed by an edit")
            return
        given = data.get("trigger") or {}   # the trigger's data, as the first email had it
        if isinstance(step, BranchStep):
            nxt = journey.then_next[step.id] if data["outcome"] == "then" else journey.else_next[step.id]
            self._walk(occ, occ.key, given, nxt, reached, step_id)
        elif isinstance(step, WaitUntilStep):
            self._walk(occ, occ.key, given, step.id, reached, step_id, waiting=(reached, ready))
        else:
            self._walk(occ, occ.key, given, journey.after[step.id], ready or reached, step_id)

    # ---------------------------------------------------------------------------------------

    def _walk(self, occ: Occurrence, instance: str, data: dict[str, Any], cursor: str | None,
              at: datetime, last: str | None, waiting: tuple[datetime, datetime] | None = None,
              entering: bool = False) -> None:
        """`entering`: the instance starts now. A later tick reads the trigger's data back from its
        first email; until one is decided (planned, or recorded as skipped) nothing of the entry is
        recorded when a send is held back (frequency cap, pause), so the trigger enters again."""
        journey, now, facts = self.journey, self.plan.now, self.facts
        mark, carried = len(self.plan.steps), not entering
        zone_name = occ.timezone or self.zone_default
        zone = ZoneInfo(zone_name)
        note = ""
        for _ in range(len(journey.by_id) + 2):
            if self._exits(occ, instance, self._where(cursor, waiting is not None)):
                return
            if waiting is not None:  # a wait_until reached earlier (or just now): resolve it
                step = journey.by_id[cursor or ""]
                assert isinstance(step, WaitUntilStep)
                reached, timeout = waiting
                came = (facts.event_after(step.event, occ.member_ref, reached, min(now, timeout))
                        if step.event else now if step.segment and facts.holds_segment(step.segment, occ.member_ref)
                        else None)
                if came is not None:
                    cursor, at, waiting = journey.after[step.id], max(came, reached), None
                elif timeout <= now:
                    cursor, at, waiting = journey.timeout_next[step.id], timeout, None
                else:
                    last = step.id
                    break
                continue
            if cursor is None:
                self._row(occ, instance, END, "completed", at, None, "reached the end of the journey")
                return
            if at > now:
                break
            step = journey.by_id[cursor]
            if isinstance(step, SendStep) and (occ.member_ref, journey.flow, f"{instance}/{step.id}") in self.recorded:
                # decided before (the steps were reordered since): never again, the member goes on
                last, cursor = step.id, journey.after[step.id]
                continue
            if isinstance(step, SendStep):
                send_occ = Occurrence(
                    flow=occ.flow, member_ref=occ.member_ref, member_id=occ.member_id, email=occ.email,
                    timezone=occ.timezone, subscribed=occ.subscribed, key=f"{instance}/{step.id}",
                    occurred_at=at, due_at=at,
                    reason=f"{journey.flow} step {journey.number[step.id]}: send {step.template}",
                    data={**(data or {"kind": "journey"}), "key": f"{instance}/{step.id}", "step": step.id},
                    template=step.template)
                decided = self.decide_send(send_occ)
                carried = carried or isinstance(decided, PlannedSend) or decided.record_as is not None
                if isinstance(decided, PlannedSend):
                    self.plan.add_send(decided)
                    self._row(occ, instance, step.id, "planned", at, decided.scheduled_for, decided.reason)
                    at, last, cursor = decided.scheduled_for, step.id, journey.after[step.id]
                    continue
                self.plan.add_skip(decided)
                if decided.record_as is None:      # frequency cap: decided again next time
                    note = decided.reason
                    if not carried:   # no email holds the trigger's data: the entry is not recorded
                        del self.plan.steps[mark:]
                    break
                self._row(occ, instance, step.id, decided.record_as, at, at, decided.reason)
                if decided.record_as == "suppressed":
                    kind = decided.reason.split(":")[0].split(" (")[0]
                    self._exit(occ, instance, at, f"{LEFT}{decided.reason}", f"left: {kind}",
                               f"at step {journey.number[step.id]} ({describe(step)})",
                               f"left the journey: {decided.reason}")
                    return
                last, cursor = step.id, journey.after[step.id]
            elif isinstance(step, WaitStep):
                end = wait_end(step, at, zone)
                self._row(occ, instance, step.id, "waiting", at, end, describe(step))
                at, last, cursor = end, step.id, journey.after[step.id]
            elif isinstance(step, WaitUntilStep):
                timeout = at + step.timeout.span()
                self._row(occ, instance, step.id, "waiting", at, timeout, describe(step))
                waiting, last = (at, timeout), step.id
            else:
                held = self._holds(occ, step.condition)
                self._row(occ, instance, step.id, "then" if held else "else", at, at,
                          "the condition held" if held else "the condition did not hold")
                last = step.id
                cursor = journey.then_next[step.id] if held else journey.else_next[step.id]
        self._position(occ, instance, last, cursor, at, waiting, zone_name, note)

    def _holds(self, occ: Occurrence, rule: Rule) -> bool:
        """Whether `rule` holds for the member at `now`: from the in-flight query, else asked once
        per chunk."""
        known = occ.data.get("rules")
        if known is not None and id(rule) in known:
            return bool(known[id(rule)])
        return self.facts.holds(rule, occ.member_ref)

    def _where(self, cursor: str | None, waiting: bool) -> str:
        """Where a member leaving now stands: before the step `cursor`, or while waiting at it."""
        if cursor is None:
            return "before the end"
        step = self.journey.by_id[cursor]
        return f"{'while at' if waiting else 'before'} step {self.journey.number[cursor]} ({describe(step)})"

    def _exits(self, occ: Occurrence, instance: str, where: str) -> bool:
        rule = self.journey.exit_when
        if rule is None or not self._holds(occ, rule):
            return False
        self._exit(occ, instance, self.plan.now, EXIT_WHEN, EXIT_WHEN, where,
                   f"exit_when {self.journey.exit_text} matched")
        return True

    def _exit(self, occ: Occurrence, instance: str, at: datetime, recorded: str, reason: str, where: str,
              detail: str) -> None:
        """The `$exit` row (`recorded`: its detail, which reports count by) and the exit shown."""
        self._row(occ, instance, EXIT, "exited", at, None, recorded)
        self.plan.add_exit(Exit(occ.member_id, self.journey.flow, instance, reason, where, detail))

    def _row(self, occ: Occurrence, instance: str, step: str, outcome: str, reached: datetime,
             ready: datetime | None, detail: str) -> None:
        self.plan.add_step(StepRow(occ.member_ref, occ.flow.name, instance, step, outcome, reached, ready,
                                   detail[:300]))

    def _position(self, occ: Occurrence, instance: str, last: str | None, cursor: str | None,
                  at: datetime, waiting: tuple[datetime, datetime] | None, zone: str, note: str) -> None:
        journey = self.journey
        if note and cursor is not None:      # a due step held back: they stand before it
            step = journey.by_id[cursor]
            position = Position(occ.member_id, journey.flow, instance, step.id, journey.number[step.id],
                                describe(step), None, zone, note)
        elif last is not None and last in journey.by_id:
            step = journey.by_id[last]
            until = waiting[1] if waiting is not None else at
            position = Position(occ.member_id, journey.flow, instance, last, journey.number[last],
                                describe(step), until, zone)
        else:   # not started yet: the trigger's delay
            position = Position(occ.member_id, journey.flow, instance, "", 0, "entering", at, zone)
        self.plan.add_position(position)


# -- an edit and the members in flight --------------------------------------------------------

def edits_in_flight(engine: sa.Engine, journeys: dict[str, Journey], disabled: set[str]) -> list[str]:
    """What the journeys as configured now do to the members in flight (open instances in
    journey_steps): one line per journey; empty when the database holds none yet."""
    url = engine.url
    if url.get_backend_name() == "sqlite" and url.database and not os.path.exists(url.database):
        return []
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(journey_steps_table.name):
                return []
            recorded = journeys_recorded(conn)
            standing = {flow: positions_by_step(conn, flow) for flow in sorted(set(recorded) | set(journeys))}
    except sa.exc.OperationalError as exc:
        return [f"journeys in flight: not checked, the database is not reachable ({str(exc).splitlines()[0]})"]
    lines = []
    for flow, at in standing.items():
        total = sum(at.values())
        if not total:
            continue
        journey = journeys.get(flow)
        if journey is None:
            lines.append(f"journey {flow}: {_members(total)} in it, and it is no longer a journey in "
                         "config.yaml: they stay where they are until it returns")
            continue
        if flow in disabled:
            lines.append(f"journey {flow}: {_members(total)} in it, and it is disabled: they wait where "
                         "they are until it is enabled")
        removed = {step: n for step, n in at.items() if step not in journey.by_id}
        for step, n in sorted(removed.items()):
            lines.append(f"journey {flow}: {_members(n)} at step {step}, which this edit removes: they will exit")
        if not removed:
            lines.append(f"journey {flow}: {_members(total)} in flight, every one at a step that remains")
        ordinal = {step: n for step, n in at.items() if step in journey.ordinal}
        for step, n in sorted(ordinal.items()):
            lines.append(f"journey {flow}: {_members(n)} at step {step}, whose id is derived from its content "
                         "and its place among like steps: an edit to a like step can hand that id to another; "
                         "give these steps an explicit id: before editing them")
    return lines


def _members(n: int) -> str:
    return f"{n:,} member{'' if n == 1 else 's'} {'is' if n == 1 else 'are'}"

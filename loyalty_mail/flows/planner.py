"""The planner: at instant `now`, which member is due which email, and why; and every skip.

A pure function of (database state, settings, now). It never reads the clock and never writes:
`record` (ledger.py) stores the decisions, the dry-run prints them. Policy, in order, for each
occurrence a flow's trigger produced (flows of higher priority first, per member):

    already recorded    the (member, flow, occurrence) is in the ledger: never again
    superseded          another occurrence of the same moment wins (highest threshold, latest tier)
    trigger's skip      the trigger fired but says why not to send (a statement with nothing in it)
    not due yet         the flow's delay has not passed (not recorded; planned later)
    too late            due longer ago than the flow's lateness (recorded as skipped)
    suppressed          unsubscribed, or on the suppression list (recorded)
    topic               the member left the flow's topic (recorded as suppressed)
    paused              the member paused email (not recorded; decided again after the pause)
    not confirmed       double opt-in: marketing waits for the member's confirmation (not recorded)
    held out            in the flow's deterministic hold-out group (recorded, not sent)
    frequency cap       too many marketing emails in the period (not recorded; retried later);
                        service flows (`class: service`) are outside it
    quiet hours         planned, scheduled for the end of the member's quiet hours; skipped as
                        too late (recorded) when that end is more than the flow's lateness
                        after the occurrence was due
"""

from __future__ import annotations

import hashlib
import heapq
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from .. import campaigns as campaign_files
from ..config import FlowSettings, QuietHours, Settings, VariantSettings
from ..durations import format_span as human  # `2 days`: a span as config.yaml writes it
from ..errors import ConfigError
from ..instants import local_text
from .. import consent
from ..models import members_table, sends_table, suppressions_table
from ..segments import SegmentCatalog, context_for
from ..members import member_row
from ..segments.compiler import Context, compile_rule, event_filter
from ..segments.spec import ValueRule, parse_event_where, references
from ..tiers import TierLadder
from ..yaml_source import YamlDocument
from ..segments.explain import why_not
from .. import tier_review
from ..points import expiry
from . import journeys, ledger, member_triggers, variants
from . import occurrences as triggers
from .decisions import PlannedSend, Skip
from .journey_spec import (END, Journey, SendStep, WaitUntilStep, ab_test_name, describe, email_reference_problems,
                           flow_journey)
from .journeys import ChunkFacts, Exit, Position, StepRow, Walker
from .occurrences import ACTIVE_STATES, Occurrence, Window

CHUNK = 500
EXAMPLES = 3   # members named for each journey and reason of an exit
MEMBER_TRIGGERS = ("tier_at_risk", "tier_downgrade", "birthday", "reward_available", "statement")


@dataclass
class Plan:
    """The planner's decisions at `now`. With `keep` (dry runs, explain, tests) every decision is
    kept; without it (a tick that records as it goes) only the counts, so memory stays flat."""

    now: datetime
    keep: bool = True
    sends: list[PlannedSend] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)
    already: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    tally: Counter[tuple[str, str]] = field(default_factory=Counter)      # (flow, planned|deferred|...)
    reasons: Counter[tuple[str, str]] = field(default_factory=Counter)    # (flow, kind of skip or deferral)
    segments: dict[str, str] = field(default_factory=dict)                # flow -> its segment
    steps: list[StepRow] = field(default_factory=list)                     # journey rows to record
    positions: list[Position] = field(default_factory=list)                # journeys: where members are
    at_step: Counter[tuple[str, int, str]] = field(default_factory=Counter)  # (journey, step number, what)
    warnings: list[str] = field(default_factory=list)  # scheduled campaigns left out, and why
    exits: Counter[tuple[str, str]] = field(default_factory=Counter)      # (journey, reason)
    exit_examples: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # a few members each
    exited: list[Exit] = field(default_factory=list)

    def add_exit(self, leaving: Exit) -> None:
        key = (leaving.flow, leaving.reason)
        self.exits[key] += 1
        examples = self.exit_examples.setdefault(key, [])
        if len(examples) < EXAMPLES:
            examples.append(leaving.member_id)
        if self.keep:
            self.exited.append(leaving)

    def add_step(self, row: StepRow) -> None:
        if self.keep:
            self.steps.append(row)

    def add_position(self, position: Position) -> None:
        self.at_step[(position.flow, position.number, position.what)] += 1
        if self.keep:
            self.positions.append(position)

    def add_send(self, send: PlannedSend) -> None:
        flow = send.occurrence.flow
        self.tally[(flow.name, "deferred" if send.deferred else "planned")] += 1
        if send.deferred:
            self.reasons[(flow.name, send.deferred.split(" until")[0])] += 1
        self.segments.setdefault(flow.name, flow.segment or "")
        if self.keep:
            self.sends.append(send)

    def add_skip(self, skip: Skip) -> None:
        flow = skip.occurrence.flow
        self.tally[(flow.name, "held_out" if skip.record_as == "held_out" else "skipped")] += 1
        self.reasons[(flow.name, skip.reason.split(":")[0].split(" (")[0])] += 1
        self.segments.setdefault(flow.name, flow.segment or "")
        if self.keep:
            self.skips.append(skip)

    def absorb(self, part: Plan) -> None:
        """Add the decisions of `part` (one chunk of members) to this plan: its counts, and its
        decisions themselves when this plan keeps them."""
        self.tally.update(part.tally)
        self.reasons.update(part.reasons)
        for flow, segment in part.segments.items():
            self.segments.setdefault(flow, segment)
        for flow, count in part.already.items():
            self.already[flow] += count
        self.at_step.update(part.at_step)
        self.exits.update(part.exits)
        for key, members in part.exit_examples.items():
            examples = self.exit_examples.setdefault(key, [])
            examples += members[:EXAMPLES - len(examples)]
        if self.keep:
            self.exited += part.exited
            self.sends += part.sends
            self.skips += part.skips
            self.steps += part.steps
            self.positions += part.positions

    def total(self, column: str) -> int:
        return sum(n for (_, name), n in self.tally.items() if name == column)

    def counts(self) -> dict[str, dict[str, int]]:
        """Per flow: planned, deferred (quiet hours), held out, skipped, already recorded."""
        table: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for (flow, column), count in self.tally.items():
            table[flow][column] += count
        for flow, count in self.already.items():
            table[flow]["already"] += count
        return {flow: dict(values) for flow, values in table.items()}


@dataclass(frozen=True)
class FlowExplanation:
    """One flow's answer for one member at an instant: what it would send, what it skips and
    why, what the ledger held by then, and (when none of those) why the flow has nothing."""

    flow: str
    trigger: str
    template: str
    due: list[PlannedSend]
    skipped: list[Skip]
    recorded: list[ledger.Entry]
    already: int            # occurrences found that the ledger already held
    reason: str | None      # why the flow produced no occurrence, when it produced none
    journey: list[Position] = field(default_factory=list)   # a journey: where the member is in it
    exits: list[Exit] = field(default_factory=list)          # a journey: leaving it at `at`
    exited: list[str] = field(default_factory=list)          # a journey: exits recorded by `at`


@dataclass(frozen=True)
class Explanation:
    """`Planner.explain`: a member as stored, and each flow's answer at `at`."""

    member: dict[str, Any]
    at: datetime
    flows: list[FlowExplanation]
    zone: str = "UTC"   # the member's time zone (the program's when the member has none)


def in_holdout(flow: str, member_id: str, percent: Decimal | float) -> bool:
    """Deterministic and stable: the same members are held out of a flow on every run."""
    if not percent:
        return False
    digest = hashlib.sha256(f"holdout\x00{flow}\x00{member_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 10_000 < float(percent) * 100


def quiet_until(moment: datetime, zone: ZoneInfo, quiet: QuietHours) -> datetime | None:
    """The end of the quiet window `moment` falls in (member's local time), or None."""
    local = moment.astimezone(zone)
    now_t = local.time().replace(tzinfo=None)
    start, end = quiet.start, quiet.end
    inside = (start <= now_t or now_t < end) if start > end else (start <= now_t < end)
    if not inside:
        return None
    day = local.date() if now_t < end else local.date() + timedelta(days=1)
    return datetime.combine(day, end, tzinfo=zone)  # zoneinfo resolves DST gaps and folds


@dataclass(frozen=True)
class _Standing:
    """What the members of one chunk agreed to receive: topics they left, pauses, and who has
    not confirmed their address yet (double opt-in)."""

    left: set[tuple[int, str]]
    paused: dict[int, datetime]
    unconfirmed: set[int]


class Planner:
    """Plans for one program: flows resolved against segments once, then `plan(conn, now)`."""

    def __init__(self, settings: Settings, segments: SegmentCatalog, dialect: str, *,
                 chunk_size: int = CHUNK, templates: Collection[str] | None = None) -> None:
        self.settings, self.segments, self.dialect = settings, segments, dialect
        self.chunk_size = chunk_size
        self.templates = set(templates) if templates is not None else None  # None: not checked
        problems = [f"flow '{f.name}': unknown segment '{f.segment}' (segments: "
                    f"{', '.join(sorted(segments.segments)) or 'none'})"
                    for f in settings.flows if f.segment and f.segment not in segments.segments]
        if problems:
            raise ConfigError(problems)
        self.flows = sorted((f for f in settings.flows if f.enabled), key=lambda f: (-f.priority, f.name))
        self.event_where: dict[str, tuple[ValueRule, ...]] = {}
        for f in settings.flows:
            if f.where is not None:  # checked at its line when the settings were loaded
                where, wrong = parse_event_where(f.where, YamlDocument(f"flow '{f.name}' where:", f.where), ())
                if wrong:
                    raise ConfigError(wrong)
                self.event_where[f.name] = where
        self._last_context: Context | None = None
        self.journeys: dict[str, Journey] = {}
        ladder = TierLadder.from_settings(settings.tiers)
        for f in settings.flows:
            if f.is_journey:  # checked at its lines when the settings were loaded
                journey, wrong = flow_journey(f, ladder)
                if journey is None:
                    raise ConfigError(wrong)
                self.journeys[f.name] = journey
                problems += self._journey_references(journey, segments)
        problems += self._email_references()
        if problems:
            raise ConfigError(problems)

    def _email_references(self) -> list[str]:
        """Journeys' `emails:` conditions name a flow that exists and a step that journey has
        (checked at their lines when the settings were loaded from config.yaml)."""
        flows = {f.name for f in self.settings.flows}
        return list(dict.fromkeys(message for journey in self.journeys.values()
                                  for _, message in email_reference_problems(journey, flows, self.journeys)))

    @staticmethod
    def _journey_references(journey: Journey, segments: SegmentCatalog) -> list[str]:
        names = [ref.name for rule in journey.rules() for ref in references(rule)]
        names += [s.segment for s in journey.by_id.values() if isinstance(s, WaitUntilStep) and s.segment]
        return [f"flow '{journey.flow}': unknown segment '{name}' (segments: "
                f"{', '.join(sorted(segments.segments)) or 'none'})"
                for name in dict.fromkeys(names) if name not in segments.segments]

    def plan_in(self, engine: sa.Engine, now: datetime, *, review: bool = False,
                before: Callable[[sa.Connection], None] | None = None, **kwargs: Any) -> Plan:
        """`plan` on a connection of its own (nothing it writes is kept). With `review`, what a
        tick applies before planning (the points expiry, then the tier review) is applied first
        and rolled back with the rest: the dry run sees the expiries and moves a run records.
        `before` writes on that connection first, rolled back too (the dry run's A/B winners)."""
        with engine.connect() as conn:
            if review:
                members = kwargs.get("members")
                if members is None:   # as run_once: a wake-up for some members records no expiry
                    expiry.record_due(conn, self.settings, now)
                tier_review.apply(conn, self.settings, now, members=members,
                                  since=now - self.settings.sending.lookback)
            if before is not None:
                before(conn)
            plan = self.plan(conn, now, **kwargs)
            conn.rollback()
        return plan

    def plan(self, conn: sa.Connection, now: datetime, *, member_ref: int | None = None,
             members: Collection[int] | None = None, flows: Iterable[str] | None = None,
             plan: Plan | None = None, on_part: Callable[[Plan], None] | None = None,
             campaigns: bool | None = None) -> Plan:
        """Decide for every occurrence due at `now`, streaming: each flow's trigger query yields
        its occurrences in member order (from a server-side cursor on PostgreSQL), the streams are
        merged, and members are decided a chunk at a time (a member's occurrences never split).
        `on_part` receives each chunk's decisions (the tick records them at once); `plan` (default:
        one that keeps everything) adds them up. `member_ref` or `members` (their ids) plan only
        those members: explain, and the daemon's wake-up for members with new data. Scheduled
        campaigns are planned with every flow (`flows` None), when `flows` names them, or when
        `campaigns` is True."""
        wanted = set(flows) if flows is not None else None
        plan = plan if plan is not None else Plan(now)
        every = wanted is None if campaigns is None else campaigns
        expired: set[str] = set()  # named campaigns past their window, shown in a preview
        scheduled = self._campaigns(conn, now, preview=plan.keep, warnings=plan.warnings,
                                    named=wanted or set(), expired=expired)
        chosen = sorted([*(f for f in self.flows if wanted is None or f.name in wanted),
                         *(c.as_flow() for c in scheduled.values() if every or c.name in (wanted or ()))],
                        key=lambda f: (-f.priority, f.name))
        winners = variants.winners(conn, now)
        exempt = {f.name for f in (*self.settings.flows, *(c.as_flow() for c in scheduled.values()))
                  if not f.frequency_cap}
        only = [member_ref] if member_ref is not None else None if members is None else sorted(members)
        listing = plan.keep   # a plan that lists its decisions lists every member in a journey too
        streams = [self._occurrences(conn, flow, now, only, scheduled.get(flow.name), listing) for flow in chosen]
        merged = heapq.merge(*streams, key=lambda o: o.member_ref)
        for chunk in _member_chunks(merged, self.chunk_size):
            chunk.sort(key=lambda o: (o.member_ref, -o.flow.priority, o.due_at, o.flow.name, o.key))
            part = Plan(now)
            self._decide(conn, chunk, part, winners, exempt, expired)
            if on_part is not None:
                on_part(part)
            plan.absorb(part)
        if only is None and not listing:   # the members who only wait were not streamed: count them
            for flow in chosen:
                journey = self.journeys.get(flow.name)
                if journey is not None:
                    for step, count in journeys.waiting(conn, journey, now,
                                                        self._exit_condition(journey, now)).items():
                        if step in journey.by_id:
                            plan.at_step[(flow.name, journey.number[step], describe(journey.by_id[step]))] += count
        return plan

    def explain(self, conn: sa.Connection, member_id: str, at: datetime) -> Explanation:
        """For every flow (disabled ones too): is this member due at `at`, and if not, which
        reason holds. The same planning as `plan`, for one member, with the ledger as it stood
        at `at`; a flow with no occurrence says which segment rule or trigger condition failed."""
        ref = member_row(conn, member_id)["id"]
        # what a run records first, for this member; the caller does not commit
        expiry.record_due(conn, self.settings, at, members=[ref])
        tier_review.apply(conn, self.settings, at, members=[ref], since=at - self.settings.sending.lookback)
        member = member_row(conn, member_id)
        plan = self.plan(conn, at, member_ref=ref)
        history = ledger.history(conn, ref, at)
        left = journeys.recorded_exits(conn, ref, at)
        zone = member["timezone"] or self.settings.program.default_timezone
        answers = []
        for flow in self.settings.flows:
            due = [s for s in plan.sends if s.occurrence.flow.name == flow.name]
            skipped = [s for s in plan.skips if s.occurrence.flow.name == flow.name]
            already = plan.already.get(flow.name, 0)
            reason = None
            positions = [p for p in plan.positions if p.flow == flow.name]
            exits = [e for e in plan.exited if e.flow == flow.name]
            exited = [e.summary(self.journeys.get(flow.name), zone) for e in left if e.flow == flow.name]
            if not flow.enabled:
                reason = "flow disabled"
            elif not (due or skipped or already or positions or exits):
                reason = self._absent(conn, flow, ref, at)
            answers.append(FlowExplanation(
                flow.name, flow.trigger, flow.template or "(journey)", due, skipped,
                [row for row in history if row.flow == flow.name], already, reason, positions, exits, exited))
        return Explanation({k: v for k, v in member.items() if k != "id"}, at, answers, zone)

    def _absent(self, conn: sa.Connection, flow: FlowSettings, member_ref: int, at: datetime) -> str:
        if flow.segment:
            ctx = context_for(self.settings, self.segments, at, self.dialect)
            outside = why_not(conn, self.segments.segments[flow.segment], ctx, member_ref)
            if outside is not None:
                return outside
        window = Window.for_flow(flow, self.settings, at)
        if flow.trigger in MEMBER_TRIGGERS:
            return member_triggers.absent(conn, flow, self.settings, window, member_ref,
                                          self.settings.program.default_timezone)
        return triggers.absent(conn, flow, window, member_ref, self.settings.program.default_timezone)

    # -- occurrences -------------------------------------------------------------------------

    def campaign_members(self, conn: sa.Connection, campaign: campaign_files.Campaign,
                         now: datetime) -> Iterator[Occurrence]:
        """Who gets `campaign` and when, in member order: its audience at `now` that the ledger
        does not hold yet, each with their send time (`campaigns preview`; the dry run adds the
        policy: suppression, the frequency cap, quiet hours)."""
        if campaign.segment and campaign.segment not in self.segments.segments:
            raise ConfigError(f"campaign '{campaign.name}': unknown segment '{campaign.segment}'")
        return self._occurrences(conn, campaign.as_flow(), now, None, campaign)

    def campaign_last_send(self, conn: sa.Connection, campaign: campaign_files.Campaign,
                           now: datetime) -> datetime | None:
        """The latest send time of `campaign`'s audience at `now`, throttle included; None when
        the throttle puts some member at or after SEND_LIMIT (`campaigns schedule` refuses it)."""
        if campaign.segment and campaign.segment not in self.segments.segments:
            raise ConfigError(f"campaign '{campaign.name}': unknown segment '{campaign.segment}'")
        size = 1
        if campaign.throttle is not None:
            audience = self._segment_condition(campaign.segment, now) if campaign.segment else None
            size = triggers.audience_size(conn, audience)
        return campaign.last_send(self.settings.program.default_timezone, size)

    def campaign_problem(self, campaign: campaign_files.Campaign) -> str | None:
        """Why a scheduled campaign cannot be planned (its segment or its email has gone), or None."""
        c = campaign
        if c.segment and c.segment not in self.segments.segments:
            return (f"campaign '{c.name}' is skipped: its segment '{c.segment}' is no longer in segments/ "
                    f"(restore it, or `loyalty-mail campaigns cancel {c.name}`)")
        missing = [t for t in dict.fromkeys([c.template, *(v.template for v in c.variants if v.template)])
                   if self.templates is not None and t not in self.templates]
        if missing:
            return (f"campaign '{c.name}' is skipped: no email template {', '.join(repr(t) for t in missing)} "
                    f"in templates/ (restore it, or `loyalty-mail campaigns cancel {c.name}`)")
        return None

    def _campaigns(self, conn: sa.Connection, now: datetime, *, preview: bool, warnings: list[str] | None = None,
                   named: Collection[str] = (), expired: set[str] | None = None
                   ) -> dict[str, campaign_files.Campaign]:
        """Campaigns scheduled at `now` that may have members to plan: from their earliest send
        time (at any time in a preview, which shows who gets it when) until their latest one,
        throttle and lateness included, has passed. One whose segment has gone, or whose times
        cannot be computed, is left out with a sentence added to `warnings`: one bad campaign
        never stops the other flows. A preview shows a campaign of `named` past its window too,
        its members skipped as too late (added to `expired`: a run records nothing for them, as
        it no longer looks at the campaign)."""
        zone = self.settings.program.default_timezone
        found: list[str] = []
        chosen = {}
        for row in campaign_files.scheduled(conn, now, problems=found):
            c = row.campaign
            problem = self.campaign_problem(c)
            if problem:
                found.append(problem)
                continue
            try:
                first, last = c.span(zone)
                if now < first and not preview:
                    continue
                if now > last + c.lateness:
                    final = last if c.throttle is None else self.campaign_last_send(conn, c, now)
                    if final is not None and now > final + c.lateness:  # None: members beyond are skipped
                        if not (preview and c.name in named):
                            continue
                        if expired is not None:
                            expired.add(c.name)
            except OverflowError:
                message = (f"campaign '{c.name}' is skipped: its send times fall outside the dates that can "
                           "be computed (check its at:, throttle and lateness)")
                found.append(message)
                continue
            chosen[c.name] = c
        if warnings is not None:
            warnings += [w for w in found if w not in warnings]
        return chosen

    def _occurrences(self, conn: sa.Connection, flow: FlowSettings, now: datetime,
                     members: list[int] | None, campaign: campaign_files.Campaign | None = None,
                     every: bool = True) -> Iterator[Occurrence]:
        window = Window.for_flow(flow, self.settings, now)
        zone = self.settings.program.default_timezone
        audience = self._segment_condition(flow.segment, now) if flow.segment else None
        if campaign is not None:  # members count in the throttle's order before the filter
            yield from triggers.campaign(conn, flow, campaign, window, audience, zone, members)
            return
        if members is not None:
            only = members_table.c.id.in_(members) if len(members) != 1 else members_table.c.id == members[0]
            audience = only if audience is None else sa.and_(audience, only)
        if flow.is_journey:
            journey = self.journeys[flow.name]
            ctx = self._in_flight_context(journey, now)
            rules = [(rule, compile_rule(rule, ctx)) for rule in journey.rules()]
            positions = journeys.in_flight(conn, flow, journey, now, members, self._exit_condition(journey, now),
                                           every, rules)
            yield from heapq.merge(self._triggered(conn, flow, now, window, audience, zone), positions,
                                   key=lambda o: o.member_ref)
        else:
            yield from self._triggered(conn, flow, now, window, audience, zone)

    def _triggered(self, conn: sa.Connection, flow: FlowSettings, now: datetime, window: Window,
                   audience: sa.ColumnElement[bool] | None, zone: str) -> Iterator[Occurrence]:
        if flow.trigger == "welcome":
            yield from triggers.welcome(conn, flow, self.settings, window, audience, zone)
        elif flow.trigger == "milestone":
            if flow.thresholds:
                yield from triggers.points_milestones(conn, flow, self.settings, window, audience, zone)
            if flow.anniversaries:
                yield from triggers.anniversaries(conn, flow, self.settings, window, audience, zone,
                                                  self.dialect)
        elif flow.trigger == "tier_upgrade":
            yield from triggers.tier_upgrades(conn, flow, self.settings, window, audience, zone)
        elif flow.trigger == "tier_at_risk":
            yield from member_triggers.tier_at_risk(conn, flow, self.settings, window, audience, zone)
        elif flow.trigger == "tier_downgrade":
            yield from member_triggers.tier_downgrades(conn, flow, self.settings, window, audience, zone)
        elif flow.trigger == "birthday":
            yield from member_triggers.birthdays(conn, flow, self.settings, window, audience, zone, self.dialect)
        elif flow.trigger == "reward_available":
            yield from member_triggers.rewards(conn, flow, self.settings, window, audience, zone)
        elif flow.trigger == "statement":
            yield from member_triggers.statements(conn, flow, self.settings, window, audience, zone)
        elif flow.trigger == "confirmation":
            yield from member_triggers.confirmations(conn, flow, window, audience)
        elif flow.trigger == "points_expiring":
            yield from triggers.points_expiring(conn, flow, self.settings, window, audience, zone)
        elif flow.trigger == "event":
            where = self.event_where.get(flow.name, ())
            ctx = context_for(self.settings, self.segments, now, self.dialect)
            yield from triggers.events(conn, flow, self.settings, window, audience, zone,
                                       event_filter(where, ctx) if where else [])
        else:
            assert audience is not None
            yield from triggers.segment_entries(conn, flow, self.settings, window, audience, zone)

    def _exit_condition(self, journey: Journey, now: datetime) -> sa.ColumnElement[bool] | None:
        if journey.exit_when is None:
            return None
        return compile_rule(journey.exit_when, self._in_flight_context(journey, now))

    def _in_flight_context(self, journey: Journey, now: datetime) -> Context:
        """The context for a journey's rules over its members in flight: aggregates for them alone."""
        return replace(self._context(now), members=journeys.members_in(journey.flow))

    def _context(self, now: datetime) -> Context:
        """The segment language's context at `now`, built once per instant (it lists every time zone)."""
        if self._last_context is None or self._last_context.at != now:
            self._last_context = context_for(self.settings, self.segments, now, self.dialect)
        return self._last_context

    def _segment_condition(self, name: str, now: datetime) -> sa.ColumnElement[bool]:
        ctx = context_for(self.settings, self.segments, now, self.dialect)
        return compile_rule(self.segments.segments[name].rule, ctx)

    # -- policy ------------------------------------------------------------------------------

    def _decide(self, conn: sa.Connection, chunk: list[Occurrence], plan: Plan,
                winners: dict[str, variants.Winner], exempt: set[str], expired: Collection[str] = ()) -> None:
        refs = sorted({o.member_ref for o in chunk})
        flows = {o.flow.name for o in chunk}
        recorded = self._recorded(conn, refs, flows, plan.now)
        suppressed = self._suppressed(conn, {o.email.lower() for o in chunk})
        cap = self.settings.sending.frequency_cap
        capped = self._capped_counts(conn, refs, plan.now, exempt) if cap else {}
        topics = {t.name: t.default for t in self.settings.topics}
        standing = _Standing(
            left=consent.opted_out(conn, refs, topics) if topics else set(),
            paused=consent.paused(conn, refs, plan.now),
            unconfirmed=consent.unconfirmed(conn, refs) if self.settings.program.double_opt_in else set())
        entering = sorted({o.flow.name for o in chunk if o.flow.name in self.journeys
                           and o.data.get("kind") != "journey"})
        started = journeys.started(conn, refs, entering, plan.now) if entering else set()
        busy = {(o.member_ref, o.flow.name) for o in chunk if o.data.get("kind") == "journey"}
        facts = ChunkFacts(conn, refs, lambda: self._context(plan.now),
                           plan.now, min((o.occurred_at for o in chunk), default=plan.now),
                           lambda name: self.segments.segments[name].rule)

        def decide_send(occ: Occurrence) -> PlannedSend | Skip:
            return self._policy(occ, plan, suppressed, capped, standing, winners, holdout=False)

        for occ in chunk:
            flow = occ.flow
            journey = self.journeys.get(flow.name)
            if journey is not None:
                walker = Walker(journey, facts, plan, decide_send, self.settings.program.default_timezone, recorded)
                if occ.data.get("kind") == "journey":
                    walker.resume(occ)
                elif (occ.member_ref, flow.name, occ.key) in started:
                    plan.already[flow.name] += 1
                elif (occ.member_ref, flow.name) in busy:
                    plan.add_skip(Skip(occ, "already in the journey (one instance at a time)", None))
                else:
                    self._enter(occ, journey, plan, walker, decide_send)
                    busy.add((occ.member_ref, flow.name))
                continue
            if (occ.member_ref, flow.name, occ.key) in recorded:
                plan.already[flow.name] += 1
                continue
            decided = self._policy(occ, plan, suppressed, capped, standing, winners, holdout=True,
                                   expired=expired)
            if isinstance(decided, PlannedSend):
                plan.add_send(decided)
            else:
                plan.add_skip(decided)

    def _enter(self, occ: Occurrence, journey: Journey, plan: Plan, walker: Walker,
               decide_send: Callable[[Occurrence], PlannedSend | Skip]) -> None:
        """A trigger occurrence of a journey: enter it, or record why not (`$end`). Suppression,
        the frequency cap and quiet hours apply to each send step, not to the entry."""
        flow, now = occ.flow, plan.now
        first_send = next((s for s in journey.by_id.values() if isinstance(s, SendStep)), None)
        refusal: tuple[str, str] | None = None
        if occ.superseded_by:
            refusal = ("skipped", f"superseded by {occ.superseded_by} of the same moment")
        elif occ.due_at > now:
            plan.add_skip(Skip(occ, f"not due until {self._local(occ, occ.due_at)} (delay {human(flow.delay)})",
                               None))
            return
        elif occ.due_at < now - flow.lateness:
            refusal = ("skipped", f"too late: due {self._local(occ, occ.due_at)}, "
                                  f"more than {human(flow.lateness)} ago (the flow's lateness)")
        elif in_holdout(flow.name, occ.member_id, flow.holdout):
            refusal = ("held_out", f"held out of the whole journey ({flow.holdout}% hold-out group)")
        if refusal is None:
            walker.start(occ)
            return
        state, reason = refusal
        if first_send is not None:  # the ledger row reports compare the journey's sends with
            plan.add_skip(Skip(_step_occurrence(occ, occ.key, first_send, occ.due_at, reason), reason, state))
        plan.add_step(StepRow(occ.member_ref, flow.name, occ.key, END, state, now, None, reason[:300]))

    def _policy(self, occ: Occurrence, plan: Plan, suppressed: dict[str, str], capped: dict[int, int],
                standing: _Standing, winners: dict[str, variants.Winner], *, holdout: bool,
                expired: Collection[str] = ()) -> PlannedSend | Skip:
        """One occurrence through the flow's policy (see the module docstring), in order; a
        campaign in `expired` is past its window (a preview shows its members as too late, not
        recorded)."""
        flow, now = occ.flow, plan.now
        if occ.superseded_by:
            return Skip(occ, f"superseded by {occ.superseded_by} of the same moment", "skipped")
        if occ.skip:
            return Skip(occ, occ.skip, "skipped")
        due = self._local(occ, occ.due_at)
        if occ.due_at > now:
            return Skip(occ, f"not due until {due} (delay {human(flow.delay)})", None)
        if occ.due_at < now - flow.lateness:
            return Skip(occ, f"too late: due {due}, more than "
                             f"{human(flow.lateness)} ago (the flow's lateness)",
                        None if flow.name in expired else "skipped")
        if not occ.subscribed:
            return Skip(occ, "unsubscribed", "suppressed")
        if occ.email.lower() in suppressed:
            return Skip(occ, f"suppressed ({suppressed[occ.email.lower()]})", "suppressed")
        if flow.topic is not None and (occ.member_ref, flow.topic) in standing.left:
            return Skip(occ, f"topic: not subscribed to {flow.topic}", "suppressed")
        if occ.member_ref in standing.paused:
            return Skip(occ, f"paused: email paused until {self._local(occ, standing.paused[occ.member_ref])}", None)
        if flow.message_class == "marketing" and occ.member_ref in standing.unconfirmed:
            return Skip(occ, "not confirmed: double opt-in, marketing waits for the member to confirm "
                             "their address", None)
        if holdout and in_holdout(flow.name, occ.member_id, flow.holdout):
            return Skip(occ, f"held out ({flow.holdout}% hold-out group)", "held_out")
        scheduled, deferred = now, None
        quiet = self.settings.sending.quiet_hours
        if quiet and flow.quiet_hours:
            until = quiet_until(now, ZoneInfo(occ.timezone or self.settings.program.default_timezone), quiet)
            if until is not None and until > occ.due_at + flow.lateness:
                return Skip(occ, f"too late: due {due}, and quiet hours hold it until {self._local(occ, until)}, "
                                 f"more than {human(flow.lateness)} after (the flow's lateness)",
                            None if flow.name in expired else "skipped")
            if until is not None:
                scheduled = until
                deferred = f"quiet hours until {until:%H:%M} local ({until.tzinfo})"
        cap = self.settings.sending.frequency_cap
        if cap and flow.frequency_cap:
            sent = capped.get(occ.member_ref, 0)
            if sent >= cap.max:
                return Skip(occ, f"frequency cap: {sent} marketing emails within {human(cap.per)} "
                                 f"(max {cap.max})", None)
            capped[occ.member_ref] = sent + 1
        name, offered = self._test(occ)
        variant = variants.choose(name, occ.member_id, offered, winners)
        return PlannedSend(occ, scheduled, flow.segment, occ.reason, deferred, variant)

    def _local(self, occ: Occurrence, moment: datetime) -> str:
        """`moment` on the member's wall clock, with the zone (what every reason shows)."""
        return local_text(moment, occ.timezone or self.settings.program.default_timezone)

    def _test(self, occ: Occurrence) -> tuple[str, tuple[VariantSettings, ...]]:
        """The A/B test an occurrence's email belongs to: its flow's, or its journey step's
        (`<flow>.<step id>`, so each step is assigned independently)."""
        journey = self.journeys.get(occ.flow.name)
        if journey is None:
            return occ.flow.name, occ.flow.variants
        step = journey.by_id.get(str(occ.data.get("step")))
        if not isinstance(step, SendStep):
            return occ.flow.name, ()
        return ab_test_name(occ.flow.name, step.id), step.variants

    def _recorded(self, conn: sa.Connection, refs: list[int], flows: set[str],
                  now: datetime) -> dict[tuple[int, str, str], str]:
        """The ledger as it stood at `now`: rows recorded later had not happened yet (a dry run
        at a past instant replays that instant)."""
        s = sends_table
        rows = conn.execute(sa.select(s.c.member_ref, s.c.flow, s.c.occurrence_key, s.c.state)
                            .where(s.c.member_ref.in_(refs), s.c.flow.in_(sorted(flows)),
                                   s.c.created_at <= now))
        return {(r.member_ref, r.flow, r.occurrence_key): r.state for r in rows}

    def _suppressed(self, conn: sa.Connection, emails: set[str]) -> dict[str, str]:
        sup = suppressions_table
        rows = conn.execute(sa.select(sup.c.email, sup.c.reason)
                            .where(sa.func.lower(sup.c.email).in_(sorted(emails))))
        return {r.email.lower(): r.reason for r in rows}

    def _capped_counts(self, conn: sa.Connection, refs: list[int], now: datetime,
                       exempt: set[str]) -> dict[int, int]:
        """Marketing emails per member in the cap's period: every flow's and campaign's sends
        except those of `exempt` (frequency_cap: false)."""
        cap = self.settings.sending.frequency_cap
        assert cap is not None
        s = sends_table
        rows = conn.execute(sa.select(s.c.member_ref, sa.func.count())
                            .where(s.c.member_ref.in_(refs), s.c.flow.not_in(sorted(exempt)),
                                   s.c.state.in_(ACTIVE_STATES), s.c.scheduled_for > now - cap.per,
                                   s.c.created_at <= now)
                            .group_by(s.c.member_ref))
        return {ref: count for ref, count in rows}


def _step_occurrence(occ: Occurrence, instance: str, step: SendStep, at: datetime, reason: str) -> Occurrence:
    """The occurrence of one send step of a journey instance: key `<instance>/<step id>`."""
    return Occurrence(flow=occ.flow, member_ref=occ.member_ref, member_id=occ.member_id, email=occ.email,
                      timezone=occ.timezone, subscribed=occ.subscribed, key=f"{instance}/{step.id}",
                      occurred_at=at, due_at=at, reason=reason,
                      data={**occ.data, "key": f"{instance}/{step.id}", "step": step.id},
                      template=step.template)


def _member_chunks(occurrences: Iterable[Occurrence], size: int) -> Iterator[list[Occurrence]]:
    """Chunks of about `size` that never split one member's occurrences (the cap is decided per
    member); `occurrences` must come in member order."""
    chunk: list[Occurrence] = []
    for occ in occurrences:
        if len(chunk) >= size and occ.member_ref != chunk[-1].member_ref:
            yield chunk
            chunk = []
        chunk.append(occ)
    if chunk:
        yield chunk

"""One tick of the engine: plan at `now`, record, render and deliver what is due.

`run_once` is what `loyalty-mail run --once` and every daemon tick call. The dry run is the same
planning with a different last step: nothing is recorded, and (with `out`) each would-be email is
rendered untracked into a review folder.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from .. import db, tier_review
from ..campaigns.spec import CAMPAIGNS_DIR, campaign_files
from ..config import CONFIG_FILE, FlowSettings, Settings
from ..errors import Problem, TemplateError
from ..members import member_profile
from ..points.expiry import expire_points
from ..rendering import Renderer
from ..rendering.checks import untriggered_problems
from ..rendering.static_check import subject_problems
from ..segments import load_catalog
from ..tiers import TierLadder
from ..yaml_source import PathKey, load_yaml_file
from ..transports import Transport, transport_for  # noqa: F401 - re-exported for the CLI
from . import ledger
from .delivery import TickReport, deliver_due
from .dispatchers import deliver_in_parallel
from .journey_spec import Journey, ab_test_name, describe, flow_journey, parse_journey, sends_without_trigger
from .planner import Plan, Planner

log = logging.getLogger("loyalty_mail.run")


def build_planner(settings: Settings, dialect: str, templates: Collection[str] | None = None) -> Planner:
    """The planner of `settings`; with `templates` (the emails in templates/), a scheduled
    campaign whose email is missing is left out with a warning."""
    catalog, problems = load_catalog(settings)
    if problems:
        from ..errors import ConfigError
        raise ConfigError(problems)
    return Planner(settings, catalog, dialect, templates=templates)


def check_flow_templates(settings: Settings, renderer: Renderer) -> None:
    missing = [f"flow '{f.name}': no email template '{template}' in templates/ "
               f"(emails: {', '.join(renderer.catalog.names) or 'none'})"
               for f in settings.flows
               for template in dict.fromkeys([*f.templates(), *(v.template for v in f.variants if v.template)])
               if template not in renderer.catalog.variants]
    if missing:
        from ..errors import ConfigError
        raise ConfigError(missing)
    try:
        check_variant_subjects(settings.flows, renderer)
        ladder = TierLadder.from_settings(settings.tiers)
        for flow in settings.flows:
            journey = flow_journey(flow, ladder)[0] if flow.is_journey else None
            for step in journey.tests() if journey is not None else ():
                for variant in step.variants:
                    if variant.subject is not None:
                        renderer.check_subject(variant.subject, f"'{ab_test_name(flow.name, step.id)}' variant "
                                                                f"'{variant.name}' subject")
    except TemplateError:   # a subject that does not parse: at its line in config.yaml when found there
        located = [p for p in config_subject_problems(settings, renderer) if ": syntax error: " in p.message]
        if not located:
            raise
        raise TemplateError(located) from None


def check_variant_subjects(tests: Iterable[FlowSettings], renderer: Renderer) -> None:
    """TemplateError when an A/B variant's subject (of a flow, or a campaign as a flow) does not parse."""
    for test in tests:
        for variant in test.variants:
            if variant.subject is not None:
                renderer.check_subject(variant.subject, f"'{test.name}' variant '{variant.name}' subject")


def _tested_steps(steps: Any, path: PathKey) -> Iterable[PathKey]:
    """The path of every send step with `variants:` in a journey's raw `steps:` (nested ones too)."""
    for index, step in enumerate(steps if isinstance(steps, list) else []):
        if not isinstance(step, dict):
            continue
        if "send" in step and "variants" in step:
            yield path + (index,)
        branch = step.get("branch")
        if isinstance(branch, dict):
            yield from _tested_steps(branch.get("then"), path + (index, "branch", "then"))
            yield from _tested_steps(branch.get("else"), path + (index, "branch", "else"))
        yield from _tested_steps(step.get("on_timeout"), path + (index, "on_timeout"))


def journey_trigger_problems(journeys: Iterable[Journey], renderer: Renderer) -> list[Problem]:
    """Each email a journey sends at a step where the trigger's data is not in its context
    (after a wait with no email before it: see journey_spec.sends_without_trigger) that uses
    that data: the expression at its file, line and column, with the journey and the step."""
    problems: list[Problem] = []
    for journey in journeys:
        for step in sends_without_trigger(journey):
            named = "" if step.id == step.template else f", id {step.id}"
            where = f"journey {journey.flow} step {journey.number[step.id]} ({describe(step)}{named})"
            templates = dict.fromkeys([step.template, *(v.template for v in step.variants if v.template)])
            problems += [Problem(p.location, f"{where}: {p.message}")
                         for template in templates for p in untriggered_problems(renderer, template)]
    return problems


def variant_subject_problems(settings: Settings, renderer: Renderer) -> list[Problem]:
    """The static pass (fields the context does not have) over every A/B variant's subject, of
    config.yaml's flows and of campaigns/*.yaml, each at its line in its file."""
    problems = config_subject_problems(settings, renderer)
    for path in campaign_files(settings.project_dir):
        doc = load_yaml_file(path, display_name=f"{CAMPAIGNS_DIR}/{path.name}", root=settings.project_dir)
        problems += subject_problems(renderer.text_env, doc, [((), "campaign")])
    return problems


def config_subject_problems(settings: Settings, renderer: Renderer) -> list[Problem]:
    """variant_subject_problems of config.yaml's flows and their journeys' send steps."""
    config = load_yaml_file(settings.project_dir / CONFIG_FILE, display_name=CONFIG_FILE)
    flows = config.value.get("flows") if isinstance(config.value, dict) else None
    tests: list[tuple[PathKey, str | None]] = []
    untriggered: list[PathKey] = []
    ladder = TierLadder.from_settings(settings.tiers)
    for i, f in enumerate(flows if isinstance(flows, list) else []):
        if isinstance(f, dict):
            tests.append((("flows", i), f.get("trigger")))
            tests += [(path, f.get("trigger")) for path in _tested_steps(f.get("steps"), ("flows", i, "steps"))]
            journey = parse_journey(str(f.get("name")), f["steps"], f.get("exit_when"), config, ("flows", i),
                                    ladder)[0] if f.get("steps") is not None else None
            if journey is not None:   # steps decided without the trigger's data (sends_without_trigger)
                untriggered += [journey.paths[step.id] for step in sends_without_trigger(journey)]
    return subject_problems(renderer.text_env, config, tests, untriggered)


def run_once(engine: sa.Engine, planner: Planner, renderer: Renderer, transport: Transport,
             now: datetime, *, flows: list[str] | None = None, members: list[int] | None = None,
             should_stop: Callable[[], bool] = lambda: False,
             clock: Callable[[], datetime] | None = None, campaigns: bool | None = None) -> TickReport:
    """Plan, record, then deliver every planned send that is due (including earlier ones).
    `should_stop` is asked between batches: a stopping daemon finishes the batch in hand.
    With `sending.dispatchers` > 1, delivery runs in that many processes. `clock` (default: `now`
    throughout) stamps claims and sends as delivery goes on; see deliver_due. `members` (their
    ids) plans only them: the daemon's wake-up for members with new data. `campaigns`: see
    Planner.plan. A tick over every member first records the points that have expired by `now`
    (program.points.expiry), then applies the tier reviews due (tiers.qualification), so that
    balances, tiers and their emails are planned on what members hold now."""
    settings = planner.settings
    if members is None and settings.program.points.expiry is not None:
        expired = expire_points(engine, settings, now)
        if expired.events:
            log.info(expired.summary())
    if settings.tiers.qualification is not None:  # moves first, so this tick plans their emails
        with db.exclusive(engine, db.REVIEW_LOCK) as conn:   # after a `tiers review` running meanwhile
            tier_review.apply(conn, settings, now, members=members, since=now - settings.sending.lookback)
    plan = Plan(now, keep=False)  # decisions are recorded chunk by chunk as planning streams on
    report = TickReport(now, plan)
    recorded: Counter[str] = Counter()
    planner.plan_in(engine, now, flows=flows, members=members, plan=plan, campaigns=campaigns,
                    on_part=lambda part: recorded.update(ledger.record(engine, part, now)))
    report.recorded = dict(recorded)
    for warning in plan.warnings:
        log.warning(warning)
    sending = planner.settings.sending
    if sending.dispatchers > 1:
        deliver_in_parallel(engine, planner.settings, now, sending.dispatchers, report, should_stop, clock)
    else:
        deliver_due(engine, renderer, transport, now, report, sending, should_stop, clock)
    if report.nothing_delivered():
        log.warning("%s; nothing was delivered (last: %s)", report.summary(), report.last_error)
    else:
        log.info(report.summary())
    return report


def dispatch_once(engine: sa.Engine, settings: Settings, renderer: Renderer, transport: Transport,
                  now: datetime, should_stop: Callable[[], bool] = lambda: False,
                  clock: Callable[[], datetime] | None = None) -> TickReport:
    """Deliver what is due, without planning: what workers and standby daemons do each tick."""
    report = TickReport(now, Plan(now))
    deliver_due(engine, renderer, transport, now, report, settings.sending, should_stop, clock)
    if report.nothing_delivered():
        log.warning("dispatch at %s UTC: nothing was delivered, %d failed, %d to retry (last: %s)",
                    f"{now:%Y-%m-%d %H:%M:%S}", report.failed, report.retrying, report.last_error)
    elif report.delivered or report.failed or report.unknown:
        log.info("dispatch at %s UTC: %d delivered, %d failed, %d to retry, %d unknown",
                 f"{now:%Y-%m-%d %H:%M:%S}", report.delivered, report.failed, report.retrying, report.unknown)
    return report


def write_previews(plan: Plan, renderer: Renderer, engine: sa.Engine, out: Path) -> int:
    """Render every planned send untracked into out/<flow>/<member>-<occurrence>.{eml,html}."""
    written = 0
    with engine.connect() as conn:
        for send in plan.sends:
            occ = send.occurrence
            member = member_profile(conn, occ.member_id, recent=0).member
            variant = send.variant
            email = renderer.render((variant and variant.template) or occ.template or occ.flow.template, member,
                                    now=send.scheduled_for, tracked=False, flow={"name": occ.flow.name},
                                    occurrence=occ.data, subject=variant.subject if variant else None)
            folder = out / occ.flow.name
            folder.mkdir(parents=True, exist_ok=True)
            stem = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{occ.member_id}-{occ.key}")
            (folder / f"{stem}.eml").write_bytes(email.to_bytes())
            (folder / f"{stem}.html").write_text(email.html, encoding="utf-8")
            written += 1
    return written

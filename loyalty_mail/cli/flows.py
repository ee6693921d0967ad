"""Commands that run the flows: run (dry-run or once), explain, daemon."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import click

from ..errors import LoyaltyMailError, NotFound
from ..instants import local_text, with_utc
from ..flows import FlowExplanation, Plan, build_planner, run_once, write_previews
from ..flows.decisions import PlannedSend
from ..flows.runner import check_flow_templates
from ..transports import transport_for
from ..flows.leadership import PlannerLock
from ..flows.runner import dispatch_once
from ..flows.scheduler import flow_schedules, run_daemon
from ..tracking.bounces import poll_bounces_logged
from ..campaigns import load_campaigns
from ..flows.variants import write_winner
from ..reports.variants import due_winners, settle_winners
from .. import touched
from . import EXIT_NOTHING_DELIVERED, cli
from .common import CliContext, at_option, counted, format_option, pass_cli, print_json, print_table, resolve_at


def _decisions(plan: Plan) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for send in plan.sends:
        occ = send.occurrence
        variant = send.variant
        rows.append({"decision": "send", "flow": occ.flow.name, "member_id": occ.member_id,
                     "email": occ.email, "template": (variant and variant.template) or occ.template or occ.flow.template,
                     "variant": variant.name if variant else None, "occurrence": occ.key,
                     "segment": send.segment, "scheduled_for": send.scheduled_for.isoformat(),
                     "reason": send.reason, "deferred": send.deferred})
    for skip in plan.skips:
        occ = skip.occurrence
        rows.append({"decision": "skip", "flow": occ.flow.name, "member_id": occ.member_id,
                     "email": occ.email, "template": occ.template or occ.flow.template, "occurrence": occ.key,
                     "segment": occ.flow.segment, "scheduled_for": None, "reason": skip.reason,
                     "recorded_as": skip.record_as})
    for leaving in plan.exited:
        rows.append({"decision": "exit", "flow": leaving.flow, "member_id": leaving.member_id,
                     "occurrence": leaving.instance, "exit_reason": leaving.reason, "where": leaving.where,
                     "reason": leaving.summary()})
    for position in plan.positions:
        rows.append({"decision": "position", "flow": position.flow, "member_id": position.member_id,
                     "occurrence": position.instance, "step": position.step, "step_number": position.number,
                     "until": position.until.isoformat() if position.until else None,
                     "reason": position.summary()})
    return rows


def _print_plan(plan: Plan, title: str, exits_title: str = "Journeys: members who exited") -> None:
    counts = plan.counts()
    columns = ["planned", "deferred", "held_out", "skipped", "already"]
    rows = [[flow, plan.segments.get(flow, ""), *[values.get(c, 0) for c in columns]]
            for flow, values in sorted(counts.items())]
    print_table(title, ["flow", "segment", *columns], rows)
    if plan.reasons:
        print_table("Skipped or deferred, by reason", ["flow", "reason", "members"],
                    [[flow, reason, n] for (flow, reason), n in sorted(plan.reasons.items())])
    if plan.at_step:
        print_table("Journeys: where members are after this plan", ["journey", "step", "members"],
                    [[flow, f"{number} ({what})" if number else what, n]
                     for (flow, number, what), n in sorted(plan.at_step.items())])
    if plan.exits:
        print_table(exits_title, ["journey", "reason", "members", "for example"],
                    [[flow, reason, n, ", ".join(plan.exit_examples.get((flow, reason), []))]
                     for (flow, reason), n in sorted(plan.exits.items())])


@cli.command()
@click.option("--dry-run", is_flag=True, help="Plan and show; send and record nothing.")
@click.option("--once", is_flag=True, help="Plan, record, render and deliver once.")
@at_option
@click.option("--flow", "flows", multiple=True, metavar="NAME", help="Only this flow (repeatable).")
@format_option("table", "json")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="With --dry-run: write every would-be email (untracked) as .eml and .html here.")
@pass_cli
def run(obj: CliContext, dry_run: bool, once: bool, at: str | None, flows: tuple[str, ...],
        output_format: str, out: Path | None) -> None:
    """Decide who is due which email now (or --at), and send it (--once) or show it (--dry-run).

    The dry run writes nothing to the database. Its JSON is an array of objects, one per decision,
    with flow, member_id, email, template, occurrence, scheduled_for, reason and decision
    (send or skip), one per member in a journey (decision `position`: step, step_number,
    until) and one per member leaving one (decision `exit`: exit_reason, where);
    already-recorded occurrences are only counted. --once exits 1 when a send
    failed for good, and 4 when sends were due and none could be delivered (the reason is shown).

    \b
    Example:
      loyalty-mail run --dry-run
      loyalty-mail run --dry-run --at 2026-11-23T09:00 --flow welcome --format json
      loyalty-mail run --dry-run --out review/
      loyalty-mail run --once
    """
    if dry_run == once:
        raise click.UsageError("say --dry-run (show what would be sent) or --once (send it)")
    if out is not None and not dry_run:
        raise click.UsageError("--out goes with --dry-run")
    runtime = obj.runtime
    settings = runtime.settings
    campaign_names = set(load_campaigns(settings.project_dir)[0])
    unknown = sorted(set(flows) - {f.name for f in settings.flows} - campaign_names)
    if unknown:
        raise click.BadParameter(f"unknown flow {', '.join(unknown)} (flows: "
                                 f"{', '.join(f.name for f in settings.flows) or 'none'}; campaigns: "
                                 f"{', '.join(sorted(campaign_names)) or 'none'})", param_hint="--flow")
    engine = runtime.engine()
    renderer = runtime.renderer()
    planner = build_planner(settings, engine.dialect.name, renderer.catalog.variants)
    check_flow_templates(settings, renderer)
    now = resolve_at(runtime, at)
    if dry_run:
        keep = output_format == "json" or out is not None  # the table needs only the counts
        def winners_due(conn: Any) -> None:   # as run --once would record them first
            for winner in due_winners(conn, settings, now):
                write_winner(conn, winner)
                click.echo(f"A/B test {winner.flow}: variant {winner.variant} would win on {winner.metric}; "
                           "new members would get it", err=True)

        plan = planner.plan_in(engine, now, review=True, flows=list(flows) or None,
                               plan=Plan(now, keep=keep), before=winners_due)
        for warning in plan.warnings:
            click.echo(f"warning: {warning}", err=True)
        if out is not None:
            written = write_previews(plan, renderer, engine, out)
            click.echo(f"wrote {counted(written, 'email')} to {out}", err=True)
        if output_format == "json":
            print_json(_decisions(plan))
        else:
            _print_plan(plan, f"Dry run at {now.isoformat()}: nothing was sent or recorded",
                        "Journeys: members who would exit")
        return
    if renderer.signer is None:
        runtime.signer()  # raises the "set LOYALTY_MAIL_SECRET" error
    transport = transport_for(settings)
    covered = touched.latest(engine) if not flows and at is None else 0  # planning every member now
    for winner in settle_winners(engine, settings, now):
        click.echo(f"A/B test {winner.flow}: variant {winner.variant} wins on {winner.metric}; new members get it")
    try:
        report = run_once(engine, planner, renderer, transport, now, flows=list(flows) or None,
                          clock=runtime.now if at is None else None)
    finally:
        transport.close()
    touched.forget(engine, covered)
    if output_format == "json":
        print_json({"at": now.isoformat(), "counts": report.plan.counts(), "recorded": report.recorded,
                    "exits": [{"journey": flow, "reason": reason, "members": n,
                               "examples": report.plan.exit_examples.get((flow, reason), [])}
                              for (flow, reason), n in sorted(report.plan.exits.items())],
                    "delivered": report.delivered, "failed": report.failed})
    else:
        _print_plan(report.plan, f"Run at {now.isoformat()}")
        click.echo(f"delivered {report.delivered}, failed {report.failed}, to retry {report.retrying}, "
                   f"unknown {report.unknown}"
                   + (f" (messages in {transport.directory})" if hasattr(transport, "directory") else ""))
        if report.paused:
            click.echo(report.paused, err=True)
    if report.failed:
        raise LoyaltyMailError(f"{counted(report.failed, 'send')} failed; `loyalty-mail explain MEMBER_ID` or the "
                               "sends table say why")
    if report.nothing_delivered():
        click.echo(f"Error: nothing was delivered: {report.retrying} send(s) were due and the transport "
                   f"failed for each (last: {report.last_error}); they will be retried "
                   "(`loyalty-mail outbox status` shows when)", err=True)
        click.get_current_context().exit(EXIT_NOTHING_DELIVERED)


@cli.command()
@click.argument("member_id")
@at_option
@pass_cli
def explain(obj: CliContext, member_id: str, at: str | None) -> None:
    """For each flow: is this member due now (or --at), and if not, exactly why.

    \b
    Example:
      loyalty-mail explain LM0000042
      loyalty-mail explain LM0000042 --at 2026-12-24T09:00
    """
    runtime = obj.runtime
    engine = runtime.engine()
    planner = build_planner(runtime.settings, engine.dialect.name)
    now = resolve_at(runtime, at)
    with engine.connect() as conn:
        for winner in due_winners(conn, runtime.settings, now):   # as run --once records them, rolled back
            write_winner(conn, winner)
        answer = planner.explain(conn, member_id, now)
        conn.rollback()
    member = answer.member
    zone = answer.zone
    click.echo(f"{member_id} <{member['email']}>: tier {member['tier']}, {member['points']:,} points, "
               f"{'subscribed' if member['subscribed'] else 'unsubscribed'}; at {with_utc(now, zone)}; "
               f"times on the member's clock ({zone})")
    for flow in answer.flows:
        click.echo(f"\n{flow.flow} ({flow.trigger} -> {flow.template}):")
        for line in _explained(flow, zone):
            click.echo(f"  {line}")


def _explained(flow: FlowExplanation, zone: str) -> list[str]:
    lines = [f"DUE {send.occurrence.key}: {send.reason}; scheduled for {local_text(send.scheduled_for, zone)}"
             + (f" ({send.deferred})" if send.deferred else "")
             + (f"; variant {send.variant.name} ({_variant_template(send)})" if send.variant else "")
             for send in flow.due]
    lines += [f"not sent {skip.occurrence.key}: {skip.reason}" for skip in flow.skipped]
    lines += [position.summary() for position in flow.journey]
    lines += [leaving.summary() for leaving in flow.exits]
    lines += flow.exited
    lines += [f"recorded {row.occurrence_key}: {row.state} ({local_text(row.scheduled_for, zone)}): {row.reason}"
              + (f"; variant {row.variant} ({row.template})" if row.variant else "") for row in flow.recorded]
    if flow.reason:
        lines.append(flow.reason)
    return lines


def _variant_template(send: PlannedSend) -> str | None:
    """The email of a send's A/B variant: its own template, else the step's or the flow's."""
    assert send.variant is not None
    return send.variant.template or send.occurrence.template or send.occurrence.flow.template


def _interval_option(func: Any) -> Any:
    return click.option("--interval", type=click.FloatRange(0.1, 86400), default=None, metavar="SECONDS",
                        callback=_a_number, help="Seconds between ticks, 0.1 to 86400 (default: "
                        "sending.tick from config).")(func)


def _a_number(_ctx: click.Context, _param: click.Parameter, value: float | None) -> float | None:
    if value is not None and math.isnan(value):  # FloatRange lets NaN through: it compares false
        raise click.BadParameter("nan is not a number of seconds")
    return value


def _max_ticks_option(func: Any) -> Any:
    return click.option("--max-ticks", type=click.IntRange(1), default=None,
                        help="Stop after this many ticks.")(func)


def _dispatch_parts(obj: CliContext) -> tuple[Any, Any, Any, Any]:
    """What a long-running process that delivers needs: runtime, engine, templates, transport
    (the tracking secret must be set); logging goes to stderr."""
    runtime = obj.runtime
    engine = runtime.engine()
    renderer = runtime.renderer()
    runtime.signer()
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return runtime, engine, renderer, transport_for(runtime.settings)


@cli.command()
@_interval_option
@_max_ticks_option
@click.option("--wake/--no-wake", default=None,
              help="Plan members within about a second of new data for them (default: sending.wake.enabled).")
@pass_cli
def daemon(obj: CliContext, interval: float | None, max_ticks: int | None, wake: bool | None) -> None:
    """Run the flows forever: a tick (plan, record, render, deliver) every interval.

    Between ticks, the planning daemon wakes when an import (a file, or the API) changes members
    and plans just them, through the same planner and ledger: a welcome, an event flow, a
    milestone or a tier upgrade goes out within about a second. Flows with a `schedule:` keep it.

    With `sending.bounces` set, each tick also reads the bounce mailbox (as `bounces poll` does).
    Several daemons may run against one database: the one holding the planner lock (a PostgreSQL
    advisory lock, or a file lock beside a SQLite database) plans; the others only deliver and take
    over within a tick if it dies. SIGTERM or SIGINT finishes the batch in hand, records it and
    exits 0. After downtime the first tick catches up within each flow's lateness.

    \b
    Example:
      LOYALTY_MAIL_SECRET=... loyalty-mail daemon
      loyalty-mail daemon --interval 60
      loyalty-mail daemon --no-wake
    """
    runtime, engine, renderer, transport = _dispatch_parts(obj)
    settings = runtime.settings
    planner = build_planner(settings, engine.dialect.name, renderer.catalog.variants)
    check_flow_templates(settings, renderer)
    lock = PlannerLock(engine)
    schedules = flow_schedules({f.name: f.schedule for f in settings.flows}, settings.program.default_timezone)
    every_tick = [f.name for f in settings.flows if f.name not in schedules]

    def tick(should_stop: Any, flows: list[str] | None) -> None:
        planned = every_tick if flows is None else flows
        if (planned or flows is None) and lock.try_acquire():
            covered = touched.latest(engine) if flows is None else 0  # this tick plans every member
            now = runtime.now()
            for winner in settle_winners(engine, settings, now):
                logging.getLogger("loyalty_mail.run").info(
                    "A/B test %s: variant %s wins on %s; new members get it", winner.flow, winner.variant, winner.metric)
            run_once(engine, planner, renderer, transport, now, flows=planned, should_stop=should_stop,
                     clock=runtime.now, campaigns=flows is None)
            touched.forget(engine, covered)
        else:
            dispatch_once(engine, settings, renderer, transport, runtime.now(), should_stop, runtime.now)
        if settings.sending.bounces is not None and flows is None and not should_stop() and lock.try_acquire():
            poll_bounces_logged(settings.sending.bounces, engine, runtime.now())  # one daemon reads the mailbox

    def wake_up(should_stop: Any) -> None:
        while every_tick and not should_stop() and lock.try_acquire():
            members = touched.take(engine)
            if not members:
                return
            run_once(engine, planner, renderer, transport, runtime.now(), flows=every_tick, members=members,
                     should_stop=should_stop, clock=runtime.now, campaigns=True)

    seconds = interval if interval is not None else settings.sending.tick.total_seconds()
    waking = settings.sending.wake.enabled if wake is None else wake
    waiter = touched.waiter_for(engine, settings.sending.wake.poll_ms / 1000) if waking else None
    try:
        run_daemon(tick, seconds, max_ticks=max_ticks, schedules=schedules,
                   wake=wake_up if waiter else None, wait=waiter.wait if waiter else None)
    finally:
        if waiter is not None:
            waiter.close()
        lock.release()
        transport.close()


@cli.command()
@_interval_option
@_max_ticks_option
@pass_cli
def worker(obj: CliContext, interval: float | None, max_ticks: int | None) -> None:
    """Deliver due sends forever, without planning: add workers to drain a large outbox.

    Any number of workers (and daemons) can share one outbox: each claims its own batches. A
    worker killed mid-batch leaves its claimed sends to the lease (sending.lease), after which they
    are marked unknown, never re-sent automatically. SIGTERM finishes the batch in hand and exits 0.

    \b
    Example:
      LOYALTY_MAIL_SECRET=... loyalty-mail worker --interval 5
    """
    runtime, engine, renderer, transport = _dispatch_parts(obj)
    settings = runtime.settings

    def tick(should_stop: Any, _flows: list[str] | None) -> None:
        dispatch_once(engine, settings, renderer, transport, runtime.now(), should_stop, runtime.now)

    seconds = interval if interval is not None else settings.sending.tick.total_seconds()
    try:
        run_daemon(tick, seconds, max_ticks=max_ticks)
    finally:
        transport.close()


__all__ = ["daemon", "explain", "run", "worker", "NotFound"]

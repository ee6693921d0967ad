"""Commands for one-off campaigns: campaigns list, preview, schedule, cancel, status."""

from __future__ import annotations

from collections import Counter
from itertools import islice
from typing import Any

import click

from .. import campaigns as files
from ..durations import format_span
from ..errors import ConfigError, LoyaltyMailError, NotFound
from ..flows import build_planner, ledger
from ..flows.runner import check_variant_subjects, variant_subject_problems
from ..segments import load_catalog
from . import cli
from .common import CliContext, at_option, counted, format_option, pass_cli, print_json, print_table, resolve_at


def _program_campaigns(obj: CliContext) -> dict[str, files.Campaign]:
    """Every campaign file, checked against the program; any problem stops the command."""
    settings = obj.runtime.settings
    found, problems = files.load_campaigns(settings.project_dir)
    catalog, segment_problems = load_catalog(settings)
    problems += segment_problems
    problems += files.reference_problems(found, {f.name for f in settings.flows}, set(catalog.segments),
                                         set(obj.runtime.renderer().catalog.names),
                                         {t.name for t in settings.topics})
    if problems:
        raise ConfigError(problems)
    problems = variant_subject_problems(settings, obj.runtime.renderer())   # each at its line, syntax too
    if problems:
        raise ConfigError(problems)
    check_variant_subjects((c.as_flow() for c in found.values()), obj.runtime.renderer())
    return found


def _one(obj: CliContext, name: str) -> files.Campaign:
    found = _program_campaigns(obj)
    if name not in found:
        raise NotFound(f"no campaign '{name}' in {files.CAMPAIGNS_DIR}/ (campaigns: {', '.join(found) or 'none'})")
    return found[name]


@cli.group()
def campaigns() -> None:
    """One-off campaigns: files in campaigns/, scheduled to send once to an audience."""


@campaigns.command("list")
@format_option("table", "json")
@pass_cli
def campaigns_list(obj: CliContext, output_format: str) -> None:
    """Every campaign file with its send time, audience, template, topic and state.

    State is `draft` (not scheduled), `scheduled` or `cancelled`; `scheduled (file changed)`
    when the file differs from the copy that was scheduled.

    \b
    Example:
      loyalty-mail campaigns list
    """
    found = _program_campaigns(obj)
    runtime = obj.runtime
    zone = runtime.settings.program.default_timezone
    with runtime.engine().connect() as conn:
        stored = {row.campaign.name: row for row in files.scheduled(conn, runtime.now(), cancelled=True)}
    rows = []
    for name, c in sorted(found.items()):
        row = stored.get(name)
        state = "draft" if row is None else row.state
        if row is not None and row.state == "scheduled" and row.digest != files.schedule_digest(c):
            state += " (file changed)"
        rows.append({"campaign": name, "at": c.describe_at(zone), "segment": c.segment or "(every member)",
                     "template": c.template, "variants": ", ".join(v.name for v in c.variants),
                     "topic": c.topic, "state": state})
    if output_format == "json":
        print_json(rows)
    else:
        print_table("Campaigns", list(rows[0]) if rows else ["campaign"], [list(r.values()) for r in rows])


@campaigns.command("preview")
@click.argument("name")
@at_option
@click.option("--limit", type=click.IntRange(0, 100_000), default=20, show_default=True,
              help="Members listed one by one (all are counted).")
@format_option("table", "json")
@pass_cli
def campaigns_preview(obj: CliContext, name: str, at: str | None, limit: int, output_format: str) -> None:
    """Who gets a campaign and when: its audience now (or --at), each member's send time.

    Counts members per send time (UTC) and lists the first --limit. Members the ledger already
    holds for this campaign are left out. Suppression, unsubscribes, the frequency cap and quiet
    hours are decided when each member is due: `run --dry-run --at TIME` shows them.

    \b
    Example:
      loyalty-mail campaigns preview december_sale
      loyalty-mail campaigns preview december_sale --limit 100 --format json
    """
    campaign = _one(obj, name)
    runtime = obj.runtime
    engine = runtime.engine()
    now = resolve_at(runtime, at)
    planner = build_planner(runtime.settings, engine.dialect.name)
    times: Counter[str] = Counter()
    listed: list[dict[str, Any]] = []
    with engine.connect() as conn:
        for occ in planner.campaign_members(conn, campaign, now):
            times[f"skipped: {occ.skip.split(':')[0]}" if occ.skip else f"{occ.due_at:%Y-%m-%d %H:%M} UTC"] += 1
            if len(listed) < limit:
                listed.append({"member_id": occ.member_id, "email": occ.email,
                               "timezone": occ.timezone or runtime.settings.program.default_timezone,
                               "send_at": None if occ.skip else occ.due_at.isoformat(),
                               "reason": occ.skip or occ.reason})
    if output_format == "json":
        print_json({"campaign": name, "members": sum(times.values()), "by_time": dict(sorted(times.items())),
                    "first": listed})
        return
    print_table(f"Campaign {name}: {counted(sum(times.values()), 'member')}", ["send at", "members"],
                sorted(times.items()))
    print_table(None, ["member_id", "email", "timezone", "send at", "why"],
                [list(r.values()) for r in islice(listed, limit)])


@campaigns.command("schedule")
@click.argument("name")
@pass_cli
def campaigns_schedule(obj: CliContext, name: str) -> None:
    """Schedule a campaign: its file, as it is now, will be sent (by the daemon or `run --once`).

    Scheduling again after editing the file replaces the scheduled copy; members already sent
    to are not sent to again.

    \b
    Example:
      loyalty-mail campaigns schedule december_sale
    """
    campaign = _one(obj, name)
    runtime = obj.runtime
    engine, now = runtime.engine(), runtime.now()
    with engine.connect() as conn:
        last = build_planner(runtime.settings, engine.dialect.name).campaign_last_send(conn, campaign, now)
    if last is None:
        assert campaign.throttle is not None
        raise LoyaltyMailError(
            f"campaign '{name}': its throttle ({campaign.throttle.max} per {format_span(campaign.throttle.per)}) "
            f"puts members of its audience after {files.SEND_LIMIT:%Y-%m-%d}; raise throttle.max or "
            "shorten throttle.per (`loyalty-mail campaigns preview` shows each member's time)")
    outcome = files.schedule(engine, campaign, now)
    click.echo(f"campaign {name}: {outcome}; sends at "
               f"{campaign.describe_at(runtime.settings.program.default_timezone)}")
    warning = campaign.passed(last, now)
    if warning:
        click.echo(f"warning: {warning}", err=True)


@campaigns.command("cancel")
@click.argument("name")
@pass_cli
def campaigns_cancel(obj: CliContext, name: str) -> None:
    """Cancel a scheduled campaign: nobody else gets it; sends planned for later are cancelled.

    \b
    Example:
      loyalty-mail campaigns cancel december_sale
    """
    runtime = obj.runtime
    engine = runtime.engine()
    now = runtime.now()
    if not files.cancel(engine, name, now):
        with engine.connect() as conn:
            done = [row for row in files.scheduled(conn, now, cancelled=True)
                    if row.campaign.name == name and row.cancelled_at is not None]
        if done:
            click.echo(f"campaign {name}: already cancelled (at {done[0].cancelled_at:%Y-%m-%d %H:%M} UTC)")
            return
        raise NotFound(f"campaign '{name}' is not scheduled (`loyalty-mail campaigns list` shows each state)")
    stopped = ledger.cancel_planned(engine, name, now)
    with engine.connect() as conn:
        sent = ledger.state_counts(conn, name).get("sent", 0)
    click.echo(f"campaign {name}: cancelled; {stopped} planned sends cancelled, {sent} already sent")


@campaigns.command("status")
@click.argument("name", required=False)
@format_option("table", "json")
@pass_cli
def campaigns_status(obj: CliContext, name: str | None, output_format: str) -> None:
    """Scheduled and cancelled campaigns: when, and their sends by state in the ledger.

    \b
    Example:
      loyalty-mail campaigns status
      loyalty-mail campaigns status december_sale --format json
    """
    runtime = obj.runtime
    zone = runtime.settings.program.default_timezone
    engine = runtime.engine()
    planner = build_planner(runtime.settings, engine.dialect.name, runtime.renderer().catalog.variants)
    unreadable: list[str] = []
    with engine.connect() as conn:
        rows = [row for row in files.scheduled(conn, runtime.now(), cancelled=True, problems=unreadable)
                if name is None or row.campaign.name == name]
        counts = {row.campaign.name: ledger.state_counts(conn, row.campaign.name) for row in rows}
    for problem in unreadable:
        if name is None or f"campaign '{name}' " in problem:
            click.echo(f"warning: {problem}", err=True)
    if name is not None and not rows and not unreadable:
        raise NotFound(f"campaign '{name}' has not been scheduled (`loyalty-mail campaigns schedule {name}`)")
    states = ("planned", "sent", "held_out", "suppressed", "skipped", "failed", "cancelled")
    table = [{"campaign": row.campaign.name, "state": row.state, "at": row.campaign.describe_at(zone),
              "scheduled_at": row.scheduled_at.isoformat(),
              "cancelled_at": row.cancelled_at.isoformat() if row.cancelled_at else None,
              **{state: counts[row.campaign.name].get(state, 0) for state in states},
              "warning": planner.campaign_problem(row.campaign) if row.state == "scheduled" else None}
             for row in rows]
    if output_format == "json":
        print_json(table)
    else:
        print_table("Campaigns scheduled", list(table[0]) if table else ["campaign"], [list(r.values()) for r in table])

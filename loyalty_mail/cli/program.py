"""Commands about the program itself: init, check, db, demo."""

from __future__ import annotations

import sys
import time
from datetime import datetime, timezone
from datetime import time as dt_time
from pathlib import Path
from zoneinfo import ZoneInfo

import click

from .. import db, secret_policy
from ..campaigns import load_campaigns, reference_problems
from ..errors import ConfigError, LoyaltyMailError, TemplateError
from ..flows import Planner
from ..flows.journeys import edits_in_flight
from ..flows.runner import (check_flow_templates, check_variant_subjects, journey_trigger_problems,
                            variant_subject_problems)
from ..rendering.checks import check_templates
from ..overview import Overview
from ..points.store import lots_warning
from ..demo import SECRET_FILE, run_demo
from ..scaffold import init_program
from ..segments import load_catalog
from . import cli
from .common import CliContext, count_progress, counted, pass_cli, print_table

DEMO_FOLDER = "demo"
TICKS_PER_DAY = 4


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite an existing config.yaml, segments/ or templates/.")
def init(directory: Path, force: bool) -> None:
    """Create a new program in DIRECTORY from the example one (config, segments, templates).

    \b
    Example:
      loyalty-mail init my-program
    """
    for path in init_program(directory, force=force):
        click.echo(f"wrote {path}")
    click.echo(f"Next: edit {directory / 'config.yaml'}, then `loyalty-mail --project {directory} check`.")


@cli.command()
@click.option("--strict", is_flag=True, help="Template warnings are errors: exit 1 when there is any.")
@pass_cli
def check(obj: CliContext, strict: bool) -> None:
    """Validate config.yaml, every segment and every template; report each problem with its
    file and line.

    Every variable and attribute in every branch and macro of every template is checked
    against the template context (file:line:column, with the closest name); then templates are
    rendered for every locale against sample members, and the compile-time CSS inlining is
    compared with inlining after rendering. Template warnings (missing translations, templates
    inlined per email, and the lint listed in the README: large HTML, images without alt,
    insecure or test links, no unsubscribe link, long subjects, no preheader, `| safe` on member
    data) do not fail the check unless --strict. When the database holds members in journeys,
    says what the journeys as configured now do to them (a step they stand at that an edit
    removes: they will exit). Exits 0 when all is well, 1 when there is
    anything to fix.

    \b
    Example:
      loyalty-mail check
      loyalty-mail --project my-program check --strict
    """
    settings = obj.runtime.settings
    catalog, problems = load_catalog(settings)
    if problems:
        raise ConfigError(problems)
    tiers = ", ".join(level.name for level in settings.tiers.levels)
    click.echo(f"config.yaml: ok (program '{settings.program.name}', tiers: {tiers}; "
               f"database {db.display_url(obj.runtime.database_url)})")
    if not settings.tracking.secret:
        click.echo("warning: tracking.secret is not set: sending (run --once, daemon, worker) and serve "
                   f"need it; export LOYALTY_MAIL_SECRET ({secret_policy.ADVICE})", err=True)
    if settings.sending.bounces is not None and not settings.sending.bounces.password:
        click.echo("warning: the bounce mailbox's password is not set: `bounces poll` and the daemon's poll "
                   "need it; export the variable sending.bounces.password names", err=True)
    click.echo(f"segments: {len(catalog.segments)} ok ({', '.join(sorted(catalog.segments)) or 'none'})")
    renderer = obj.runtime.renderer()
    report = check_templates(renderer, obj.runtime.now())
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    if report.errors:
        raise TemplateError(report.errors)
    if strict and report.warnings:
        raise LoyaltyMailError(f"{counted(len(report.warnings), 'warning')} (--strict makes warnings errors)")
    planner = Planner(settings, catalog, "sqlite")  # every flow's segment exists
    check_flow_templates(settings, renderer)
    problems = journey_trigger_problems(planner.journeys.values(), renderer)
    if problems:
        raise TemplateError(problems)
    emails = renderer.catalog.names
    flows = ", ".join(f.name for f in settings.flows) or "none"
    click.echo(f"flows: {len(settings.flows)} ok ({flows})")
    disabled = {f.name for f in settings.flows if not f.enabled}
    for line in edits_in_flight(obj.runtime.engine(ensure_schema=False), planner.journeys, disabled):
        click.echo(line)
    stale = lots_warning(obj.runtime.engine(ensure_schema=False), settings)
    if stale:
        click.echo(f"warning: {stale}", err=True)
    found, problems = load_campaigns(settings.project_dir)
    problems += reference_problems(found, {f.name for f in settings.flows}, set(catalog.segments), set(emails),
                                   {t.name for t in settings.topics})
    if problems:
        raise ConfigError(problems)
    problems = variant_subject_problems(settings, renderer)   # each at its line, syntax errors too
    if problems:
        raise TemplateError(problems)
    check_variant_subjects((c.as_flow() for c in found.values()), renderer)
    zone, now = settings.program.default_timezone, obj.runtime.now()
    for campaign in found.values():
        late = campaign.passed(campaign.last_send(zone, 1), now)  # the throttle's later members aside
        if late:
            click.echo(f"warning: {late}", err=True)
    click.echo(f"campaigns: {len(found)} ok ({', '.join(sorted(found)) or 'none'})")
    click.echo(f"templates: {len(emails)} ok ({', '.join(emails) or 'none'}; "
               f"{counted(report.rendered, 'sample render')}, {counted(len(report.warnings), 'warning')})")


@cli.group("db")
def database() -> None:
    """Create and upgrade the database schema."""


@database.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Schema revision to upgrade to.")
@pass_cli
def db_upgrade(obj: CliContext, revision: str) -> None:
    """Create the schema, or bring an existing database up to this version's schema.

    Back up the database first; migrations run in one transaction where the database allows.

    \b
    Example:
      loyalty-mail db upgrade
      LOYALTY_MAIL_DATABASE_URL=postgresql://mail@db/loyalty loyalty-mail db upgrade
    """
    engine = obj.runtime.engine(ensure_schema=False)
    before, after = db.upgrade(engine, revision)
    where = db.display_url(obj.runtime.database_url)
    if before == after:
        click.echo(f"{where}: already at revision {after}")
    else:
        click.echo(f"{where}: upgraded from {before or 'an empty database'} to revision {after}")


@database.command("status")
@pass_cli
def db_status(obj: CliContext) -> None:
    """Show the database's schema revision and the one this version needs.

    Exits 0 when they match, 1 when `db upgrade` is needed.

    \b
    Example:
      loyalty-mail db status
    """
    engine = obj.runtime.engine(ensure_schema=False)
    current, head = db.current_revision(engine), db.head_revision()
    click.echo(f"{db.display_url(obj.runtime.database_url)}: revision {current or 'none (empty)'}, "
               f"this version needs {head}")
    if current != head:
        raise click.ClickException("run `loyalty-mail db upgrade`")


@cli.command()
@click.option("--members", "count", type=click.IntRange(1, 1_000_000), default=3000, show_default=True,
              help="How many members the demo program starts with.")
@click.option("--days", type=click.IntRange(1, 365), default=90, show_default=True,
              help="How many days to simulate (ending today).")
@click.option("--seed", type=int, default=1, show_default=True, help="Random seed for the demo data.")
@click.option("--out", "folder", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the demo database, outbox and report (default: demo/ in the project).")
@pass_cli
def demo(obj: CliContext, count: int, days: int, seed: int, folder: Path | None) -> None:
    """Run the whole pipeline on simulated days: seed a program, plan and send every day, report.

    Seeds an embedded SQLite program (demo/demo.db, never the configured database) with members
    and two years of history, then walks DAYS simulated days up to today through the real planner,
    four ticks a day: simulated members join, buy, open, click and unsubscribe (labelled as
    simulated), and every due email is written as an .eml file to demo/outbox/. Ends with the
    HTML report (demo/report.html) and a summary. Each run starts again from an empty demo folder.

    \b
    Example:
      loyalty-mail demo
      loyalty-mail demo --members 10000 --days 30 --out /tmp/demo
    """
    settings = obj.runtime.settings
    target = (folder or obj.project_dir / DEMO_FOLDER).resolve()
    zone = ZoneInfo(settings.program.default_timezone)
    end = datetime.combine(obj.runtime.now().astimezone(zone).date(), dt_time(), tzinfo=zone).astimezone(timezone.utc)
    started = time.perf_counter()
    with count_progress("Simulating days", days * TICKS_PER_DAY) as tick:
        result = run_demo(settings, target, members=count, days=days, seed=seed, end=end,
                          ticks_per_day=TICKS_PER_DAY, on_step=_step,
                          on_tick=tick)
    elapsed = time.perf_counter() - started
    click.echo()
    click.echo(f"{settings.program.name}: {days} simulated days, {result.first_day} to {result.last_day} "
               f"({elapsed:.0f} s)")
    assert result.overview is not None
    did = result.activity
    click.echo(f"Members: {result.overview.members:,} ({did.signups:,} joined during the simulation); simulated "
               f"purchases: {did.purchases + did.converted:,} ({did.converted:,} after an email)")
    click.echo(f"Planner: {counted(result.ticks, 'tick')}; {counted(sum(result.by_flow.values()), 'email')} planned, "
               f"{result.held_out:,} held out, {result.skipped:,} skipped with a reason; "
               f"{result.sent:,} written to {result.outbox}")
    print_table("Emails planned by flow", ["flow", "emails"], sorted(result.by_flow.items()), numeric=["emails"])
    _print_overview(settings.program.name, settings.program.currency, result.overview)
    click.echo()
    click.echo(f"Report: {result.report}")
    click.echo(f"Database: {result.database} (e.g. loyalty-mail --database sqlite:///{result.database} report)")
    secret = result.folder / SECRET_FILE
    if secret.exists():
        click.echo(f"Links and coupon codes are signed with a throwaway secret kept in {secret}: "
                   f"LOYALTY_MAIL_SECRET=$(cat {secret}) loyalty-mail --database sqlite:///{result.database} "
                   "coupons verify CODE")


def _step(text: str) -> None:
    # print(), not click.echo: on a terminal the progress bar redirects sys.stderr to print above itself
    print(f"demo: {text} ...", file=sys.stderr, flush=True)


def _print_overview(name: str, currency: str, o: Overview) -> None:
    click.echo()
    click.echo(f"{name}: {counted(o.members, 'member')} ({o.subscribed:,} subscribed to email), "
               f"{counted(o.purchases, 'purchase')} worth {o.revenue:,.0f} {currency}")
    click.echo(f"Bought in the last 90 days: {o.active_90d:,}; lapsed (no purchase for 90+ days): "
               f"{o.lapsed_90d:,}; never bought: {o.never_purchased:,}")
    click.echo(f"Tier history: {o.tier_upgrades:,} upgrades, {o.tier_downgrades:,} downgrades")
    click.echo()
    print_table("Members by tier", ["tier", "members", "avg points", f"avg spend ({currency})"],
                [(t.tier, t.members, t.avg_points, t.avg_spend) for t in o.tiers],
                numeric=["members", "avg points", f"avg spend ({currency})"])
    click.echo()
    print_table("By locale", ["locale", "members"], o.locales, numeric=["members"])
    click.echo()
    print_table("Top time zones", ["time zone", "members"], o.timezones, numeric=["members"])

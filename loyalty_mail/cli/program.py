"""Commands about the program itself: init, check, db, demo."""

from __future__ import annotations

import time
from pathlib import Path

import click

from .. import db
from ..errors import ConfigError, TemplateError
from ..flows import Planner
from ..flows.runner import check_flow_templates
from ..rendering.checks import check_templates
from ..overview import Overview, program_overview
from ..runtime import Runtime
from ..scaffold import init_program
from ..seeding import seed_program
from ..segments import load_catalog
from ..tiers import TierLadder
from . import cli
from .common import CliContext, count_progress, pass_cli, print_table

DEMO_DATABASE = "demo.db"


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
@pass_cli
def check(obj: CliContext) -> None:
    """Validate config.yaml, every segment and every template; report each problem with its
    file and line.

    Templates are rendered for every locale against sample members, and the compile-time CSS
    inlining is compared with inlining after rendering. Warnings (missing translations,
    templates inlined per email) do not fail the check. Exits 0 when all is well, 1 when there
    is anything to fix.

    \b
    Example:
      loyalty-mail check
      loyalty-mail --project my-program check
    """
    settings = obj.runtime.settings
    catalog, problems = load_catalog(settings)
    if problems:
        raise ConfigError(problems)
    tiers = ", ".join(level.name for level in settings.tiers.levels)
    click.echo(f"config.yaml: ok (program '{settings.program.name}', tiers: {tiers}; "
               f"database {db.display_url(obj.runtime.database_url)})")
    click.echo(f"segments: {len(catalog.segments)} ok ({', '.join(sorted(catalog.segments)) or 'none'})")
    renderer = obj.runtime.renderer()
    report = check_templates(renderer, obj.runtime.now())
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    if report.errors:
        raise TemplateError(report.errors)
    Planner(settings, catalog, "sqlite")  # every flow's segment exists
    check_flow_templates(settings, renderer)
    emails = renderer.catalog.names
    flows = ", ".join(f.name for f in settings.flows) or "none"
    click.echo(f"flows: {len(settings.flows)} ok ({flows})")
    click.echo(f"templates: {len(emails)} ok ({', '.join(emails) or 'none'}; "
               f"{report.rendered} sample renders, {len(report.warnings)} warnings)")


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
@click.option("--members", "count", type=click.IntRange(1, 1_000_000), default=2000, show_default=True,
              help="How many members the demo program has.")
@click.option("--seed", type=int, default=1, show_default=True, help="Random seed for the demo data.")
@click.option("--reset", is_flag=True, help="Start again from an empty demo database.")
@pass_cli
def demo(obj: CliContext, count: int, seed: int, reset: bool) -> None:
    """Run the demo: an embedded SQLite program seeded with realistic members, then a summary.

    The demo uses its own database file (demo.db in the project directory), never the
    configured one, so it is safe to run anywhere.

    \b
    Example:
      loyalty-mail demo
      loyalty-mail demo --members 20000 --reset
    """
    path = (obj.project_dir / DEMO_DATABASE).resolve()
    if reset:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    runtime = Runtime.load(obj.project_dir, database_url=f"sqlite:///{path}")
    try:
        _run_demo(runtime, count, seed, path)
    finally:
        runtime.close()


def _run_demo(runtime: Runtime, count: int, seed: int, path: Path) -> None:
    engine = runtime.engine()
    now = runtime.now()
    ladder = TierLadder.from_settings(runtime.settings.tiers)
    program = runtime.settings.program
    with engine.connect() as connection:
        existing = program_overview(connection, ladder, program.default_locale, now).members
    if existing:
        click.echo(f"{path} already holds {existing:,} members (use --reset to start again).")
    else:
        click.echo(f"Seeding a demo program of {count:,} members into {path} ...")
        started = time.perf_counter()
        with count_progress("Seeding", count * 2) as step:
            _, events = seed_program(engine, runtime.settings, members=count, seed=seed, now=now,
                                     on_member=step)
        click.echo(f"  {events.inserted:,} events and {events.tier_changes:,} tier changes "
                   f"in {time.perf_counter() - started:.1f} s")
    with engine.connect() as connection:
        overview = program_overview(connection, ladder, program.default_locale, now)
    _print_overview(program.name, program.currency, overview)


def _print_overview(name: str, currency: str, o: Overview) -> None:
    click.echo()
    click.echo(f"{name}: {o.members:,} members ({o.subscribed:,} subscribed to email), "
               f"{o.purchases:,} purchases worth {o.revenue:,.0f} {currency}")
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

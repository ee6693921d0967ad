"""Commands about points that expire: `points expire`, `points rebuild`."""

from __future__ import annotations

import click

from ..points.expiry import expire_points
from ..points.store import out_of_date, rebuild_everyone
from . import cli
from .common import CliContext, at_option, format_option, pass_cli, print_json, print_table, resolve_at


@cli.group()
def points() -> None:
    """Points that expire (program.points.expiry in config.yaml)."""


@points.command("expire")
@at_option
@click.option("--dry-run", is_flag=True, help="Show what would expire; record nothing.")
@format_option("table", "json")
@pass_cli
def expire(obj: CliContext, at: str | None, dry_run: bool, output_format: str) -> None:
    """Record the points that have expired by now (or --at) as points_expired events.

    Each lot whose expiry has come is recorded once, at its expiry time: the balance falls, the
    tier follows when tiers are measured in points, and the tier history says why. Running it
    again records nothing new. The daemon runs this at every tick; --dry-run shows what would
    expire and records nothing.

    \b
    Example:
      loyalty-mail points expire --dry-run
      loyalty-mail points expire --at 2026-12-01T00:00:00+07:00
    """
    runtime = obj.runtime
    expiry = runtime.settings.program.points.expiry
    if expiry is None:
        raise click.ClickException("points do not expire in this program: set program.points.expiry in "
                                   "config.yaml (e.g. expiry: {after: 12 months}) first")
    now = resolve_at(runtime, at)
    engine = runtime.engine()
    with engine.connect() as connection:
        stale = out_of_date(connection, runtime.settings)
    if stale:
        click.echo(f"warning: {stale}", err=True)
    report = expire_points(engine, runtime.settings, now, dry_run=dry_run, keep=True)
    if output_format == "json":
        print_json({"at": now, "dry_run": dry_run, "policy": str(expiry), "members": report.members,
                    "events": report.events, "points": report.points, "tier_changes": report.tier_changes,
                    "expired": report.expired})
        return
    if report.expired:
        print_table(None, ["member_id", "expired_at", "points", "event_id"],
                    [(row["member_id"], row["occurred_at"], row["points"], row["event_id"])
                     for row in report.expired], numeric=["points"])
    click.echo(report.summary())


@points.command("rebuild")
@pass_cli
def rebuild(obj: CliContext) -> None:
    """Derive every member's point lots again from their events.

    Imports keep the lots of the members they touch; run this once after changing
    program.points.expiry, so that lots already held follow the new rule.

    \b
    Example:
      loyalty-mail points rebuild
    """
    runtime = obj.runtime
    written = rebuild_everyone(runtime.engine(), runtime.settings)
    click.echo(f"{written:,} lots with points left, under "
               f"{runtime.settings.program.points.expiry or 'no expiry (none kept)'}")

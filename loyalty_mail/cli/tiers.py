"""`loyalty-mail tiers review`: apply the tier review (tiers.qualification) now or --at."""

from __future__ import annotations

import click

from ..tier_review import review_in
from . import cli
from .common import CliContext, at_option, counted, format_option, pass_cli, print_json, print_table, resolve_at


@cli.group()
def tiers() -> None:
    """Tiers that must be kept: the review of tiers.qualification.

    \b
    Example:
      loyalty-mail tiers review --dry-run
    """


@tiers.command()
@at_option
@click.option("--dry-run", is_flag=True, help="Show the moves without making them.")
@format_option("table", "json")
@pass_cli
def review(obj: CliContext, at: str | None, dry_run: bool, output_format: str) -> None:
    """Move members up who qualify and down whose review (plus grace) passed without
    re-qualifying, as of now (or --at); each move is recorded in the tier history. Running it
    again at the same instant moves no one twice. The daemon does the same every tick.

    \b
    Example:
      loyalty-mail tiers review --dry-run
      loyalty-mail tiers review --at 2027-03-01T00:00
      loyalty-mail tiers review --format json
    """
    runtime = obj.runtime
    now = resolve_at(runtime, at)
    report = review_in(runtime.engine(), runtime.settings, now, dry_run=dry_run)
    rows = [[d.member_id, d.kind, d.from_tier, d.to_tier, d.at.isoformat(), d.reason] for d in report.decisions]
    if output_format == "json":
        print_json({"at": now.isoformat(), "dry_run": dry_run, "periods_started": report.started,
                    "decisions": [dict(zip(("member_id", "kind", "from_tier", "to_tier", "at", "reason"), row))
                                  for row in rows]})
        return
    print_table(f"Tier review at {now.isoformat()}" + (" (dry run: nothing was changed)" if dry_run else ""),
                ["member", "decision", "from", "to", "at", "reason"], rows)
    click.echo(f"{report.count('up')} up, {report.count('down')} down, {report.count('kept')} kept at a review, "
               f"{counted(report.started, 'period')} started")

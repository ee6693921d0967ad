"""The report command: email performance by flow, segment, tier, locale or period; hold-out lift."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import click

from .. import reports
from . import cli
from .common import CliContext, format_option, pass_cli, print_json, print_table


def _day(value: str | None, param: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"'{value}' is not a date (YYYY-MM-DD)", param_hint=param) from None


@cli.command()
@click.option("--since", default=None, metavar="DATE", help="First day (default: 30 days before --until).")
@click.option("--until", default=None, metavar="DATE", help="Last day, included (default: today).")
@click.option("--by", default="flow", show_default=True, metavar="GROUPS",
              help=f"Comma-separated groups: {', '.join(reports.GROUPS)}; 'none' for one total row.")
@format_option("table", "csv", "json")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to this file instead of standard output.")
@pass_cli
def report(obj: CliContext, since: str | None, until: str | None, by: str, output_format: str,
           out: Path | None) -> None:
    """Email performance per group, conversion lift against hold-out groups, and program health.

    --since/--until are days in the program's time zone; day/week/month groups are UTC. Conversions are purchases within
    reports.attribution_window after a send; see README "Reports" for every definition.

    \b
    Example:
      loyalty-mail report
      loyalty-mail report --since 2026-11-01 --by flow,tier --format csv --out november.csv
    """
    runtime = obj.runtime
    zone = ZoneInfo(runtime.settings.program.default_timezone)
    today = runtime.now().astimezone(zone).date()
    last = _day(until, "--until") or today
    first = _day(since, "--since") or last - timedelta(days=29)
    if first > last:
        raise click.BadParameter("--since is after --until", param_hint="--since")
    groups = [] if by.strip() == "none" else [g.strip() for g in by.split(",") if g.strip()]
    unknown = [g for g in groups if g not in reports.GROUPS]
    if unknown:
        raise click.BadParameter(f"unknown group {', '.join(unknown)} (groups: {', '.join(reports.GROUPS)})",
                                 param_hint="--by")
    start = datetime.combine(first, time(), tzinfo=zone)
    end = datetime.combine(last + timedelta(days=1), time(), tzinfo=zone)
    window = runtime.settings.reports.attribution_window
    with runtime.engine().connect() as conn:
        rows = reports.performance(conn, start, end, groups, window)
        lifts = [item.as_row() for item in reports.lift(conn, start, end, window)]
        health = reports.program_health(conn, start, end, float(runtime.settings.segments.clv_years))
    columns = [*groups, *reports.COLUMNS]
    if output_format == "json":
        text = None
        payload = {"since": first.isoformat(), "until": last.isoformat(), "by": groups, "rows": rows, "lift": lifts,
                   "program": health}
        if out is None:
            print_json(payload)
            return
        import json
        text = json.dumps(payload, indent=2, default=str)
    elif output_format == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        text = buffer.getvalue()
        if out is None:
            click.echo(text, nl=False)
            return
    else:
        print_table(f"Email performance {first} to {last}", columns, [[r[c] for c in columns] for r in rows])
        if lifts:
            lift_columns = list(lifts[0])
            print_table("Lift against hold-out (conversion within the attribution window, 95% CI)",
                        lift_columns, [[r[c] for c in lift_columns] for r in lifts])
        print_table("Program health", ["figure", "value"],
                    [[name, value] for name, value in health.items()])
        return
    assert out is not None and text is not None
    out.write_text(text, encoding="utf-8")
    click.echo(f"wrote {out}", err=True)

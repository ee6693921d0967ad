"""The report command: email performance by flow, segment, tier, locale or period; hold-out lift."""

from __future__ import annotations

import io
import json
import sys
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import click
from rich.cells import cell_len

from .. import reports
from ..csv_output import csv_writer
from ..errors import ConfigError
from ..errors import shown as quoted
from ..reports import charts, page
from ..reports.variants import configured_tests, variant_report
from ..segments import load_catalog
from . import cli
from .common import (CliContext, _cell, counted, format_option, pass_cli, print_table, stdout, to_jsonable,
                     write_output)


def _day(value: str | None, param: str) -> date | None:
    if value is None:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{quoted(value)} is not a date (YYYY-MM-DD)", param_hint=param) from None
    if not reports.FIRST_DAY <= day <= reports.LAST_DAY:
        raise click.BadParameter(f"{day} is out of range (a day from {reports.FIRST_DAY} to {reports.LAST_DAY})",
                                 param_hint=param)
    return day


TABLE_COLUMNS = ("sent", "delivered", "opens_human", "clicks_human", "open_rate", "click_rate", "click_to_open_rate",
                 "unsubscribe_rate", "spam_rate", "converted", "revenue", "revenue_per_email")
TABLE_HEADINGS = {"opens_human": "opens", "clicks_human": "clicks", "open_rate": "open", "click_rate": "click",
                  "click_to_open_rate": "CTO", "unsubscribe_rate": "unsub", "spam_rate": "spam",
                  "revenue_per_email": "rev/email"}


@cli.command()
@click.option("--since", default=None, metavar="DATE", help="First day (default: 30 days before --until).")
@click.option("--until", default=None, metavar="DATE", help="Last day, included (default: today).")
@click.option("--by", default="flow", show_default=True, metavar="GROUPS",
              help=f"Comma-separated groups: {', '.join(reports.GROUPS)}; 'none' for one total row.")
@click.option("--segments", "segment_names", default=None, metavar="NAMES",
              help="Also group by membership (in/out) of these comma-separated segments.")
@click.option("--membership", type=click.Choice(reports.WHEN), default="send", show_default=True,
              help="With --segments: membership when each email was sent, or now (end of the period).")
@format_option("table", "csv", "json", "html")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to this file instead of standard output.")
@pass_cli
def report(obj: CliContext, since: str | None, until: str | None, by: str, segment_names: str | None,
           membership: str, output_format: str, out: Path | None) -> None:
    """Email performance per group, conversion lift against hold-out groups, and program health.

    --since/--until are days in the program's time zone; day/week/month groups are UTC. Conversions are purchases within
    reports.attribution_window after a send; see README "Reports" for every definition. --segments adds one in/out
    column per segment: membership evaluated at each email's send time (default) or at the end of the period.
    --format html writes one self-contained page with charts (flows, segments, tiers, lift, trends; --by is ignored).
    A table wider than the terminal is printed in parts, each repeating the group columns.

    \b
    Example:
      loyalty-mail report
      loyalty-mail report --since 2026-11-01 --by flow,tier --format csv --out november.csv
      loyalty-mail report --by flow --segments promoters,vip
      loyalty-mail report --format html --out report.html
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
    repeated = sorted({g for g in groups if groups.count(g) > 1})
    if repeated:
        raise click.BadParameter(f"group {', '.join(repeated)} given twice (e.g. --by flow,step,variant)",
                                 param_hint="--by")
    if output_format == "html" and out is None and sys.stdout.isatty():
        raise click.UsageError("--format html writes a whole page: add --out FILE (e.g. --out report.html)")
    names = [n.strip() for n in (segment_names or "").split(",") if n.strip()]
    start = datetime.combine(first, time(), tzinfo=zone)
    end = datetime.combine(last + timedelta(days=1), time(), tzinfo=zone)
    settings = runtime.settings
    window = settings.reports.attribution_window
    with runtime.engine().connect() as conn:
        table = None
        if names:
            catalog, problems = load_catalog(settings)
            if problems:
                raise ConfigError(problems)
            table = reports.membership_table(conn, settings, catalog, names, start, end, ("sent",), membership)
        if output_format == "html":
            data = page.collect(conn, program=settings.program.name, currency=settings.program.currency,
                                since=first, until=last, start=start, end=end, window=window,
                                clv_years=float(settings.segments.clv_years), generated_at=runtime.now(),
                                membership=table, segments=names, membership_when=membership,
                                tier_order=[level.name for level in settings.tiers.levels],
                                journeys=reports.configured_journeys(settings))
            _emit(page.render_page(data), out)
            return
        groups += [f"in_{name}" for name in names]
        journeys = reports.configured_journeys(settings)
        rows = reports.in_journey_order(
            reports.performance(conn, start, end, groups, window, membership=table,
                                topics={f.name: f.topic for f in runtime.settings.flows if f.topic}),
            groups, journeys)
        order = [t.name for t in configured_tests(settings.flows, journeys)]
        tests = variant_report(conn, start, end, window, order) if "variant" in groups else None
        lifts = [item.as_row() for item in reports.lift(conn, start, end, window)]
        health = reports.program_health(conn, start, end, float(settings.segments.clv_years))
        funnels = reports.journey_funnel(conn, start, end, window, journeys)
    columns = [*groups, *reports.COLUMNS]
    if output_format == "json":
        payload = {"since": first.isoformat(), "until": last.isoformat(), "by": groups,
                   "membership": membership if names else None, "rows": rows, "lift": lifts, "program": health,
                   "journeys": funnels}
        if tests is not None:
            payload["variants"] = tests
        _emit(json.dumps(to_jsonable(payload), indent=2, ensure_ascii=False) + "\n", out)
    elif output_format == "csv":
        buffer = io.StringIO()
        writer = csv_writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([row.get(c) for c in columns] for row in rows)
        _emit(buffer.getvalue(), out)
    else:
        shown = [*groups, *TABLE_COLUMNS]
        _print_fitting(f"Email performance {first} to {last} (every column: --format csv or json)",
                       [TABLE_HEADINGS.get(c, c) for c in shown],
                       [[_percent(r[c]) if c.endswith("_rate") else r[c] for c in shown] for r in rows],
                       keys=len(groups), numeric=[TABLE_HEADINGS.get(c, c) for c in TABLE_COLUMNS])
        if funnels:
            _print_journeys(funnels)
        if lifts:
            lift_columns = list(lifts[0])
            _print_fitting("Lift against hold-out (conversion within the attribution window, 95% CI)",
                           lift_columns, [[_percent(r[c]) if c in PERCENTS or c.endswith("_rate") else r[c]
                                           for c in lift_columns] for r in lifts], keys=1)
        if tests is not None:
            _print_variants(tests)
        print_table("Program health", ["figure", "value"], _health_rows(health))


def _print_journeys(funnels: list[dict[str, Any]]) -> None:
    """Each journey's funnel: members at each step, then how they stand and who converted."""
    for f in funnels:
        entered = f["entered"]
        print_table(f"Journey {f['flow']}: {entered} entered, {f['converted']} converted "
                    f"({_percent(f['conversion_rate']) or '-'} within the attribution window)",
                    ["#", "step", "what", "reached", "of entered"],
                    [[s["number"] or "-", s["step"], s["what"], s["reached"],
                      charts.percent(s["reached"] / entered) if entered else None] for s in f["steps"]],
                    numeric=["#", "reached", "of entered"], fold=True)
        outcomes = [[page.OUTCOMES[name], n] for name, n in f["exits"].items()]
        if f["held_out"]:
            outcomes.append(["held out and converted", f["held_out_converted"]])
        print_table(f"Journey {f['flow']}: how members stand", ["outcome", "members"], outcomes,
                    numeric=["members"])


def _interval(row: dict[str, Any], metric: str) -> str | None:
    if row[metric] is None:
        return None
    return f"{charts.percent(row[metric])} ({charts.percent(row[metric + '_low'])} to {charts.percent(row[metric + '_high'])})"


def _print_variants(tests: dict[str, list[dict[str, Any]]]) -> None:
    """Each variant's rates with 95% intervals, the differences with their verdicts, the winners;
    a `step` column when a journey's send step is tested."""
    steps = any(r["step"] for r in (*tests["variants"], *tests["winners"]))
    test = ["flow", "step"] if steps else ["flow"]

    def named(r: dict[str, Any]) -> list[Any]:
        return [r["flow"], r["step"] or ""] if steps else [r["flow"]]

    print_table("A/B variants (rates with 95% Wilson intervals)",
                [*test, "variant", "sent", "open", "click", "conversion", "winner"],
                [[*named(r), r["variant"], r["sent"], _interval(r, "open_rate"), _interval(r, "click_rate"),
                  _interval(r, "conversion_rate"), "yes" if r["winner"] else ""] for r in tests["variants"]])
    if tests["differences"]:
        print_table("Differences against the first variant (95% Newcombe intervals)",
                    [*test, "variant", "against", "metric", "difference", "interval", "verdict"],
                    [[*named(r), r["variant"], r["against"], r["metric"], charts.points(r["difference"]),
                      f"{charts.points(r['low'])} to {charts.points(r['high'])}", r["verdict"]]
                     for r in tests["differences"]])
    for w in tests["winners"]:
        where = f"{w['flow']} step {w['step']}" if w["step"] else w["flow"]
        click.echo(f"{where}: variant {w['variant']} won on {w['metric']} at {w['decided_at']} after "
                   f"{counted(w['sends'], 'send')}; new members get it")


PERCENTS = ("absolute_lift", "ci95_low", "ci95_high", "relative_lift")
SEPARATOR = 3  # " │ " between two columns (no outer edge)


def _print_fitting(title: str, columns: list[str], rows: list[list[Any]], *, keys: int,
                   numeric: list[str] | None = None, numbered: bool = False) -> None:
    """A table wider than the terminal (or a pipe's 80 columns) is printed as several, each
    repeating the first `keys` columns, so that no heading or figure is cut short. When those key
    columns leave no room for a figure, they are printed once, numbered, and the figures repeat
    the number instead: group values stay whole (folded onto more lines if even they do not fit)."""
    widths = [max([cell_len(name)] + [cell_len(_cell(row[i])) for row in rows]) for i, name in enumerate(columns)]
    room = stdout().width - sum(widths[:keys]) - SEPARATOR * keys
    if not numbered and keys and len(columns) > keys and room < max(widths[keys:]):
        print_table(f"{title.split(' (')[0]}: groups", ["#", *columns[:keys]],
                    [[n, *row[:keys]] for n, row in enumerate(rows, 1)], numeric=["#"], fold=True)
        _print_fitting(title, ["#", *columns[keys:]], [[n, *row[keys:]] for n, row in enumerate(rows, 1)],
                       keys=1, numeric=["#", *(numeric or ())], numbered=True)
        return
    parts: list[list[int]] = [[]]
    used = 0
    for i in range(keys, len(columns)):
        if parts[-1] and used + widths[i] > room:
            parts.append([])
            used = 0
        parts[-1].append(i)
        used += widths[i] + SEPARATOR
    for n, part in enumerate(parts):
        shown = list(range(keys)) + part
        print_table(title if n == 0 else f"{title.split(' (')[0]}, continued", [columns[i] for i in shown],
                    [[row[i] for i in shown] for row in rows], numeric=numeric or (), fold=True)


def _health_rows(health: dict[str, Any]) -> list[list[Any]]:
    """The program-health figures, one per row (dicts and movements spread out, rates as %)."""
    rows: list[list[Any]] = []
    for name, value in health.items():
        if name == "tier_movements":
            rows += [[f"moved {m['from']} -> {m['to']}", m["members"]] for m in value]
        elif isinstance(value, dict):
            rows += [[f"{name} {key}", item] for key, item in value.items()]
        else:
            rows.append([name, _percent(value) if name.endswith("_rate") else value])
    return rows


def _percent(value: float | None) -> str | None:
    return None if value is None else charts.percent(value)


def _emit(text: str, out: Path | None) -> None:
    if out is None:
        click.echo(text, nl=False)
        return
    write_output(out, text.encode("utf-8"))
    click.echo(f"wrote {out}", err=True)

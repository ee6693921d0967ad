"""The HTML report: one self-contained file (inline CSS and SVG, no scripts, nothing to fetch).

`collect` gathers every figure from figures.py (SQL), `render_page` lays them out with
`page.html`. The page shows the same numbers as `report --format json`, plus charts: rates by
flow and segment, lift against hold-out with 95% intervals, journey funnels, members by tier,
weekly trends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import jinja2
import sqlalchemy as sa
from markupsafe import Markup

from . import charts
from ..flows.journey_spec import Journey
from .figures import COLUMNS, lift, performance, program_health
from .journeys import journey_funnel
from .variants import variant_report

TEMPLATE = Path(__file__).with_name("page.html")
RATES = (("open rate", "open_rate"), ("click rate", "click_rate"))
OUTCOMES = {"exit_when": "left: exit_when held", "suppressed": "left: unsubscribed or suppressed",
            "step_removed": "left: step removed by an edit", "completed": "completed ($end)",
            "in_progress": "still in progress", "held_out": "held out (never entered)"}


@dataclass
class ReportData:
    """Everything the page shows, as plain rows (the JSON report's numbers)."""

    program: str
    currency: str
    since: date
    until: date
    generated_at: datetime
    groups: dict[str, list[dict[str, Any]]]
    lift: list[dict[str, Any]]
    health: dict[str, Any]
    membership_when: str | None = None
    notice: str | None = None
    segments: list[str] = field(default_factory=list)
    settled_weeks_before: date | None = None  # weeks starting later still have conversions to come
    variants: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # variants.comparison
    journeys: list[dict[str, Any]] = field(default_factory=list)  # journeys.journey_funnel


def collect(conn: sa.Connection, *, program: str, currency: str, since: date, until: date, start: datetime,
            end: datetime, window: timedelta, clv_years: float, generated_at: datetime, journeys: dict[str, Journey],
            membership: sa.Table | None = None, segments: list[str] | None = None,
            membership_when: str | None = None, notice: str | None = None,
            tier_order: list[str] | None = None) -> ReportData:
    """Run every query the page needs over [start, end); tiers are listed in `tier_order`, journey
    steps in the order of `journeys` (as configured)."""
    groups = {name: performance(conn, start, end, [name], window) for name in ("flow", "segment", "tier", "week")}
    rank = {name: index for index, name in enumerate(tier_order or [])}
    groups["tier"].sort(key=lambda row: rank.get(row["tier"], len(rank)))
    health = program_health(conn, start, end, clv_years)
    for key in ("members_by_tier", "clv_by_tier"):
        health[key] = dict(sorted(health[key].items(), key=lambda item: rank.get(item[0], len(rank))))
    groups["total"] = performance(conn, start, end, [], window)
    for name in segments or []:
        groups[f"in_{name}"] = performance(conn, start, end, [f"in_{name}"], window, membership=membership)
    return ReportData(program=program, currency=currency, since=since, until=until, generated_at=generated_at,
                      groups=groups, lift=[item.as_row() for item in lift(conn, start, end, window)],
                      health=health, membership_when=membership_when,
                      notice=notice, segments=list(segments or []),
                      settled_weeks_before=(end - window - timedelta(days=6)).date(),
                      variants=variant_report(conn, start, end, window),
                      journeys=journey_funnel(conn, start, end, window, journeys))


def _label(value: Any) -> str:
    return "(none)" if value is None else str(value)


def _rate_chart(title: str, rows: list[dict[str, Any]], key: str) -> Markup:
    return charts.bar_chart(title, [_label(r[key]) for r in rows],
                            [(name, [r[column] for r in rows]) for name, column in RATES])


def funnel_labels(funnel: dict[str, Any]) -> list[str]:
    """`entered`, then each step as `2 wait 3 days`, then `converted`: the rows of a funnel."""
    return ["entered", *(f"{s['number'] or '-'} {s['what']}" for s in funnel["steps"]), "converted"]


def _funnel_chart(funnel: dict[str, Any]) -> Markup:
    labels = funnel_labels(funnel)
    return charts.bar_chart(f"Journey {funnel['flow']}: members at each step", labels,
                            [("members", [funnel["entered"], *(s["reached"] for s in funnel["steps"]),
                                          funnel["converted"]])],
                            fmt=charts.count)


def _charts(data: ReportData) -> dict[str, Markup]:
    g = data.groups
    made: dict[str, Markup] = {}
    if g["flow"]:
        made["flow"] = _rate_chart("Open and click rate by flow", g["flow"], "flow")
    if g["segment"]:
        made["segment"] = _rate_chart("Open and click rate by targeting segment", g["segment"], "segment")
    for name in data.segments:
        rows = g[f"in_{name}"]
        if rows:
            made[f"in_{name}"] = _rate_chart(f"Open and click rate, in segment {name} or not", rows, f"in_{name}")
    measured = [r for r in data.lift if r["absolute_lift"] is not None]
    if measured:
        made["lift"] = charts.interval_chart(
            "Conversion lift against hold-out (percentage points, 95% CI)",
            [(r["flow"], r["absolute_lift"], r["ci95_low"], r["ci95_high"], r["note"].startswith("small"))
             for r in measured])
    differences = [r for r in data.variants.get("differences", []) if r["metric"] == "conversion_rate"]
    if differences:
        made["variants"] = charts.interval_chart(
            "Conversion rate difference against the first variant (percentage points, 95% CI)",
            [(f"{r['flow']}{' ' + r['step'] if r['step'] else ''}: {r['variant']} - {r['against']}", r["difference"], r["low"], r["high"],
              r["verdict"].startswith("no verdict")) for r in differences])
    for funnel in data.journeys:
        made[f"journey_{funnel['flow']}"] = _funnel_chart(funnel)
    tiers = data.health["members_by_tier"]
    if tiers:
        made["tiers"] = charts.bar_chart("Members by tier", list(tiers), [("members", list(tiers.values()))],
                                         fmt=charts.count)
    weeks = g["week"]
    if weeks:
        labels = [str(r["week"]) for r in weeks]
        settled = data.settled_weeks_before
        made["trend_rates"] = charts.line_chart(
            "Weekly open, click and conversion rate (conversion: weeks whose attribution window has closed)",
            labels, [*((name, [r[column] for r in weeks]) for name, column in RATES),
                     ("conversion rate", [r["converted"] / r["sent"] if r["sent"] and (
                         settled is None or date.fromisoformat(str(r["week"])) < settled) else None
                         for r in weeks])])
        made["trend_sent"] = charts.line_chart("Emails sent per week", labels,
                                               [("sent", [r["sent"] for r in weeks])], fmt=charts.count, height=200)
    nps = data.health["nps_distribution"]
    if any(nps.values()):
        made["nps"] = charts.bar_chart("NPS answers by score", list(nps), [("members", list(nps.values()))],
                                       fmt=charts.count)
    return made


def _cell(value: Any, column: str) -> str:
    if value is None:
        return "-"
    if column in ("absolute_lift", "ci95_low", "ci95_high", "difference", "low", "high"):
        return charts.points(value)
    if column.endswith(("_rate", "_rate_low", "_rate_high")) or column == "relative_lift":
        return charts.percent(value)
    if isinstance(value, float):
        return f"{value:,.0f}" if value.is_integer() else f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def render_page(data: ReportData) -> str:
    """The report as one HTML document."""
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATE.parent), autoescape=True,
                                     undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    environment.filters["cell"] = _cell
    environment.filters["label"] = _label
    headline = data.groups["total"][0] if data.groups["total"] else None
    return environment.get_template(TEMPLATE.name).render(
        data=data, charts=_charts(data), columns=COLUMNS, headline=headline, outcome_labels=OUTCOMES,
        table_keys=["flow", "segment", "tier", *(f"in_{name}" for name in data.segments), "week"])

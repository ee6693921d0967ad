"""A/B variants: each variant's rates with intervals, the differences, a verdict, and the winner.

Statistics (README "A/B variants"):

    rate interval        Wilson score interval of x successes in n trials at confidence c,
                         z = the (1 + c) / 2 quantile of the standard normal (1.959964 at 95%):
                         centre = (x + z^2/2) / (n + z^2), half = z * sqrt(x(n - x)/n + z^2/4) / (n + z^2)
    difference interval  Newcombe's hybrid score interval (method 10 of Newcombe 1998) for
                         p1 - p2, from the two Wilson intervals (l1, u1), (l2, u2):
                         [d - sqrt((p1 - l1)^2 + (u2 - p2)^2), d + sqrt((u1 - p1)^2 + (p2 - l2)^2)]
    verdict              fewer than MIN_SENDS sends in either variant: no verdict; otherwise the
                         difference is shown when its interval excludes 0, and not shown when it
                         includes 0
    winner               once a test has `winner.after` sends in all, the variant with the highest
                         rate wins when its difference interval (at `winner.confidence`) against
                         every other variant lies above 0; until then it is asked again each tick

Rates: open = human opens / delivered, click = human clicks / delivered, conversion = sends
followed by a purchase within the attribution window / sent (figures.py defines each count; in a
journey a purchase belongs to the last of its emails before it). A test is a flow's or campaign's,
or a journey send step's (named `<flow>.<step id>`, shown with its flow and `step`).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from statistics import NormalDist
from typing import Any

import sqlalchemy as sa

from ..campaigns import scheduled
from ..config import FlowSettings, Settings, VariantSettings, WinnerRule
from ..flows import variants as assignment
from ..flows.journey_spec import Journey, ab_test_name, split_test
from .figures import performance
from .journeys import configured_journeys

METRICS = ("open_rate", "click_rate", "conversion_rate")
MIN_SENDS = 100
BEGINNING = datetime(2000, 1, 1, tzinfo=timezone.utc)


def z_value(confidence: float) -> float:
    """The two-sided normal quantile for `confidence` (1.959964 for 0.95)."""
    return NormalDist().inv_cdf((1 + confidence) / 2)


def wilson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of `successes` / `trials`; (0, 1) when there are no trials."""
    if trials <= 0:
        return 0.0, 1.0
    z = z_value(confidence)
    z2 = z * z
    centre = (successes + z2 / 2) / (trials + z2)
    half = z * math.sqrt(successes * (trials - successes) / trials + z2 / 4) / (trials + z2)
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe(x1: int, n1: int, x2: int, n2: int, confidence: float = 0.95) -> tuple[float, float, float]:
    """p1 - p2 and its hybrid score interval (Newcombe 1998, method 10)."""
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson(x1, n1, confidence)
    l2, u2 = wilson(x2, n2, confidence)
    d = p1 - p2
    return d, d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


@dataclass(frozen=True)
class Arm:
    """One variant's counts in one test (`flow`: the test's name, see `arms`)."""

    flow: str
    variant: str
    sent: int
    delivered: int
    opens: int
    clicks: int
    converted: int

    def counts(self, metric: str) -> tuple[int, int]:
        """(successes, trials) of `metric`."""
        return {"open_rate": (self.opens, self.delivered), "click_rate": (self.clicks, self.delivered),
                "conversion_rate": (self.converted, self.sent)}[metric]

    def rate(self, metric: str) -> float | None:
        x, n = self.counts(metric)
        return x / n if n else None


def arms(conn: sa.Connection, since: datetime, until: datetime, window: timedelta) -> dict[str, list[Arm]]:
    """Every test's variants with their counts (sends scheduled in [since, until)), by test name:
    a flow's (or campaign's) name, or `<flow>.<step id>` for a journey's send step."""
    tests: dict[str, list[Arm]] = {}
    for row in performance(conn, since, until, ["test", "variant"], window):
        if row["variant"] is None:
            continue
        tests.setdefault(row["test"], []).append(Arm(row["test"], row["variant"], row["sent"], row["delivered"],
                                                     row["opens_human"], row["clicks_human"], row["converted"]))
    return tests


def verdict(first: Arm, second: Arm, metric: str, low: float, high: float, confidence: float = 0.95) -> str:
    """A plain sentence about `second` against `first` on `metric`."""
    label = metric.replace("_", " ")
    if min(first.sent, second.sent) < MIN_SENDS:
        return f"no verdict: fewer than {MIN_SENDS} sends per variant"
    share = f"{confidence:.0%}"
    if low > 0:
        return f"{second.variant} has the higher {label} ({share} interval of the difference above 0)"
    if high < 0:
        return f"{first.variant} has the higher {label} ({share} interval of the difference below 0)"
    return f"no difference shown: the {share} interval of the difference includes 0"


def comparison(tests: dict[str, list[Arm]], winners: dict[str, assignment.Winner],
               confidence: float = 0.95, order: Sequence[str] = ()) -> dict[str, list[dict[str, Any]]]:
    """The report's rows: `variants` (each arm's rates with intervals) and `differences` (each
    variant against the first one, by name, on every metric), and `winners`; each names its
    `flow` and, for a journey's send step, its `step` (None for a one-email flow or a campaign).
    Tests come in `order` (test names; default: by name), the others after it."""
    rows: list[dict[str, Any]] = []
    differences: list[dict[str, Any]] = []
    rank = {name: n for n, name in enumerate(order or ())}
    for test in sorted(tests, key=lambda name: (rank.get(name, len(rank)), name)):
        tested = sorted(tests[test], key=lambda a: a.variant)
        flow, step = split_test(test)
        for arm in tested:
            row: dict[str, Any] = {"flow": flow, "step": step, "variant": arm.variant, "sent": arm.sent,
                                   "delivered": arm.delivered, "opens": arm.opens, "clicks": arm.clicks,
                                   "converted": arm.converted}
            for metric in METRICS:
                x, n = arm.counts(metric)
                low, high = wilson(x, n, confidence)
                row[metric] = _round(arm.rate(metric))
                row[f"{metric}_low"], row[f"{metric}_high"] = (_round(low), _round(high)) if n else (None, None)
            row["winner"] = test in winners and winners[test].variant == arm.variant
            rows.append(row)
        base = tested[0]
        for arm in tested[1:]:
            for metric in METRICS:
                (x1, n1), (x2, n2) = arm.counts(metric), base.counts(metric)
                if not (n1 and n2):
                    continue
                d, low, high = newcombe(x1, n1, x2, n2, confidence)
                differences.append({"flow": flow, "step": step, "variant": arm.variant, "against": base.variant, "metric": metric,
                                    "difference": _round(d), "low": _round(low), "high": _round(high),
                                    "verdict": verdict(base, arm, metric, low, high, confidence)})
    decided = [{"flow": split_test(w.flow)[0], "step": split_test(w.flow)[1], "variant": w.variant,
                "metric": w.metric, "decided_at": w.decided_at.isoformat(), **w.figures}
               for _, w in sorted(winners.items(), key=lambda item: (rank.get(item[0], len(rank)), item[0]))]
    return {"variants": rows, "differences": differences, "winners": decided}


def variant_report(conn: sa.Connection, since: datetime, until: datetime, window: timedelta,
                   order: Sequence[str] = ()) -> dict[str, Any]:
    """`comparison` of the tests that sent in [since, until), with the winners recorded by `until`;
    `order`: test names in the order to show them (see `configured_tests`)."""
    return comparison(arms(conn, since, until, window), assignment.winners(conn, until), order=order)


@dataclass(frozen=True)
class Test:
    """One A/B test as configured: a flow's or campaign's, or a journey send step's."""

    name: str
    variants: tuple[VariantSettings, ...]
    winner: WinnerRule | None


def configured_tests(flows: Iterable[FlowSettings], journeys: Mapping[str, Journey]) -> list[Test]:
    """Every test of these flows (campaigns as flows) in config order: a one-email flow's, and
    each send step's of a journey (`journeys`, by flow name), in the journey's order."""
    tests = []
    for flow in flows:
        journey = journeys.get(flow.name) if flow.is_journey else None
        if journey is not None:
            tests += [Test(ab_test_name(flow.name, step.id), step.variants, step.winner)
                      for step in journey.tests()]
        elif flow.variants:
            tests.append(Test(flow.name, flow.variants, flow.winner))
    return tests


def pick_winner(tested: list[Arm], rule: WinnerRule,
                offered: Collection[str] | None = None) -> tuple[Arm, dict[str, Any]] | None:
    """The winning arm under `rule` and the figures it won on, or None (see module docstring).
    With `offered` (the variants configured), each of them must have sends: a winner beats
    every other variant."""
    if offered is not None and not set(offered) <= {a.variant for a in tested if a.sent}:
        return None
    if len(tested) < 2 or sum(a.sent for a in tested) < rule.after:
        return None
    ranked = sorted(tested, key=lambda a: (-(a.rate(rule.metric) or 0.0), a.variant))
    leader = ranked[0]
    figures: dict[str, Any] = {"sends": sum(a.sent for a in tested), "confidence": rule.confidence,
                               "rates": {a.variant: _round(a.rate(rule.metric)) for a in tested},
                               "against": {}}
    for other in ranked[1:]:
        (x1, n1), (x2, n2) = leader.counts(rule.metric), other.counts(rule.metric)
        if not (n1 and n2):
            return None
        d, low, high = newcombe(x1, n1, x2, n2, rule.confidence)
        if low <= 0:
            return None
        figures["against"][other.variant] = {"difference": _round(d), "low": _round(low), "high": _round(high)}
    return leader, figures


def settle_winners(engine: sa.Engine, settings: Settings, now: datetime) -> list[assignment.Winner]:
    """Record the winner of every test (a flow, a journey's send step or a scheduled campaign with
    `winner:`) whose rule is met at `now`; returns the winners recorded now. The daemon and `run --once` call it
    before planning, so members planned after a switch get the winner."""
    with engine.connect() as conn:
        due = due_winners(conn, settings, now)
    return [winner for winner in due if assignment.record_winner(engine, winner)]


def due_winners(conn: sa.Connection, settings: Settings, now: datetime) -> list[assignment.Winner]:
    """The winners settle_winners would record at `now`, recording nothing (the dry run writes
    them with assignment.write_winner on its own connection, which it rolls back)."""
    flows: list[FlowSettings] = [*settings.flows, *(row.campaign.as_flow() for row in scheduled(conn, now))]
    ruled = [t for t in configured_tests(flows, configured_journeys(settings))
             if t.winner is not None and t.variants]
    if not ruled:
        return []
    decided = assignment.winners(conn, now)
    figures = arms(conn, BEGINNING, now, settings.reports.attribution_window)
    recorded = []
    for test in ruled:
        assert test.winner is not None
        offered = {v.name for v in test.variants}
        tested = [a for a in figures.get(test.name, []) if a.variant in offered]
        if test.name in decided and decided[test.name].ends(test.variants):
            continue
        picked = pick_winner(tested, test.winner, offered)
        if picked is None:
            continue
        arm, won_on = picked
        won_on["variant_set"] = assignment.variant_set(test.variants)
        recorded.append(assignment.Winner(test.name, arm.variant, test.winner.metric, won_on, now))
    return recorded


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)

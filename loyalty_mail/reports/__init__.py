"""Reports: email performance, hold-out lift and program health, as SQL aggregates.

    figures.py     per-send outcome flags -> rows per group, lift, program health (all SQL)
    membership.py  who was in which segment at send time or now (`report --segments`)
    variants.py    A/B variants: rates with Wilson intervals, differences, verdicts, the winner
    journeys.py    the journey funnel: entries, steps reached, exits by reason, conversions
    charts.py      small self-contained SVG charts (bars, intervals, lines)
    page.py        the one-file HTML report (tables and charts, no network needed)
"""

from __future__ import annotations

from .figures import COLUMNS, FIRST_DAY, GROUPS, LAST_DAY, SMALL_SAMPLE, Lift, lift, per_send, performance, program_health
from .journeys import configured_journeys, in_journey_order, journey_funnel
from .membership import WHEN, membership_table

__all__ = ["COLUMNS", "FIRST_DAY", "GROUPS", "LAST_DAY", "SMALL_SAMPLE", "WHEN", "Lift", "configured_journeys",
           "in_journey_order", "journey_funnel", "lift", "membership_table", "per_send", "performance", "program_health"]

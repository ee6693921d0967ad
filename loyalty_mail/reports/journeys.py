"""The journey funnel: how far members went through each journey, how they left, who converted.

All figures come from `journey_steps` (flows/ledger.py writes it) and the members' purchases, as
SQL aggregates. An instance (one entry of a member into a journey) belongs to the report when it
began in [since, until); what it did is counted as it stood at `until` (rows reached by then).

    entered      members with an instance that reached a step (or left before its first one)
    steps        members who reached each step, in the journey's order, with what the step is
    exits        how those instances stand: exit_when (the flow's rule held), suppressed (unsubscribed,
                 suppressed or left the topic at a send step), step_removed (an edit removed the step
                 they stood at), completed (past the last step, `$end`), in_progress (none of those yet);
                 held_out: members of the hold-out group, who never enter (not in `entered`)
    converted    entered members with a purchase within the attribution window after entering (the
                 reports' conversion); held_out_converted: the same for held-out members, from the
                 moment they would have entered

A member who entered a journey twice in the period counts once in each figure that applies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from ..config import Settings
from ..flows.journey_spec import END, EXIT, EXIT_WHEN, LEFT, Journey, describe, flow_journey
from ..models import events_table, journey_steps_table
from ..tiers import TierLadder
from .figures import purchased_within

EXITS = ("exit_when", "suppressed", "step_removed", "completed", "in_progress", "held_out")


def configured_journeys(settings: Settings) -> dict[str, Journey]:
    """The journeys of config.yaml (disabled ones too: their members may still be counted), by flow."""
    ladder = TierLadder.from_settings(settings.tiers)
    found = {f.name: flow_journey(f, ladder)[0] for f in settings.flows if f.is_journey}
    return {name: journey for name, journey in found.items() if journey is not None}


def _instances(since: datetime, until: datetime, window: timedelta, dialect: str) -> sa.Subquery:
    """One row per instance begun in [since, until): its member, when it began, how it stood at
    `until`, and whether a purchase followed within the window."""
    j, e = journey_steps_table, events_table
    exited = sa.and_(j.c.step == EXIT, j.c.reached_at < until)

    def flag(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
        return sa.func.max(sa.case((condition, 1), else_=0))

    refused = sa.and_(j.c.step == END, j.c.outcome.in_(("held_out", "skipped")))
    grouped = (sa.select(
        j.c.flow, j.c.member_ref, j.c.instance, sa.func.min(j.c.reached_at).label("began"),
        flag(sa.and_(refused, j.c.outcome == "held_out")).label("held_out"),
        flag(refused).label("refused"),
        flag(sa.and_(j.c.step == END, j.c.outcome == "completed")).label("completed"),
        flag(sa.and_(exited, j.c.detail == EXIT_WHEN)).label("exit_when"),
        flag(sa.and_(exited, j.c.detail.startswith(LEFT, autoescape=True))).label("suppressed"),
        flag(sa.and_(exited, j.c.detail != EXIT_WHEN, ~j.c.detail.startswith(LEFT, autoescape=True)))
        .label("step_removed"),
    ).where(j.c.reached_at < until).group_by(j.c.flow, j.c.member_ref, j.c.instance)
        .having(sa.func.min(j.c.reached_at) >= since).subquery())
    bought = sa.exists(sa.select(e.c.id).where(*purchased_within(grouped.c.member_ref, grouped.c.began, window,
                                                                  dialect)))
    return sa.select(grouped, sa.case((bought, 1), else_=0).label("converted")).subquery()


def journey_funnel(conn: sa.Connection, since: datetime, until: datetime, window: timedelta,
                   journeys: dict[str, Journey]) -> list[dict[str, Any]]:
    """The funnel of every journey with an instance begun in [since, until), by flow name. Steps
    are in the order of `journeys` (the journeys as configured); steps reached that the journey
    no longer has come after them, as `(no longer in the journey)`."""
    base = _instances(since, until, window, conn.dialect.name)
    entered = base.c.refused == 0
    ongoing = sa.and_(entered, base.c.completed == 0, base.c.exit_when == 0, base.c.suppressed == 0,
                      base.c.step_removed == 0)

    def members(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
        return sa.func.count(sa.distinct(sa.case((condition, base.c.member_ref), else_=sa.null())))

    totals = conn.execute(sa.select(
        base.c.flow, members(entered).label("entered"),
        members(sa.and_(entered, base.c.converted == 1)).label("converted"),
        members(base.c.held_out == 1).label("held_out"),
        members(sa.and_(base.c.held_out == 1, base.c.converted == 1)).label("held_out_converted"),
        *(members(sa.and_(entered, base.c[name] == 1)).label(name)
          for name in ("exit_when", "suppressed", "step_removed", "completed")),
        members(ongoing).label("in_progress"),
    ).group_by(base.c.flow).order_by(base.c.flow)).mappings().all()
    j = journey_steps_table
    reached: dict[str, dict[str, int]] = {}
    first_seen: dict[tuple[str, str], Any] = {}
    for flow, step, count, first in conn.execute(
            sa.select(j.c.flow, j.c.step, sa.func.count(sa.distinct(j.c.member_ref)), sa.func.min(j.c.reached_at))
            .join(base, sa.and_(base.c.flow == j.c.flow, base.c.member_ref == j.c.member_ref,
                                base.c.instance == j.c.instance, base.c.refused == 0))
            .where(j.c.step.not_in((END, EXIT)), j.c.reached_at < until)
            .group_by(j.c.flow, j.c.step)):
        reached.setdefault(flow, {})[step] = int(count)
        first_seen[(flow, step)] = first
    funnels = []
    for row in totals:
        flow = row["flow"]
        if not row["entered"] and not row["held_out"]:
            continue
        counts = reached.get(flow, {})
        journey = journeys.get(flow)
        steps = []
        if journey is not None:
            steps = [{"number": journey.number[step_id], "step": step_id, "what": describe(step),
                      "reached": counts.get(step_id, 0)} for step_id, step in journey.by_id.items()]
        gone = sorted((s for s in counts if journey is None or s not in journey.by_id),
                      key=lambda s: (str(first_seen[(flow, s)]), s))
        steps += [{"number": None, "step": s, "what": "(no longer in the journey)", "reached": counts[s]}
                  for s in gone]
        entered_n, held = int(row["entered"]), int(row["held_out"])
        funnels.append({
            "flow": flow, "entered": entered_n, "converted": int(row["converted"]),
            "conversion_rate": round(row["converted"] / entered_n, 4) if entered_n else None,
            "held_out": held, "held_out_converted": int(row["held_out_converted"]),
            "held_out_conversion_rate": round(row["held_out_converted"] / held, 4) if held else None,
            "steps": steps, "exits": {name: int(row[name]) for name in EXITS},
        })
    return funnels


def in_journey_order(rows: list[dict[str, Any]], by: Sequence[str], journeys: Mapping[str, Journey]
                     ) -> list[dict[str, Any]]:
    """Performance rows grouped by `flow` then `step` (`by` has both, flow first), with each
    journey's steps in the journey's order (the order config.yaml writes them, branches and
    on_timeout steps where they stand) instead of by name; steps the journey no longer has come
    after its steps, by name. The rest keeps the order the rows came in: the groups before `step`
    as they came, those after it too within one step. A one-email flow's `step` (its template)
    stays by name."""
    if "flow" not in by or "step" not in by or by.index("flow") > by.index("step"):
        return rows
    before = list(by[:by.index("step")])
    first: dict[tuple[Any, ...], int] = {}
    for row in rows:
        first.setdefault(tuple(row[name] for name in before), len(first))

    def key(row: dict[str, Any]) -> tuple[int, int, str]:
        journey, step = journeys.get(row["flow"]), row["step"]
        place = 0 if journey is None else journey.number.get(step, len(journey.number) + 1)
        return first[tuple(row[name] for name in before)], place, "" if step is None else str(step)

    return sorted(rows, key=key)

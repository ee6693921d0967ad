"""The flows page: what a dry run would send, and why one member is or is not due.

What stops `run` (a segment file that does not load, a flow naming a missing email template)
is shown as problems on the page, as `check` words them; the flows it does not touch are still
planned, so one broken file does not hide the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, LoyaltyMailError, Problem
from ..flows.planner import Explanation, Plan, Planner
from ..flows.runner import check_flow_templates
from ..members import find_members
from ..segments import load_catalog
from .program import ProgramState, Workspace


@dataclass
class FlowsView:
    """The dry run's counts, the problems that would stop a run, and one member's explanation."""

    counts: list[tuple[str, dict[str, int]]] = field(default_factory=list)
    segments: dict[str, str] = field(default_factory=dict)
    reasons: list[tuple[tuple[str, str], int]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    unplanned: list[str] = field(default_factory=list)  # flows left out of the plan (their segment does not load)
    query: str = ""
    found: list[dict[str, Any]] = field(default_factory=list)  # several members match the query
    member_id: str = ""
    explanation: Explanation | None = None
    notice: str | None = None


def flows_view(workspace: Workspace, state: ProgramState, query: str) -> FlowsView:
    """Plan every flow that can be planned at the workspace's `now`, and explain the member
    `query` names (an id, or the start of an id or email, as the email page's member search)."""
    assert state.settings is not None
    view = FlowsView(query=query)
    settings = state.settings
    try:
        check_flow_templates(settings, state.renderer())
    except LoyaltyMailError as exc:
        view.problems += _problems(exc)
    catalog, segment_problems = load_catalog(settings)
    view.problems += segment_problems
    runnable = tuple(f for f in settings.flows if not f.segment or f.segment in catalog.segments)
    view.unplanned = [f.name for f in settings.flows if f.name not in {r.name for r in runnable}]
    engine, now = workspace.engine(), workspace.now()
    try:
        if view.unplanned:
            try:  # the problem as `run` words it: the flow names a segment that is not there
                Planner(settings, catalog, engine.dialect.name)
            except ConfigError as exc:
                view.problems += exc.problems
        planner = Planner(settings.model_copy(update={"flows": runnable}), catalog, engine.dialect.name)
        plan = planner.plan_in(engine, now, review=True, plan=Plan(now, keep=False))  # as run --dry-run
    except LoyaltyMailError as exc:
        view.problems += _problems(exc)
        return view
    view.counts, view.segments = sorted(plan.counts().items()), plan.segments
    view.reasons = sorted(plan.reasons.items())
    if query:
        with engine.connect() as connection:
            found = find_members(connection, query, limit=10)
            exact = [m for m in found if m["member_id"] == query or m["email"].lower() == query.lower()]
            chosen = exact[:1] or (found if len(found) == 1 else [])
            if chosen:
                view.member_id = chosen[0]["member_id"]
                try:
                    view.explanation = planner.explain(connection, view.member_id, now)
                except LoyaltyMailError as exc:
                    view.notice = str(exc)
            elif found:
                view.found = found
            else:
                view.notice = f"No such member: no member's id or email begins with “{query}”."
    return view


def _problems(exc: LoyaltyMailError) -> list[Problem]:
    return list(getattr(exc, "problems", None) or [Problem(None, str(exc))])

"""Flows: who is due which email at `now`, and why; the ledger that makes it happen once.

    occurrences.py  each trigger as a bounded query: welcome, milestone, tier upgrade, segment entry,
                    event, expiring points, and a scheduled campaign's audience
    member_triggers.py  the member-lifecycle triggers: tier reviews, birthdays, rewards,
                    statements, double opt-in confirmations
    journey_spec.py a journey's steps as read from config.yaml; journeys.py where members are in
                    one and the walk to their next step
    decisions.py    what is decided for one occurrence: a send or a skip
    planner.py      policy (ledger, lateness, suppression, topics, pauses, double opt-in, hold-out,
                    frequency cap, quiet hours);
                    `explain`: every flow's answer for one member, and which reason holds
    ledger.py       record decisions, claim due sends, record outcomes (all `sends` writes)
    variants.py     A/B variants: which one a member gets (stable), the recorded winners
    delivery.py     claim due sends, render, hand to the transport, record the outcome
    dispatchers.py  the same delivery in several processes at once
    runner.py       one tick: plan, record, deliver; dry-run previews
    scheduler.py    the daemon: APScheduler ticks, graceful stop
"""

from .delivery import TickReport
from .planner import Explanation, FlowExplanation, Plan, PlannedSend, Planner, Skip, in_holdout, quiet_until
from .runner import build_planner, run_once, write_previews

__all__ = ["Explanation", "FlowExplanation", "Plan", "PlannedSend", "Planner", "Skip", "TickReport", "build_planner", "in_holdout",
           "quiet_until", "run_once", "write_previews"]

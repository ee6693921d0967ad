"""Demo data: a realistic, deterministic program loaded through the ordinary import path."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime

import sqlalchemy as sa

from .. import tier_review
from ..config import Settings
from ..importing import ImportSummary, import_rows
from ..importing.readers import SourceRow
from .generator import DemoProgram

__all__ = ["DemoProgram", "seed_program"]


def seed_program(
    engine: sa.Engine,
    settings: Settings,
    *,
    members: int,
    seed: int,
    now: datetime,
    on_member: Callable[[], None] | None = None,
) -> tuple[ImportSummary, ImportSummary]:
    """Generate `members` members with their histories and import them (members, then events).

    The generator runs twice with the same seed, once for members and once for events, so
    memory stays flat however many members are asked for.
    """
    program = DemoProgram(members=members, now=now, currency=settings.program.currency,
                          points_per_currency_unit=settings.program.points_per_currency_unit, seed=seed)

    def member_rows() -> Iterator[SourceRow]:
        for number, (member, _) in enumerate(program.rows(), start=1):
            if on_member:
                on_member()
            yield number, member

    def event_rows() -> Iterator[SourceRow]:
        number = 0
        for _, events in program.rows():
            if on_member:
                on_member()
            for event in events:
                number += 1
                yield number, event

    source = f"demo program (seed {seed})"
    member_summary, _ = import_rows(engine, settings, "members", member_rows(), source=source, now=now)
    event_summary, _ = import_rows(engine, settings, "events", event_rows(), source=source, now=now)
    if settings.tiers.qualification is not None:  # tiers as reviews over the history made them
        replayed = tier_review.replay(engine, settings, None, now)
        event_summary.tier_changes += replayed.count("up") + replayed.count("down")
    return member_summary, event_summary

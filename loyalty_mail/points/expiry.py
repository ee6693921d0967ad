"""The expiry job: lots whose expiry has come become `points_expired` events.

At `now`, every open lot with `expires_at <= now` is due. Per member and expiry instant, one
`points_expired` event is recorded, at that instant, through the event import (so the balance
falls, the tier follows when tiers are measured in points, tier history is written, the daemon
is told, and the member's lots are rebuilt). The job is idempotent: the lots it expired are
gone, and its `event_id` (`lm-expired/<member>/<instant>`, then `/2`, `/3`... when a history
imported later leaves more points to expire at an instant already recorded) is never applied
twice, so two runs at once record each expiry once. A dry run is the same job in a transaction
that is rolled back.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

from .. import db
from ..config import Settings
from ..importing.batch import ImportSummary
from ..importing.events import import_events
from ..importing.readers import SourceRow
from ..models import events_table, members_table, point_lots_table

SOURCE = "points expiry"


@dataclass
class ExpiryReport:
    """What one run of the job found and recorded."""

    at: datetime
    dry_run: bool
    members: int = 0
    events: int = 0
    points: int = 0
    tier_changes: int = 0
    expired: list[dict[str, Any]] = field(default_factory=list)  # with `keep`: one per event

    def summary(self) -> str:
        verb = "would expire" if self.dry_run else "expired"
        return (f"points expiry at {self.at:%Y-%m-%d %H:%M} UTC: {verb} {self.points:,} points of "
                f"{self.members:,} members ({self.events:,} events, {self.tier_changes:,} tier changes)")


def event_id(member_id: str, expires_at: datetime, number: int = 1) -> str:
    """`lm-expired/M1/20261210T030000.000000Z`; the n-th expiry of one instant ends in `/n`."""
    base = f"lm-expired/{member_id}/{expires_at.astimezone(timezone.utc):%Y%m%dT%H%M%S.%fZ}"
    return base if number == 1 else f"{base}/{number}"


def due_expiries(connection: sa.Connection, now: datetime) -> Iterator[tuple[str, datetime, int, int]]:
    """(member_id, expires_at, points, number) due at `now`, in member order: `number` counts the
    expiries already recorded at that instant, plus one. Never more than the member's balance in
    all (points set directly by a members import are not in any lot)."""
    lots, m, e = point_lots_table, members_table, events_table
    due = (sa.select(lots.c.member_ref, lots.c.expires_at, sa.func.sum(lots.c.remaining).label("points"))
           .where(lots.c.expires_at <= now)
           .group_by(lots.c.member_ref, lots.c.expires_at).subquery())
    recorded = (sa.select(sa.func.count()).where(e.c.member_ref == due.c.member_ref, e.c.type == "points_expired",
                                                 e.c.occurred_at == due.c.expires_at)
                .correlate(due).scalar_subquery())
    query = (sa.select(m.c.member_id, m.c.points.label("balance"), due.c.expires_at, due.c.points,
                       recorded.label("recorded"))
             .join(m, m.c.id == due.c.member_ref)
             .order_by(due.c.member_ref, due.c.expires_at))
    current, left = None, 0
    for row in connection.execute(query):
        if row.member_id != current:
            current, left = row.member_id, int(row.balance)
        points = min(int(row.points), left)
        left -= points
        if points > 0:
            yield row.member_id, row.expires_at, points, int(row.recorded) + 1


def expire_points(engine: sa.Engine, settings: Settings, now: datetime, *, dry_run: bool = False,
                  keep: bool = False) -> ExpiryReport:
    """Record every expiry due at `now` in one transaction (rolled back when `dry_run`). `keep`
    lists each event in the report (the CLI's output)."""
    report = ExpiryReport(now, dry_run)
    if settings.program.points.expiry is None:
        return report
    members: set[str] = set()

    def rows() -> Iterator[SourceRow]:
        for number, (member_id, expires_at, points, nth) in enumerate(due_expiries(connection, now), 1):
            members.add(member_id)
            report.points += points
            row = {"event_id": event_id(member_id, expires_at, nth), "member_id": member_id,
                   "type": "points_expired", "occurred_at": expires_at.isoformat(), "points": points}
            if keep:
                report.expired.append(row)
            yield number, row

    with db.writer(engine).connect() as connection:
        transaction = connection.begin()
        try:
            # The due rows are read whole before the import writes (SQLite cannot write a table
            # while a statement reading it is open on the same connection).
            staged = list(rows())
            summary: ImportSummary
            summary, _ = import_events(connection, settings, iter(staged), source=SOURCE, now=now)
            report.members, report.events = len(members), summary.inserted
            report.tier_changes = summary.tier_changes
            if dry_run:
                transaction.rollback()
            else:
                transaction.commit()
        except BaseException:
            transaction.rollback()
            raise
    return report

"""The expiry job: lots whose expiry has come become `points_expired` events.

At `now`, every open lot with `expires_at <= now` is due. Per member and expiry instant, one
`points_expired` event is recorded, at that instant, by the event import's set-based
`record_expiries` (so the balance falls, the tier follows when tiers are measured in points, tier
history is written, and the daemon is told; a chunk of expiries per round of executemany writes,
never a statement per event). Each event takes exactly the lots that expired (the oldest first, as a replay
would), so those lots are deleted rather than every member's lots derived again. The job is idempotent: the lots it expired are
gone, and its `event_id` (`lm-expired/<member>/<instant>`, then `/2`, `/3`... when a history
imported later leaves more points to expire at an instant already recorded) is never applied
twice, so two runs at once record each expiry once. A dry run is the same job in a transaction
that is rolled back; so are `run --dry-run` and `explain` (record_due on their connection), which
see what a tick records before it plans.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

from .. import db
from ..config import Settings
from ..errors import counted
from ..importing.events import Expiry, record_expiries
from ..models import events_table, members_table, point_lots_table
from .store import remove_expired

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
        return (f"points expiry at {self.at.astimezone(timezone.utc):%Y-%m-%d %H:%M} UTC: {verb} "
                f"{counted(self.points, 'point')} of {counted(self.members, 'member')} "
                f"({counted(self.events, 'event')}, {counted(self.tier_changes, 'tier change')})")


def event_id(member_id: str, expires_at: datetime, number: int = 1) -> str:
    """`lm-expired/M1/20261210T030000.000000Z`; the n-th expiry of one instant ends in `/n`."""
    base = f"lm-expired/{member_id}/{expires_at.astimezone(timezone.utc):%Y%m%dT%H%M%S.%fZ}"
    return base if number == 1 else f"{base}/{number}"


@dataclass(frozen=True)
class Due:
    """Points due to expire: a member's lots of one expiry instant."""

    member_ref: int
    member_id: str
    expires_at: datetime
    points: int     # never more than the member's balance, in all their expiries
    number: int     # the expiries already recorded at that instant, plus one
    partial: bool   # cut to the balance (points set by a members import are in no lot)


def due_expiries(connection: sa.Connection, now: datetime, members: Collection[int] | None = None) -> Iterator[Due]:
    """The expiries due at `now`, in member order (of these members, by id, when given)."""
    lots, m, e = point_lots_table, members_table, events_table
    mine = [lots.c.member_ref.in_(sorted(members))] if members is not None else []
    due = (sa.select(lots.c.member_ref, lots.c.expires_at, sa.func.sum(lots.c.remaining).label("points"))
           .where(lots.c.expires_at <= now, *mine)
           .group_by(lots.c.member_ref, lots.c.expires_at).subquery())
    recorded = (sa.select(sa.func.count()).where(e.c.member_ref == due.c.member_ref, e.c.type == "points_expired",
                                                 e.c.occurred_at == due.c.expires_at)
                .correlate(due).scalar_subquery())
    query = (sa.select(m.c.id, m.c.member_id, m.c.points.label("balance"), due.c.expires_at, due.c.points,
                       recorded.label("recorded"))
             .join(m, m.c.id == due.c.member_ref)
             .order_by(due.c.member_ref, due.c.expires_at))
    current, left = None, 0
    for row in connection.execute(query):
        if row.member_id != current:
            current, left = row.member_id, int(row.balance)
        points = min(int(row.points), left)
        left -= points
        yield Due(row.id, row.member_id, row.expires_at, points, int(row.recorded) + 1, points < int(row.points))


def expire_points(engine: sa.Engine, settings: Settings, now: datetime, *, dry_run: bool = False,
                  keep: bool = False) -> ExpiryReport:
    """Record every expiry due at `now` in one transaction (rolled back when `dry_run`). `keep`
    lists each event in the report (the CLI's output)."""
    if settings.program.points.expiry is None:
        return ExpiryReport(now, dry_run)
    with db.writer(engine).connect() as connection:
        transaction = connection.begin()
        try:
            report = record_due(connection, settings, now, keep=keep, first=True)
            report.dry_run = dry_run
            if dry_run:
                transaction.rollback()
            else:
                transaction.commit()
        except BaseException:
            transaction.rollback()
            raise
    return report


def record_due(connection: sa.Connection, settings: Settings, now: datetime, *,
               members: Collection[int] | None = None, keep: bool = False, first: bool = False) -> ExpiryReport:
    """The job on `connection`, in the caller's transaction: every expiry due at `now` (of these
    members, by id, when given) recorded, and the lots it used up removed. `first`: take the
    job's lock before reading (the job that commits)."""
    report = ExpiryReport(now, False)
    if settings.program.points.expiry is None:
        return report
    # Read whole before the import writes: SQLite cannot change a table while a statement
    # reading it is open on the same connection. One row per member and expiry instant.
    # Two jobs at once (`points expire` during a tick): the second waits for the first's
    # transaction, then reads what it left (SQLite's writer lock, BEGIN IMMEDIATE, does the same
    # there). The job that commits (`first`) takes the lock before it reads; a dry run or explain
    # only when something is due, then reads again, so that they never wait on each other.
    if first:
        db.serialized(connection, db.EXPIRY_LOCK)
    due = list(due_expiries(connection, now, members))
    if due and not first and connection.dialect.name != "sqlite":
        db.serialized(connection, db.EXPIRY_LOCK)
        due = list(due_expiries(connection, now, members))
    recorded = [d for d in due if d.points > 0]
    summary = record_expiries(connection, settings, [
        Expiry(number, d.member_ref, event_id(d.member_id, d.expires_at, d.number), d.expires_at, d.points)
        for number, d in enumerate(recorded, 1)], source=SOURCE, now=now)
    remove_expired(connection, settings, now, {d.member_ref for d in due if d.partial}, members)
    report.members = len({d.member_ref for d in recorded})
    report.points = sum(d.points for d in recorded)
    report.events, report.tier_changes = summary.inserted, summary.tier_changes
    if keep:
        report.expired = [{"event_id": event_id(d.member_id, d.expires_at, d.number), "member_id": d.member_id,
                           "type": "points_expired", "occurred_at": d.expires_at.isoformat(),
                           "points": d.points} for d in recorded]
    return report

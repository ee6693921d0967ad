"""The send ledger: record the planner's decisions, hand due sends to delivery, mark results.

All state changes of `sends` and `journey_steps` live here. Inserts ignore rows whose (member,
flow, occurrence) already exists, so recording the same plan twice, from two processes or after a
crash, records each occurrence once.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from .. import db
from ..models import UTCDateTime, journey_steps_table, members_table, sends_table, suppressions_table
from .journey_spec import EXIT

if TYPE_CHECKING:
    from ..config import VariantSettings
    from .occurrences import Occurrence
    from .planner import Plan

BATCH = 1000
RETRYABLE = ("failed", "unknown")


def record(engine: sa.Engine, plan: Plan, now: datetime) -> dict[str, int]:
    """Store planned sends and recorded skips, 1,000 rows a transaction; counts by state.

    A journey's rows (its steps in journey_steps, and the sends of its send steps) are written in
    one transaction of their own, so a step and its email are recorded together or not at all;
    a member leaving a journey (`$exit`) cancels the sends of that instance still planned."""
    rows: list[dict[str, Any]] = []
    journey: list[dict[str, Any]] = []
    for send in plan.sends:
        occ = send.occurrence
        (journey if occ.template else rows).append(
            _row(occ, "planned", send.reason + (f"; {send.deferred}" if send.deferred else ""),
                 send.scheduled_for, send.segment, now, send.variant))
    for skip in plan.skips:
        if skip.record_as:
            occ = skip.occurrence
            (journey if occ.template else rows).append(
                _row(occ, skip.record_as, skip.reason, occ.due_at, occ.flow.segment, now))
    counts: dict[str, int] = {}
    # RETURNING counts what was new: executemany's rowcount is -1 on PostgreSQL
    statement = db.insert_ignoring_duplicates(sends_table, engine.dialect.name).returning(sends_table.c.id)
    for start in range(0, len(rows), BATCH):
        batch = rows[start:start + BATCH]
        with engine.begin() as conn:
            inserted = len(conn.execute(statement, batch).all())
        _count(counts, batch, inserted)
    if journey or plan.steps:
        with engine.begin() as conn:
            inserted = len(conn.execute(statement, journey).all()) if journey else 0
            _record_steps(conn, plan, now)
        _count(counts, journey, inserted)
    return counts


def _count(counts: dict[str, int], batch: list[dict[str, Any]], inserted: int) -> None:
    for row in batch:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    counts["inserted"] = counts.get("inserted", 0) + inserted


def _record_steps(conn: sa.Connection, plan: Plan, now: datetime) -> None:
    j, s = journey_steps_table, sends_table
    if not plan.steps:
        return
    conn.execute(db.insert_ignoring_duplicates(j, conn.dialect.name), [
        {"member_ref": r.member_ref, "flow": r.flow, "instance": r.instance, "step": r.step,
         "outcome": r.outcome, "reached_at": r.reached_at, "ready_at": r.ready_at, "detail": r.detail,
         "created_at": now} for r in plan.steps])
    for r in plan.steps:
        if r.step == EXIT:
            conn.execute(s.update().where(
                s.c.member_ref == r.member_ref, s.c.flow == r.flow, s.c.state.in_(("planned", "retry")),
                s.c.occurrence_key.startswith(f"{r.instance}/", autoescape=True))
                .values(state="skipped", reason=f"left the journey before it was sent: {r.detail}"[:300]))


def _row(occ: Occurrence, state: str, reason: str, scheduled: datetime, segment: str | None,
         now: datetime, variant: VariantSettings | None = None) -> dict[str, Any]:
    """A ledger row; with an A/B `variant`, its template, and its subject kept in the occurrence
    (`occurrence.variant`) for delivery to render."""
    data = occ.data
    if variant is not None:
        data = {**data, "variant": {"name": variant.name, "subject": variant.subject}}
    return {
        "send_id": uuid.uuid4().hex, "member_ref": occ.member_ref, "flow": occ.flow.name,
        "occurrence_key": occ.key, "template": (variant and variant.template) or occ.template or occ.flow.template,
        "segment": segment, "state": state, "reason": reason[:300], "occurrence": data,
        "occurred_at": occ.occurred_at, "scheduled_for": scheduled, "created_at": now, "attempts": 0,
        "variant": variant.name if variant is not None else None,
    }


def cancel_planned(engine: sa.Engine, flow: str, now: datetime) -> int:
    """Mark the sends of `flow` (a cancelled campaign) not handed to a dispatcher yet as
    `cancelled`; returns how many."""
    s = sends_table
    with engine.begin() as conn:
        return conn.execute(s.update().where(s.c.flow == flow, s.c.state.in_(("planned", "retry")))
                            .values(state="cancelled", last_error=f"campaign cancelled at {now:%Y-%m-%d %H:%M} UTC")
                            ).rowcount


def state_counts(conn: sa.Connection, flow: str) -> dict[str, int]:
    """How many sends of `flow` the ledger holds in each state."""
    s = sends_table
    rows = conn.execute(sa.select(s.c.state, sa.func.count()).where(s.c.flow == flow).group_by(s.c.state))
    return {state: int(n) for state, n in rows}


def requeue(conn: sa.Connection, now: datetime, state: str, flow: str | None = None) -> int:
    """Put failed (or unknown) sends back in the queue, due now (an operator's decision).
    Returns how many."""
    if state not in RETRYABLE:
        raise ValueError(state)
    s = sends_table
    query = s.update().where(s.c.state == state)
    if flow:
        query = query.where(s.c.flow == flow)
    return conn.execute(query.values(state="retry", scheduled_for=now, claimed_at=None, handed_over_at=None,
                                     attempts=0,
                                     last_error=f"re-sent by the operator (was {state})")).rowcount


@dataclass(frozen=True)
class Entry:
    """One ledger row of a member, as `explain` shows it."""

    flow: str
    occurrence_key: str
    state: str
    scheduled_for: datetime
    reason: str | None
    variant: str | None = None    # an A/B test's variant, with its template
    template: str | None = None


def history(conn: sa.Connection, member_ref: int, until: datetime) -> list[Entry]:
    """A member's ledger rows recorded by `until` (later ones had not happened then), oldest first."""
    s = sends_table
    rows = conn.execute(sa.select(s.c.flow, s.c.occurrence_key, s.c.state, s.c.scheduled_for, s.c.reason,
                                  s.c.variant, s.c.template)
                        .where(s.c.member_ref == member_ref, s.c.created_at <= until)
                        .order_by(s.c.scheduled_for, s.c.id))
    return [Entry(r.flow, r.occurrence_key, r.state, r.scheduled_for, r.reason, r.variant, r.template) for r in rows]


def expire_leases(engine: sa.Engine, now: datetime, lease: timedelta, max_attempts: int | None = None) -> int:
    """Settle sends claimed longer ago than the lease by a dispatcher that never reported back.

    A send it had handed to the transport becomes `unknown`: the message may or may not have
    reached the provider, so it is never re-sent automatically (`loyalty-mail outbox retry
    --state unknown` does it on purpose). A send it had not handed over yet never left this
    process: it is queued again (`retry`, due as before), or marked failed once it has been
    claimed `max_attempts` times (a send that keeps stopping its dispatcher). Returns how many
    became `unknown`."""
    s = sends_table
    expired = sa.and_(s.c.state == "sending", s.c.claimed_at < now - lease)
    with engine.begin() as conn:
        if max_attempts is not None:
            conn.execute(
                s.update().where(expired, s.c.handed_over_at.is_(None), s.c.attempts >= max_attempts)
                .values(state="failed", claimed_at=None,
                        last_error=f"gave up after {max_attempts} attempts: each time the dispatcher "
                                   "stopped before handing this send over"))
        conn.execute(
            s.update().where(expired, s.c.handed_over_at.is_(None))
            .values(state="retry", claimed_at=None,
                    last_error="the dispatcher stopped before handing this send over; queued again"))
        return conn.execute(
            s.update().where(expired)
            .values(state="unknown", last_error="the dispatcher stopped after handing this send over and "
                    "before recording the provider's answer; not re-sent automatically")).rowcount


def hand_over(engine: sa.Engine, claims: list[tuple[int, int]], now: datetime,
              settled: list[Outcome] | None = None, settled_at: datetime | None = None) -> set[int]:
    """Stamp claimed sends as handed to the transport at `now`, in one statement, just before it
    gets them; in the same transaction record `settled` outcomes (as `finish` does, at
    `settled_at`). `claims` are (id, attempts) as claimed: only sends this claim still holds are
    stamped (one whose lease expired and that was queued or claimed again is not), and their ids
    are returned, the only ones the caller may hand over."""
    s = sends_table
    with engine.begin() as conn:
        _record(conn, settled or [], settled_at or now)
        if not claims:
            return set()
        return {row.id for row in conn.execute(
            s.update().where(sa.tuple_(s.c.id, s.c.attempts).in_(claims), s.c.state == "sending")
            .values(handed_over_at=now).returning(s.c.id))}


def claim_due(engine: sa.Engine, now: datetime, limit: int,
              claimed_at: datetime | None = None) -> list[dict[str, Any]]:
    """Move up to `limit` planned (or retry) sends due by `now` to `sending`, with their lease
    starting at `claimed_at` (default `now`), and return them with their member. On PostgreSQL
    `FOR UPDATE SKIP LOCKED` lets several dispatchers claim side by side; on SQLite the write
    transaction serialises them."""
    s, m = sends_table, members_table
    with engine.begin() as conn:
        pick = (sa.select(s.c.id).where(s.c.state.in_(("planned", "retry")), s.c.scheduled_for <= now)
                .order_by(s.c.scheduled_for, s.c.id).limit(limit))
        if engine.dialect.name == "postgresql":
            # A CTE is evaluated once; `id IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)` may be
            # rescanned by the planner and claim more than n rows.
            picked = pick.with_for_update(skip_locked=True).cte("picked")
            target = s.c.id == picked.c.id
        else:
            # One statement: on SQLite it takes the write lock at once, so two dispatchers queue
            # (busy timeout) instead of both reading the same rows.
            target = s.c.id.in_(pick.scalar_subquery())
        ids = [row.id for row in conn.execute(
            s.update().where(target)
            .values(state="sending", attempts=s.c.attempts + 1, claimed_at=claimed_at or now,
                    handed_over_at=None)
            .returning(s.c.id))]
        if len(ids) > limit:  # never expected; would mean more claimed than one batch holds
            raise RuntimeError(f"claimed {len(ids)} sends for a batch of {limit}")
        if not ids:
            return []
        rows = conn.execute(
            sa.select(s, m.c.subscribed.label("m_subscribed"),
                      *[c.label(f"m_{c.name}") for c in m.c if c.name not in ("id", "subscribed")])
            .join(m, m.c.id == s.c.member_ref).where(s.c.id.in_(ids))
            .order_by(s.c.scheduled_for, s.c.id)
        ).mappings().all()
        emails = sorted({r["m_email"].lower() for r in rows})
        suppressed = {r.email.lower() for r in conn.execute(
            sa.select(suppressions_table.c.email).where(sa.func.lower(suppressions_table.c.email).in_(emails)))}
    result = []
    for row in rows:
        member = {k[2:]: v for k, v in row.items() if k.startswith("m_")}
        member["suppressed"] = member["email"].lower() in suppressed
        result.append({"send": {k: v for k, v in row.items() if not k.startswith("m_")}, "member": member})
    return result


def renew(engine: sa.Engine, refs: list[int], now: datetime) -> None:
    """Restart the lease of sends this dispatcher still holds (a batch taking long to hand over)."""
    s = sends_table
    with engine.begin() as conn:
        conn.execute(s.update().where(s.c.id.in_(refs), s.c.state == "sending").values(claimed_at=now))


@dataclass(frozen=True)
class Outcome:
    """What happened to one claimed send."""

    ref: int
    state: str                      # sent | failed | retry | suppressed
    note: str | None = None
    retry_at: datetime | None = None
    provider_id: str | None = None
    attempt_used: bool = True       # False: handed back unsent (its dispatcher stopped), not a try


def finish(engine: sa.Engine, outcomes: list[Outcome], now: datetime) -> None:
    """Record outcomes in one short transaction; only rows still `sending` are touched."""
    if not outcomes:
        return
    with engine.begin() as conn:
        _record(conn, outcomes, now)


def _record(conn: sa.Connection, outcomes: list[Outcome], now: datetime) -> None:
    s = sends_table
    if not outcomes:
        return
    conn.execute(
        s.update().where(s.c.id == sa.bindparam("b_id"), s.c.state == "sending")
        .values(state=sa.bindparam("b_state"), last_error=sa.bindparam("b_note"),
                attempts=s.c.attempts - sa.bindparam("b_refund", type_=sa.Integer()),
                sent_at=sa.bindparam("b_sent"), provider_id=sa.bindparam("b_provider"),
                scheduled_for=sa.func.coalesce(sa.bindparam("b_retry", type_=UTCDateTime()),
                                               s.c.scheduled_for)),
        [{"b_id": o.ref, "b_state": o.state, "b_note": (o.note or None) and o.note[:1000],
          "b_sent": now if o.state == "sent" else None, "b_provider": o.provider_id,
          "b_retry": o.retry_at, "b_refund": 0 if o.attempt_used else 1} for o in outcomes])


def retry_delay(attempts: int, base: timedelta, retry_after: float | None, rng: random.Random) -> timedelta:
    """Exponential backoff with full jitter, never sooner than the provider's Retry-After."""
    backoff = base.total_seconds() * (2 ** max(attempts - 1, 0))
    delay = rng.uniform(backoff / 2, backoff)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return timedelta(seconds=min(delay, 86400))

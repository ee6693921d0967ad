"""The send ledger: record the planner's decisions, hand due sends to delivery, mark results.

All state changes of `sends` live here. Inserts ignore rows whose (member, flow, occurrence)
already exists, so recording the same plan twice, from two processes or after a crash, records
each occurrence once.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from ..models import members_table, sends_table, suppressions_table
from .planner import Plan

BATCH = 1000


def _insert(dialect: str) -> Any:
    if dialect == "postgresql":
        return postgresql.insert(sends_table).on_conflict_do_nothing()
    return sqlite.insert(sends_table).on_conflict_do_nothing()


def record(engine: sa.Engine, plan: Plan, now: datetime) -> dict[str, int]:
    """Store planned sends and recorded skips, 1,000 rows a transaction; counts by state."""
    rows: list[dict[str, Any]] = []
    for send in plan.sends:
        occ = send.occurrence
        rows.append(_row(occ, "planned", send.reason + (f"; {send.deferred}" if send.deferred else ""),
                         send.scheduled_for, send.segment, now))
    for skip in plan.skips:
        if skip.record_as:
            occ = skip.occurrence
            rows.append(_row(occ, skip.record_as, skip.reason, occ.due_at, occ.flow.segment, now))
    counts: dict[str, int] = {}
    statement = _insert(engine.dialect.name)
    for start in range(0, len(rows), BATCH):
        batch = rows[start:start + BATCH]
        with engine.begin() as conn:
            inserted = conn.execute(statement, batch).rowcount
        for row in batch:
            counts[row["state"]] = counts.get(row["state"], 0) + 1
        counts["inserted"] = counts.get("inserted", 0) + max(inserted, 0)
    return counts


def _row(occ: Any, state: str, reason: str, scheduled: datetime, segment: str | None,
         now: datetime) -> dict[str, Any]:
    return {
        "send_id": uuid.uuid4().hex, "member_ref": occ.member_ref, "flow": occ.flow.name,
        "occurrence_key": occ.key, "template": occ.flow.template, "segment": segment,
        "state": state, "reason": reason[:300], "occurrence": occ.data, "occurred_at": occ.occurred_at,
        "scheduled_for": scheduled, "created_at": now, "attempts": 0,
    }


def claim_due(engine: sa.Engine, now: datetime, limit: int) -> list[dict[str, Any]]:
    """Move up to `limit` planned sends due by `now` to `sending` and return them with their
    member. On PostgreSQL `FOR UPDATE SKIP LOCKED` lets several dispatchers claim side by side."""
    s, m = sends_table, members_table
    with engine.begin() as conn:
        pick = (sa.select(s.c.id).where(s.c.state == "planned", s.c.scheduled_for <= now)
                .order_by(s.c.scheduled_for, s.c.id).limit(limit))
        if engine.dialect.name == "postgresql":
            pick = pick.with_for_update(skip_locked=True)
        ids = [row.id for row in conn.execute(pick)]
        if not ids:
            return []
        conn.execute(s.update().where(s.c.id.in_(ids), s.c.state == "planned")
                     .values(state="sending", attempts=s.c.attempts + 1))
        rows = conn.execute(
            sa.select(s, m.c.subscribed.label("m_subscribed"),
                      *[c.label(f"m_{c.name}") for c in m.c if c.name not in ("id", "subscribed")])
            .join(m, m.c.id == s.c.member_ref).where(s.c.id.in_(ids)).order_by(s.c.scheduled_for, s.c.id)
        ).mappings().all()
        suppressed = {r.email.lower() for r in conn.execute(
            sa.select(suppressions_table.c.email).where(
                sa.func.lower(suppressions_table.c.email).in_(sorted({r["m_email"].lower() for r in rows}))))}
    result = []
    for row in rows:
        member = {k[2:]: v for k, v in row.items() if k.startswith("m_")}
        member["suppressed"] = member["email"].lower() in suppressed
        result.append({"send": {k: v for k, v in row.items() if not k.startswith("m_")}, "member": member})
    return result


def finish(engine: sa.Engine, results: list[tuple[int, str, str | None]], now: datetime) -> None:
    """Record outcomes: (ledger id, new state, error or reason)."""
    s = sends_table
    with engine.begin() as conn:
        for state in {state for _, state, _ in results}:
            chosen = [(ref, note) for ref, st, note in results if st == state]
            values: dict[str, Any] = {"state": state}
            if state == "sent":
                values["sent_at"] = now
            if any(note for _, note in chosen):
                conn.execute(s.update().where(s.c.id == sa.bindparam("b_id"))
                             .values(**values, last_error=sa.bindparam("b_note")),
                             [{"b_id": ref, "b_note": (note or "")[:1000]} for ref, note in chosen])
            else:
                conn.execute(s.update().where(s.c.id.in_([ref for ref, _ in chosen])).values(**values))

"""The outbox seen by an operator: counts per state and flow, what is waiting, what failed;
and explicit re-sends. Every change to `sends` is made by flows/ledger.py."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from .flows import ledger
from .models import members_table, sends_table

RETRYABLE = ledger.RETRYABLE


def status(conn: sa.Connection, now: datetime, recent: int = 10) -> dict[str, Any]:
    s, m = sends_table, members_table
    counts = conn.execute(sa.select(s.c.flow, s.c.state, sa.func.count()).group_by(s.c.flow, s.c.state)
                          .order_by(s.c.flow, s.c.state)).all()
    oldest = conn.execute(sa.select(sa.func.min(s.c.scheduled_for))
                          .where(s.c.state.in_(("planned", "retry")), s.c.scheduled_for <= now)).scalar()
    waiting = conn.execute(sa.select(sa.func.count()).where(s.c.state.in_(("planned", "retry")),
                                                             s.c.scheduled_for <= now)).scalar_one()
    failures = conn.execute(
        sa.select(s.c.send_id, s.c.flow, m.c.member_id, s.c.state, s.c.attempts, s.c.last_error,
                  s.c.scheduled_for)
        .join(m, m.c.id == s.c.member_ref).where(s.c.state.in_(("failed", "unknown", "retry")))
        .order_by(s.c.scheduled_for.desc()).limit(recent)).mappings().all()
    return {
        "counts": [{"flow": f, "state": st, "count": n} for f, st, n in counts],
        "due_now": waiting,
        "oldest_due": oldest,
        "recent_failures": [dict(r) for r in failures],
    }


def retry(conn: sa.Connection, now: datetime, state: str, flow: str | None = None) -> int:
    """Put failed (or unknown) sends back in the queue, due now. Returns how many."""
    return ledger.requeue(conn, now, state, flow)

"""The suppression list: addresses that never get marketing email, with reason and time.

Reasons: `unsubscribe`, `hard_bounce`, `spam_complaint` (from the tracking service and SendGrid's
Event Webhook) and `manual`. The planner skips suppressed members and the dispatcher checks again
right before sending, so a suppression that lands between the two still wins.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from . import db
from .errors import InputFileError, NotFound
from .models import suppressions_table

REASONS = ("unsubscribe", "hard_bounce", "spam_complaint", "manual")


def add(conn: sa.Connection, email: str, reason: str, now: datetime, detail: str | None = None) -> bool:
    """Suppress an address (case-insensitive); False when it already was."""
    if reason not in REASONS:
        raise InputFileError(f"unknown suppression reason '{reason}' (reasons: {', '.join(REASONS)})")
    address = email.strip().lower()
    if "@" not in address:
        raise InputFileError(f"'{email}' is not an email address")
    insert = db.insert_ignoring_duplicates(suppressions_table, conn.dialect.name)
    result = conn.execute(insert.values(email=address, reason=reason, detail=detail, created_at=now)
                          .returning(suppressions_table.c.id))
    return result.first() is not None


def remove(conn: sa.Connection, email: str) -> None:
    s = suppressions_table
    if not conn.execute(s.delete().where(s.c.email == email.strip().lower())).rowcount:
        raise NotFound(f"{email} is not on the suppression list")


def listing(conn: sa.Connection, reason: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
    s = suppressions_table
    query = sa.select(s.c.email, s.c.reason, s.c.detail, s.c.created_at).order_by(s.c.created_at.desc(), s.c.email)
    if reason:
        query = query.where(s.c.reason == reason)
    return [dict(r) for r in conn.execute(query.limit(limit)).mappings()]

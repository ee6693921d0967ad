"""The suppression list: addresses that never get email (marketing or service), with reason and time.

Reasons: `unsubscribe`, `hard_bounce`, `spam_complaint` (from the tracking service, SendGrid's
Event Webhook and the bounce mailbox), `soft_bounce` (the bounce mailbox, after
`sending.bounces.soft_bounce_limit` soft bounces) and `manual`. The planner skips suppressed members and the dispatcher checks again
right before sending, so a suppression that lands between the two still wins. `unsubscribe` is the
one place an unsubscribe is written, whoever asks (the link in an email, a webhook, the CLI, an
import).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from . import consent, db
from .errors import InputFileError, NotFound, shown
from .models import members_table, suppressions_table

REASONS = ("unsubscribe", "hard_bounce", "spam_complaint", "soft_bounce", "manual")


CHUNK = 500


def add(conn: sa.Connection, email: str, reason: str, now: datetime, detail: str | None = None,
        source: str = "manual") -> bool:
    """Suppress an address (case-insensitive); False when it already was. Suppressing with reason
    `unsubscribe` unsubscribes the member too. A new suppression is in the members' consent log,
    from `source` (consent.SOURCES)."""
    if reason not in REASONS:
        raise InputFileError(f"unknown suppression reason '{reason}' (reasons: {', '.join(REASONS)})")
    if reason == "unsubscribe":
        return unsubscribe(conn, [email], now, detail, source=source) > 0
    address = _address(email)
    added = _listed(conn, address, reason, now, detail)
    if added:
        consent.record(conn, consent.members_with(conn, [address]), "suppress", source, now,
                       detail=reason if not detail else f"{reason}: {detail}")
    return added


def unsubscribe(conn: sa.Connection, emails: Iterable[str], now: datetime, detail: str | None = None,
                source: str = "manual") -> int:
    """Unsubscribe addresses from all email: the members with them stop getting email (subscribed
    false, unsubscribed since `now`; members already unsubscribed keep their date), each address
    joins the suppression list as `unsubscribe`, and each member who was subscribed has the change
    in the consent log, from `source` (consent.SOURCES). Returns how many addresses were newly
    suppressed. Member emails are stored lowercase (the importer normalises them), so the index
    serves this."""
    addresses = sorted({_address(email) for email in emails})
    m = members_table
    for start in range(0, len(addresses), CHUNK):
        leaving = [r for (r,) in conn.execute(
            m.update().where(m.c.email.in_(addresses[start:start + CHUNK]), m.c.subscribed.is_(True))
            .values(subscribed=False, unsubscribed_at=now, updated_at=now).returning(m.c.id))]
        consent.record(conn, leaving, "unsubscribe", source, now, detail=detail)
    return sum(_listed(conn, address, "unsubscribe", now, detail) for address in addresses)


def _address(email: str) -> str:
    address = email.strip().lower()
    if "@" not in address:
        raise InputFileError(f"'{email}' is not an email address")
    return address


def _listed(conn: sa.Connection, address: str, reason: str, now: datetime, detail: str | None) -> bool:
    insert = db.insert_ignoring_duplicates(suppressions_table, conn.dialect.name)
    result = conn.execute(insert.values(email=address, reason=reason, detail=detail, created_at=now)
                          .returning(suppressions_table.c.id))
    return result.first() is not None


def remove(conn: sa.Connection, email: str) -> None:
    s = suppressions_table
    if not conn.execute(s.delete().where(s.c.email == email.strip().lower())).rowcount:
        raise NotFound(f"{shown(email)} is not on the suppression list")


def reason_for(conn: sa.Connection, email: str) -> str | None:
    """Why an address is on the suppression list, or None when it is not."""
    s = suppressions_table
    return conn.execute(sa.select(s.c.reason).where(s.c.email == email.strip().lower())).scalar()


def listing(conn: sa.Connection, reason: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
    s = suppressions_table
    query = sa.select(s.c.email, s.c.reason, s.c.detail, s.c.created_at).order_by(s.c.created_at.desc(), s.c.email)
    if reason:
        query = query.where(s.c.reason == reason)
    return [dict(r) for r in conn.execute(query.limit(limit)).mappings()]

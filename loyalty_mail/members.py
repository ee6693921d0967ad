"""Reading members: one member's profile with their recent events and tier history; finding members."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from .errors import NotFound, shown
from .models import events_table, members_table, tier_changes_table


@dataclass(frozen=True)
class MemberProfile:
    """A member as stored, plus what happened to them most recently."""

    member: dict[str, Any]
    recent_events: list[dict[str, Any]]
    tier_history: list[dict[str, Any]]
    event_count: int


def member_row(connection: sa.Connection, member_id: str) -> dict[str, Any]:
    """A member's stored row (with its internal `id`) by loyalty id; NotFound names the id."""
    m = members_table
    # no stored id holds a NUL (the importers refuse one), and PostgreSQL cannot even compare one
    row = None if "\x00" in member_id else connection.execute(
        sa.select(m).where(m.c.member_id == member_id)).mappings().first()
    if row is None:
        raise NotFound(f"no member with id {shown(member_id)}. `loyalty-mail members import FILE` or the API's PUT /v1/members/ID adds members.")
    return dict(row)


def member_profile(connection: sa.Connection, member_id: str, *, recent: int = 10) -> MemberProfile:
    """Look a member up by their loyalty id; NotFound names the id when there is none."""
    e, t = events_table, tier_changes_table
    row = member_row(connection, member_id)
    ref = row["id"]
    events = connection.execute(
        sa.select(e.c.type, e.c.occurred_at, e.c.amount, e.c.currency, e.c.points, e.c.properties,
                  e.c.event_id)
        .where(e.c.member_ref == ref).order_by(e.c.occurred_at.desc(), e.c.id.desc()).limit(recent)
    ).mappings().all()
    count = connection.execute(sa.select(sa.func.count()).where(e.c.member_ref == ref)).scalar_one()
    history = connection.execute(
        sa.select(t.c.from_tier, t.c.to_tier, t.c.changed_at, t.c.reason)
        .where(t.c.member_ref == ref).order_by(t.c.changed_at, t.c.id)
    ).mappings().all()
    member = {k: v for k, v in row.items() if k != "id"}
    return MemberProfile(member, [dict(x) for x in events], [dict(x) for x in history], count)


def any_members(connection: sa.Connection) -> bool:
    """Whether the database holds at least one member."""
    return connection.execute(sa.select(members_table.c.id).limit(1)).first() is not None


def find_members(connection: sa.Connection, text: str, *, limit: int = 10) -> list[dict[str, Any]]:
    """Members whose loyalty id is `text`, or whose id or email begins with it (case-insensitive
    for the email), by member_id; at most `limit`."""
    m = members_table
    text = text.strip()
    if not text:
        return []
    prefix = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    query = (sa.select(m.c.member_id, m.c.email, m.c.first_name, m.c.last_name, m.c.locale, m.c.tier)
             .where(sa.or_(m.c.member_id == text, m.c.member_id.like(prefix, escape="\\"),
                           sa.func.lower(m.c.email).like(prefix.lower(), escape="\\")))
             .order_by(m.c.member_id).limit(limit))
    return [dict(row) for row in connection.execute(query).mappings()]

"""Consent: the topics each member receives, pauses, and the append-only consent log.

The one writer of `member_topics`, `consent_log` and `members.paused_until`. A member's choice for
a topic is a row of `member_topics`; without one the topic's `default` (config.yaml) holds.
Leaving all email stays `suppression.unsubscribe` (the one unsubscribe), which logs here too.

Every change is appended to the consent log with its time, its source and its topic (None: all
email); nothing ever updates or deletes a log entry.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from .db import upsert
from .errors import InputFileError, NotFound
from .models import consent_log_table, member_topics_table, members_table

SOURCES = ("import", "api", "link", "one-click", "webhook", "bounce", "manual")
ACTIONS = ("subscribe", "unsubscribe", "pause", "resume", "suppress", "await_confirm", "confirm")
PAUSE_DAYS = (30, 90)
CHUNK = 500


@dataclass(frozen=True)
class Preferences:
    """What one member receives: all email or none, each topic, and a pause; and whether their
    address still awaits its confirmation (double opt-in)."""

    member_ref: int
    email: str
    locale: str | None
    subscribed: bool
    topics: dict[str, bool]
    paused_until: datetime | None
    unconfirmed_since: datetime | None = None

    def paused(self, now: datetime) -> bool:
        return self.paused_until is not None and self.paused_until > now

    def all_email(self, now: datetime, suppressed: str | None) -> str:
        """What the member gets at `now`, in words; `suppressed`: the address's suppression
        reason, if it is on the list (suppression.reason_for)."""
        if not self.subscribed:
            return "unsubscribed"
        if suppressed:
            return f"nothing: the address is suppressed ({suppressed})"
        if self.paused(now):
            assert self.paused_until is not None
            return f"nothing: paused until {self.paused_until:%Y-%m-%d %H:%M} UTC"
        if self.unconfirmed_since is not None:
            return (f"service email only: marketing waits for the address's confirmation "
                    f"(asked {self.unconfirmed_since:%Y-%m-%d %H:%M} UTC)")
        return "subscribed"


def record(conn: sa.Connection, member_refs: Iterable[int], action: str, source: str, now: datetime,
           topic: str | None = None, detail: str | None = None) -> int:
    """Append one entry per member to the consent log; returns how many."""
    if action not in ACTIONS:
        raise ValueError(f"unknown consent action '{action}' (actions: {', '.join(ACTIONS)})")
    if source not in SOURCES:
        raise ValueError(f"unknown consent source '{source}' (sources: {', '.join(SOURCES)})")
    rows = [{"member_ref": ref, "topic": topic, "action": action, "source": source,
             "detail": detail and detail[:300], "occurred_at": now} for ref in sorted(set(member_refs))]
    if rows:
        conn.execute(consent_log_table.insert(), rows)
    return len(rows)


def members_with(conn: sa.Connection, addresses: list[str]) -> list[int]:
    """The ids of the members with these (lowercase) addresses."""
    m = members_table
    refs: list[int] = []
    for start in range(0, len(addresses), CHUNK):
        refs += [r for (r,) in conn.execute(sa.select(m.c.id).where(m.c.email.in_(addresses[start:start + CHUNK])))]
    return refs


def set_topics(conn: sa.Connection, choices: Mapping[int, Mapping[str, bool]], defaults: Mapping[str, bool],
               source: str, now: datetime, detail: str | None = None, *, keep_left: bool = False) -> int:
    """Record members' choices ({member_ref: {topic: subscribed}}) for known topics; a choice that
    changes nothing (the stored one, or the default when none is stored) is not written. With
    `keep_left` (imports), a member who left a topic is not put back. Each change is logged.
    Returns how many changed."""
    unknown = sorted({t for wanted in choices.values() for t in wanted if t not in defaults})
    if unknown:
        raise InputFileError(f"unknown topic '{unknown[0]}' (topics: {', '.join(defaults) or 'none'})")
    refs = sorted(choices)
    stored = _stored(conn, refs)
    changed: list[tuple[int, str, bool]] = []
    for ref in refs:
        for topic, subscribed in choices[ref].items():
            current = stored.get((ref, topic), defaults[topic])
            if keep_left and subscribed and stored.get((ref, topic)) is False:
                continue
            if current != subscribed:
                changed.append((ref, topic, bool(subscribed)))
    if not changed:
        return 0
    # An upsert: another transaction may have stored the same member's choice meanwhile.
    conn.execute(upsert(member_topics_table, conn.dialect.name, ("member_ref", "topic"), ("subscribed", "changed_at")),
                 [{"member_ref": ref, "topic": topic, "subscribed": subscribed, "changed_at": now}
                  for ref, topic, subscribed in changed])
    conn.execute(consent_log_table.insert(), [
        {"member_ref": ref, "topic": topic, "action": "subscribe" if subscribed else "unsubscribe",
         "source": _source(source), "detail": detail and detail[:300], "occurred_at": now}
        for ref, topic, subscribed in changed])
    return len(changed)


def pause(conn: sa.Connection, member_ref: int, days: int | None, source: str, now: datetime) -> datetime | None:
    """Pause all email to a member for `days` (30 or 90) from `now`, or end a pause (None).
    Returns the end of the pause."""
    if days is not None and days not in PAUSE_DAYS:
        raise InputFileError(f"a pause is {' or '.join(map(str, PAUSE_DAYS))} days, not {days}")
    until = now + timedelta(days=days) if days else None
    m = members_table
    conn.execute(m.update().where(m.c.id == member_ref).values(paused_until=until, updated_at=now))
    record(conn, [member_ref], "pause" if until else "resume", source, now,
           detail=f"until {until:%Y-%m-%d %H:%M} UTC" if until else None)
    return until


def confirm(conn: sa.Connection, member_ref: int, source: str, now: datetime) -> bool:
    """Double opt-in: the member confirmed their address; False when nothing was pending."""
    m = members_table
    done = conn.execute(m.update().where(m.c.id == member_ref, m.c.unconfirmed_since.is_not(None))
                        .values(unconfirmed_since=None, updated_at=now)).rowcount
    if done:
        record(conn, [member_ref], "confirm", source, now)
    return bool(done)


def unconfirmed(conn: sa.Connection, refs: list[int]) -> set[int]:
    """The members of `refs` who have not confirmed their address yet (double opt-in)."""
    m = members_table
    found: set[int] = set()
    for start in range(0, len(refs), CHUNK):
        found |= {r for (r,) in conn.execute(sa.select(m.c.id).where(
            m.c.id.in_(refs[start:start + CHUNK]), m.c.unconfirmed_since.is_not(None)))}
    return found


def opted_out(conn: sa.Connection, refs: list[int], defaults: Mapping[str, bool]) -> set[tuple[int, str]]:
    """(member_ref, topic) for every topic these members do not receive: their own choice, else
    the topic's default."""
    if not defaults or not refs:
        return set()
    stored = _stored(conn, refs)
    return {(ref, topic) for ref in refs for topic, default in defaults.items()
            if not stored.get((ref, topic), default)}


def paused(conn: sa.Connection, refs: list[int], now: datetime) -> dict[int, datetime]:
    """The members of `refs` whose email is paused at `now`, with the end of the pause."""
    m = members_table
    found: dict[int, datetime] = {}
    for start in range(0, len(refs), CHUNK):
        found.update({r.id: r.paused_until for r in conn.execute(
            sa.select(m.c.id, m.c.paused_until).where(m.c.id.in_(refs[start:start + CHUNK]),
                                                      m.c.paused_until > now))})
    return found


def preferences(conn: sa.Connection, member_ref: int, defaults: Mapping[str, bool]) -> Preferences | None:
    """One member's preferences, or None for an unknown member."""
    m = members_table
    row = conn.execute(sa.select(m.c.email, m.c.locale, m.c.subscribed, m.c.paused_until, m.c.unconfirmed_since)
                       .where(m.c.id == member_ref)).first()
    if row is None:
        return None
    stored = _stored(conn, [member_ref])
    topics = {topic: stored.get((member_ref, topic), default) for topic, default in defaults.items()}
    return Preferences(member_ref, row.email, row.locale, bool(row.subscribed), topics, row.paused_until,
                       row.unconfirmed_since)


def member_ref(conn: sa.Connection, member_id: str) -> int:
    """The internal id of the member with this loyalty id; NotFound names the id."""
    m = members_table
    ref = conn.execute(sa.select(m.c.id).where(m.c.member_id == member_id)).scalar()
    if ref is None:
        raise NotFound(f"no member with id '{member_id}'. `loyalty-mail members import FILE` or the API's PUT /v1/members/ID adds members.")
    return int(ref)


def history(conn: sa.Connection, member_ref: int) -> list[dict[str, Any]]:
    """A member's consent log, oldest first."""
    c = consent_log_table
    return [dict(r) for r in conn.execute(
        sa.select(c.c.occurred_at, c.c.action, c.c.topic, c.c.source, c.c.detail)
        .where(c.c.member_ref == member_ref).order_by(c.c.occurred_at, c.c.id)).mappings()]


def _stored(conn: sa.Connection, refs: list[int]) -> dict[tuple[int, str], bool]:
    t = member_topics_table
    found: dict[tuple[int, str], bool] = {}
    for start in range(0, len(refs), CHUNK):
        found.update({(r.member_ref, r.topic): bool(r.subscribed) for r in conn.execute(
            sa.select(t.c.member_ref, t.c.topic, t.c.subscribed).where(t.c.member_ref.in_(refs[start:start + CHUNK])))})
    return found


def _source(source: str) -> str:
    if source not in SOURCES:
        raise ValueError(f"unknown consent source '{source}' (sources: {', '.join(SOURCES)})")
    return source

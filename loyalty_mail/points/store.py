"""`point_lots`, the one module that writes it: each member's open lots, rebuilt from their events.

Every import that touches a member (a file, the API, the demo's seed, the expiry job) rebuilds
that member's lots from all of their point events, so a history imported out of order gives the
same lots as one imported as it happened. Without program.points.expiry no lots are kept.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import lru_cache
from itertools import groupby
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from .. import bulk, db
from ..config import Settings
from ..models import events_table, members_table, point_lots_table
from .lots import replay

PAGE = 2000
INSERT_ROWS = 5000
LOT_COLUMNS = ("member_ref", "earned_at", "expires_at", "points", "remaining")
SAMPLE = 200  # members whose lots out_of_date derives again from their events


@lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def rebuild_lots(connection: sa.Connection, settings: Settings, refs: Sequence[int]) -> int:
    """Replace the lots of these members (ids, ascending) by those their events give; the number
    of open lots written. Nothing when the program's points do not expire."""
    expiry = settings.program.points.expiry
    if expiry is None or not refs:
        return 0
    e, m, lots = events_table, members_table, point_lots_table
    written = 0
    for start in range(0, len(refs), PAGE):
        page = refs[start:start + PAGE]
        first, last = page[0], page[-1]
        # A dense page rebuilds every member in its range (the others' lots come out the same),
        # so that whole ranges are read and deleted; a sparse one (a day's events) only its own.
        dense = last - first < 2 * len(page)
        default = settings.program.default_timezone
        zones = {row.id: row.timezone or default for row in connection.execute(
            sa.select(m.c.id, m.c.timezone).where(m.c.id.between(first, last) if dense else m.c.id.in_(page)))}
        wanted = set(zones)
        connection.execute(lots.delete().where(
            lots.c.member_ref.between(first, last) if dense else lots.c.member_ref.in_(page)))
        rows = connection.execute(
            sa.select(e.c.member_ref, e.c.occurred_at, e.c.type, e.c.points)
            .where(e.c.member_ref.between(first, last) if dense else e.c.member_ref.in_(page),
                   e.c.points.is_not(None), e.c.points != 0)
            .order_by(e.c.member_ref, e.c.occurred_at, e.c.id))
        batch: list[tuple[Any, ...]] = []
        for ref, events in groupby(rows, key=lambda row: row.member_ref):
            if ref not in wanted:
                continue
            for lot in replay(((r.occurred_at, r.type, r.points) for r in events), expiry, _zone(zones[ref])):
                batch.append((ref, lot.earned_at, lot.expires_at, lot.points, lot.remaining))
            if len(batch) >= INSERT_ROWS:
                bulk.insert(connection, lots, LOT_COLUMNS, batch)
                written += len(batch)
                batch = []
        bulk.insert(connection, lots, LOT_COLUMNS, batch)
        written += len(batch)
    return written


def remove_expired(connection: sa.Connection, settings: Settings, now: datetime, partial: Iterable[int],
                   members: Iterable[int] | None = None) -> None:
    """After the expiry job recorded every lot due at `now` (of these members, by id, when given):
    those lots are used up, so they go (one range of the expiry index), and the members whose
    expiry was cut to their balance (`partial`: points set by a members import are in no lot) get
    their lots derived again."""
    lots = point_lots_table
    used = lots.delete().where(lots.c.expires_at <= now)
    if members is not None:
        used = used.where(lots.c.member_ref.in_(sorted(members)))
    connection.execute(used)
    rebuild_lots(connection, settings, sorted(partial))


def rebuild_everyone(engine: sa.Engine, settings: Settings) -> int:
    """`rebuild_all_lots` in a transaction of its own."""
    with db.writer(engine).begin() as connection:
        return rebuild_all_lots(connection, settings)


def rebuild_all_lots(connection: sa.Connection, settings: Settings) -> int:
    """Every member's lots from their events (after program.points.expiry changes); lots written."""
    m = members_table
    if settings.program.points.expiry is None:
        connection.execute(point_lots_table.delete())
        return 0
    written, last = 0, 0
    while True:
        refs = connection.execute(sa.select(m.c.id).where(m.c.id > last).order_by(m.c.id).limit(PAGE * 10)
                                  ).scalars().all()
        if not refs:
            return written
        written += rebuild_lots(connection, settings, refs)
        last = refs[-1]


def out_of_date(connection: sa.Connection, settings: Settings, sample: int = SAMPLE) -> str | None:
    """Whether the lots kept follow program.points.expiry: the lots of the first `sample` members
    with point events are derived again and compared. A warning saying what to do when they do
    not (the rule changed and `points rebuild` was not run: the expiry job would take points by
    the old rule), else None."""
    e, m, lots = events_table, members_table, point_lots_table
    expiry = settings.program.points.expiry
    if expiry is None:
        if connection.execute(sa.select(lots.c.member_ref).limit(1)).first() is None:
            return None
        return ("point lots are kept though program.points.expiry is not set (they were derived under an "
                "earlier rule, and the points_expiring segment field still reads them): run "
                "`loyalty-mail points rebuild` to remove them")
    refs = list(connection.execute(
        sa.select(e.c.member_ref).where(e.c.points.is_not(None), e.c.points != 0).distinct()
        .order_by(e.c.member_ref).limit(sample)).scalars())
    if not refs:
        return None
    default = settings.program.default_timezone
    members = {row.id: (row.member_id, row.timezone or default) for row in connection.execute(
        sa.select(m.c.id, m.c.member_id, m.c.timezone).where(m.c.id.in_(refs)))}
    stored: dict[int, list[tuple[Any, ...]]] = {ref: [] for ref in refs}
    for row in connection.execute(
            sa.select(lots.c.member_ref, lots.c.earned_at, lots.c.expires_at, lots.c.points, lots.c.remaining)
            .where(lots.c.member_ref.in_(refs)).order_by(lots.c.member_ref, lots.c.earned_at, lots.c.id)):
        stored[row.member_ref].append((row.earned_at, row.expires_at, row.points, row.remaining))
    rows = connection.execute(
        sa.select(e.c.member_ref, e.c.occurred_at, e.c.type, e.c.points)
        .where(e.c.member_ref.in_(refs), e.c.points.is_not(None), e.c.points != 0)
        .order_by(e.c.member_ref, e.c.occurred_at, e.c.id))
    differ = [members[ref][0] for ref, events in groupby(rows, key=lambda row: row.member_ref)
              if stored[ref] != [(lot.earned_at, lot.expires_at, lot.points, lot.remaining) for lot in replay(
                  ((r.occurred_at, r.type, r.points) for r in events), expiry, _zone(members[ref][1]))]]
    if not differ:
        return None
    return (f"the point lots of {len(differ)} of the {len(refs)} members checked ({', '.join(differ[:3])}"
            f"{', ...' if len(differ) > 3 else ''}) do not follow program.points.expiry ({expiry}): they were "
            "derived under another rule; run `loyalty-mail points rebuild` before points expire again")


def lots_warning(engine: sa.Engine, settings: Settings) -> str | None:
    """out_of_date for `check`, on a database that may not exist yet or predate the lots (None)."""
    url = engine.url
    if url.get_backend_name() == "sqlite" and url.database and not os.path.exists(url.database):
        return None
    try:
        with engine.connect() as connection:
            if not sa.inspect(connection).has_table(point_lots_table.name):
                return None
            return out_of_date(connection, settings)
    except sa.exc.OperationalError:
        return None

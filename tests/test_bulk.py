"""bulk.py writes rows as SQLAlchemy's own statements store them, to the byte (SQLite: the values
and their storage classes; PostgreSQL: their text), on both databases and for one row and many;
and the event applier sets each member's columns as its events left them."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from loyalty_mail import bulk, db
from loyalty_mail.importing.events import import_events
from loyalty_mail.importing.members import import_members
from loyalty_mail.importing.request_events import RequestEvents
from loyalty_mail.models import events_table, members_table

from .conftest import FIXED_NOW

EVENT_COLUMNS = ("event_id", "member_ref", "type", "occurred_at", "amount", "currency", "points", "properties",
                 "created_at")
MEMBER_COLUMNS = ("id", "points", "tier", "total_spend", "purchase_count", "last_purchase_at", "joined_at",
                  "joined_on", "updated_at")
HANOI = ZoneInfo("Asia/Ho_Chi_Minh")


def stored(conn: sa.Connection, table: str, columns: tuple[str, ...], where: str) -> list[tuple[Any, ...]]:
    """The rows as the database holds them: on SQLite each value with its storage class, on
    PostgreSQL each value's text."""
    if conn.dialect.name == "sqlite":
        select = ", ".join(f"{c}, typeof({c})" for c in columns)
    else:
        select = ", ".join(f"{c}::text" for c in columns)
    return [tuple(row) for row in conn.exec_driver_sql(f"SELECT {select} FROM {table} WHERE {where} ORDER BY id")]


def event_rows(prefix: str, ref: int, now: datetime) -> list[tuple[Any, ...]]:
    later = datetime(2026, 11, 23, 3, 0, tzinfo=timezone.utc)  # another object for the same instant as `now`
    return [
        (f"{prefix}1", ref, "purchase", datetime(2026, 3, 29, 1, 30, 0, 5, tzinfo=HANOI), Decimal("12.34"), "VND",
         12, {"store": "Hà Nội", "items": ["trà", 2, None], "nested": {"a": [1.5, True]}}, now),
        (f"{prefix}2", ref, "signup", datetime(2026, 3, 29, 0, 0, tzinfo=timezone(timedelta(hours=-5))), None, None,
         None, {}, now),
        (f"{prefix}3", ref, "purchase", datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc),
         Decimal("9999999999999999.99"), "VND", 2**31 - 1, {}, later),
        (None, ref, "points_earned", datetime(2026, 11, 1, tzinfo=timezone.utc), None, None, 5, {"x": "\u2028"},
         later),
    ]


@pytest.fixture
def engine(database_url: str):  # noqa: ANN201 - a fixture
    engine = db.writer(db.create_db_engine(database_url))
    with engine.begin() as conn:
        for member_id in ("core", "bulk"):
            conn.execute(members_table.insert().values(member_id=member_id, email=f"{member_id}@example.com",
                                                       tier="member", created_at=FIXED_NOW, updated_at=FIXED_NOW))
    yield engine
    engine.dispose()


def refs(conn: sa.Connection) -> dict[str, int]:
    return {member_id: ref for member_id, ref in conn.execute(sa.select(members_table.c.member_id, members_table.c.id))}


@pytest.mark.parametrize("count", [1, 4])
def test_inserted_rows_are_stored_as_sqlalchemy_stores_them(engine, count):
    with engine.begin() as conn:
        ref = refs(conn)
        core = event_rows("core-", ref["core"], FIXED_NOW)[:count]
        conn.execute(events_table.insert(), [dict(zip(EVENT_COLUMNS, row)) for row in core])
        ids = bulk.insert_returning_ids(conn, events_table, EVENT_COLUMNS,
                                        event_rows("bulk-", ref["bulk"], FIXED_NOW)[:count])
        bulk.insert(conn, events_table, EVENT_COLUMNS, event_rows("more-", ref["bulk"], FIXED_NOW)[:count])
    with engine.connect() as conn:
        columns = EVENT_COLUMNS[2:]
        ours = stored(conn, "events", columns, f"member_ref = {ref['bulk']}")
        assert ours[:count] == ours[count:] == stored(conn, "events", columns, f"member_ref = {ref['core']}")
        assert len(ours) == 2 * count
        e = events_table
        assert ids == list(conn.execute(sa.select(e.c.id).where(e.c.member_ref == ref["bulk"]).order_by(e.c.id)
                                        .limit(count)).scalars())
        assert conn.execute(sa.select(e.c.event_id).where(e.c.id.in_(ids)).order_by(e.c.id)).scalars().all() == [
            row[0] for row in event_rows("bulk-", 0, FIXED_NOW)[:count]]


def test_updated_rows_are_stored_as_sqlalchemy_stores_them(engine):
    values = (7, "gold", Decimal("1234567.89"), 3, datetime(2026, 3, 29, 1, 30, 0, 5, tzinfo=HANOI),
              datetime(2020, 1, 1, tzinfo=timezone(timedelta(hours=-5))), date(2019, 12, 31), FIXED_NOW)
    m = members_table
    with engine.begin() as conn:
        ref = refs(conn)
        conn.execute(m.update().where(m.c.id == ref["core"]).values(dict(zip(MEMBER_COLUMNS[1:], values))))
        bulk.update_by_id(conn, m, MEMBER_COLUMNS, [(ref["bulk"], *values)])
    with engine.connect() as conn:
        assert stored(conn, "members", MEMBER_COLUMNS[1:], f"id = {ref['bulk']}") == \
            stored(conn, "members", MEMBER_COLUMNS[1:], f"id = {ref['core']}")
    with engine.begin() as conn:  # several rows, and only some of the columns
        bulk.update_by_id(conn, m, ("id", "points", "last_purchase_at"),
                          [(ref["core"], 1, FIXED_NOW), (ref["bulk"], 2, None)])
        assert conn.execute(sa.select(m.c.points, m.c.last_purchase_at, m.c.tier).order_by(m.c.id)).all() == [
            (1, FIXED_NOW, "gold"), (2, None, "gold")]


def test_rows_are_found_by_their_keys(engine):
    m = members_table
    with engine.begin() as conn:
        conn.execute(m.insert().values(member_id="Hà Nội \"1\"", email="h@example.com", tier="member",
                                       created_at=FIXED_NOW, updated_at=FIXED_NOW))
        found = bulk.by_key(conn, m, "member_id", [m.c.member_id, m.c.joined_at, m.c.total_spend],
                            ["bulk", "Hà Nội \"1\"", "nobody", "core"])
        assert sorted(tuple(row) for row in found) == [
            ("Hà Nội \"1\"", None, Decimal(0)), ("bulk", None, Decimal(0)), ("core", None, Decimal(0))]
        assert bulk.by_key(conn, m, "member_id", [m.c.id], []) == []


@pytest.mark.parametrize("path", ["request", "file"])
def test_each_member_keeps_what_its_events_changed_and_nothing_else(runtime, path):
    """Members whose events change different columns, in one batch: a purchase, a purchase older
    than the last one, a signup, points that move the tier, points that do not."""
    last = datetime(2026, 10, 1, 8, 0, tzinfo=timezone.utc)
    joined = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    members = [(n, {"member_id": f"M{n}", "email": f"m{n}@example.com"}) for n in range(5)]
    events: list[dict[str, Any]] = [
        {"member_id": f"M{n}", "type": "purchase", "amount": 10, "occurred_at": last.isoformat()} for n in range(5)]
    engine = db.writer(runtime.engine())
    with engine.begin() as conn:
        import_members(conn, runtime.settings, members, source="setup", now=FIXED_NOW)
        import_events(conn, runtime.settings, list(enumerate(events)), source="setup", now=FIXED_NOW)
        conn.execute(members_table.update().where(members_table.c.member_id != "M2").values(joined_at=joined))
    later = FIXED_NOW + timedelta(hours=1)
    rows = list(enumerate([
        {"member_id": "M0", "type": "purchase", "amount": "2000.5", "occurred_at": "2026-11-20T10:00:00+07:00"},
        {"member_id": "M1", "type": "purchase", "amount": 7, "occurred_at": "2026-09-01T00:00:00Z"},
        {"member_id": "M2", "type": "signup", "occurred_at": "2026-11-19 09:00"},
        {"member_id": "M3", "type": "points_earned", "points": 1000, "occurred_at": "2026-11-21T00:00:00Z"},
        {"member_id": "M4", "type": "points_earned", "points": 10, "occurred_at": "2026-11-21T00:00:00Z"},
    ]))
    with engine.begin() as conn:
        if path == "request":
            RequestEvents(runtime.settings).apply(conn, rows, source="api", now=later)
        else:
            import_events(conn, runtime.settings, rows, source="file", now=later)
    m = members_table
    with engine.connect() as conn:
        found = conn.execute(sa.select(m.c.member_id, m.c.points, m.c.tier, m.c.total_spend, m.c.purchase_count,
                                       m.c.last_purchase_at, m.c.joined_at, m.c.joined_on, m.c.updated_at)
                             .order_by(m.c.member_id)).all()
    assert [tuple(row) for row in found] == [
        ("M0", 2, "member", Decimal("2010.50"), 2, datetime(2026, 11, 20, 3, 0, tzinfo=timezone.utc), joined, None,
         later),
        ("M1", 0, "member", Decimal("17.00"), 2, last, joined, None, later),
        ("M2", 0, "member", Decimal("10.00"), 1, last, datetime(2026, 11, 19, 2, 0, tzinfo=timezone.utc),
         date(2026, 11, 19), later),
        ("M3", 1000, "silver", Decimal("10.00"), 1, last, joined, None, later),
        ("M4", 10, "member", Decimal("10.00"), 1, last, joined, None, later),
    ]


@pytest.mark.parametrize("moment", [
    datetime(2026, 3, 29, 1, 30, 0, 5, tzinfo=HANOI), datetime(2026, 3, 29, 1, 30, tzinfo=timezone.utc),
    datetime(1900, 1, 1, tzinfo=timezone(timedelta(hours=-5))), datetime(2199, 12, 31, 23, 59, 59, 999999,
                                                                          tzinfo=ZoneInfo("Europe/Paris"))])
def test_a_time_is_stored_on_sqlite_as_sqlalchemy_stores_its_utc_wall_time(moment):
    from sqlalchemy.dialects import sqlite

    from loyalty_mail.models import UTCDateTime

    dialect = sqlite.dialect()
    generic = sa.DateTime().dialect_impl(dialect).bind_processor(dialect)
    expected = generic(moment.astimezone(timezone.utc).replace(tzinfo=None))
    assert UTCDateTime().bind_processor(dialect)(moment) == expected
    assert UTCDateTime.sqlite_texts([moment, None]) == [expected, None]

"""A request's events applied in memory (importing/request_events.py) against the file importer
(`import_events` with its staging table) on the same rows: the same answer, rejections in the
same words, and the same database contents, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from loyalty_mail import db
from loyalty_mail.importing.events import import_events
from loyalty_mail.importing.members import import_members
from loyalty_mail.importing.request_events import AT_MOST, RequestEvents
from loyalty_mail.models import events_table, members_table, point_lots_table, tier_changes_table, touched_members_table
from loyalty_mail.runtime import Runtime

from .conftest import FIXED_NOW, TEST_CONFIG

EXPIRING = TEST_CONFIG.replace("  points_per_currency_unit: 0.001\n",
                               "  points_per_currency_unit: 0.001\n  points:\n    expiry: {after: 12 months}\n")


def rows(side: str) -> list[dict[str, Any]]:
    """A request with something of every kind: tier moves both ways, an over-redemption, an id
    repeated, an unknown member, an id applied before, a signup, a spend past what the column
    holds (kept as a float on SQLite), an event without an id, a bad row, rows out of time order."""
    m, e = f"{side}-".__add__, f"{side}:".__add__
    return [
        {"event_id": e("1"), "member_id": m("1"), "type": "purchase", "amount": "2000000.5",
         "occurred_at": "2026-11-21T10:00:00+07:00", "store": "Hanoi", "properties": {"items": ["tea"]}},
        {"event_id": e("2"), "member_id": m("1"), "type": "points_redeemed", "points": 900_000,
         "occurred_at": "2026-11-21T11:00:00+07:00"},
        {"event_id": e("1"), "member_id": m("2"), "type": "purchase", "amount": 5,
         "occurred_at": "2026-11-21T12:00:00+07:00"},
        {"event_id": e("3"), "member_id": m("9"), "type": "purchase", "amount": 5,
         "occurred_at": "2026-11-21T12:00:00+07:00"},
        {"event_id": e("0"), "member_id": m("2"), "type": "purchase", "amount": 5,
         "occurred_at": "2026-11-21T12:00:00+07:00"},
        {"event_id": e("4"), "member_id": m("2"), "type": "signup", "occurred_at": "2026-11-19 09:00"},
        {"event_id": e("5"), "member_id": m("3"), "type": "purchase", "amount": "9999999999999999.99", "points": 1,
         "occurred_at": "2026-11-20T08:00:00Z"},
        {"member_id": m("2"), "type": "review_written", "points": 10, "occurred_at": "2026-11-22T09:00:00Z"},
        {"event_id": e("6"), "member_id": m("2"), "occurred_at": "2026-11-22T09:00:00Z"},
        {"event_id": e("7"), "member_id": m("1"), "type": "points_redeemed", "points": 2500,
         "occurred_at": "2026-11-21T10:30:00+07:00"},
        {"event_id": e("8"), "member_id": m("1"), "type": "points_earned", "points": 20_000,
         "occurred_at": "2026-11-20T10:00:00+07:00"},
        {"event_id": e("9"), "member_id": m("3"), "type": "purchase", "amount": "12.34",
         "occurred_at": "2026-11-20T09:00:00.123456Z"},
    ]


@pytest.fixture(params=["points that last", "expiring points"])
def runtime(project, database_url, request):  # noqa: ANN001, ANN201 - fixtures
    if request.param == "expiring points":
        (project / "config.yaml").write_text(EXPIRING, encoding="utf-8")
    rt = Runtime.load(project, database_url=database_url, clock=lambda: FIXED_NOW)
    members = [(n, {"member_id": f"{side}-{k}", "email": f"{side.lower()}{k}@example.com"})
               for n, (side, k) in enumerate((s, k) for s in "AB" for k in (1, 2, 3))]
    with db.writer(rt.engine()).begin() as conn:
        import_members(conn, rt.settings, members, source="setup", now=FIXED_NOW)
        for side in "AB":
            import_events(conn, rt.settings, [(0, {"event_id": f"{side}:0", "member_id": f"{side}-2",
                                                   "type": "points_earned", "points": 7,
                                                   "occurred_at": "2026-11-01T00:00:00Z"})],
                          source="setup", now=FIXED_NOW)
    yield rt
    rt.close()


def test_a_request_s_events_have_the_file_importer_s_effects(runtime):
    engine = db.writer(runtime.engine())
    numbered = list(enumerate(rows("A")))
    with engine.begin() as conn:
        conn.execute(touched_members_table.delete())
        ours, our_rejects = RequestEvents(runtime.settings).apply(conn, numbered, source="api", now=FIXED_NOW)
    with engine.begin() as conn:
        touched_a = touched(conn)
        conn.execute(touched_members_table.delete())
        theirs, their_rejects = import_events(conn, runtime.settings, list(enumerate(rows("B"))), source="api",
                                              now=FIXED_NOW, skip_invalid=True)
    with engine.connect() as conn:
        assert as_side("B", touched(conn)) == touched_a == ["A-1", "A-2", "A-3"]
        assert (ours.rows_read, ours.inserted, ours.updated, ours.skipped, ours.rejected, ours.tier_changes) == (
            theirs.rows_read, theirs.inserted, theirs.updated, theirs.skipped, theirs.rejected, theirs.tier_changes)
        assert ours.tier_changes == 2 and ours.skipped == 1 and ours.inserted == 6
        assert our_rejects.by_row == as_side("B", their_rejects.by_row)
        # SQLite keeps the spend just below 10^16 as 1e16 and refuses it; PostgreSQL refuses the next one
        sqlite = conn.dialect.name == "sqlite"
        assert sorted(our_rejects.by_row) == ([1, 2, 3, 6, 8] if sqlite else [1, 2, 3, 8, 11])
        assert contents(conn, "A") == as_side("B", contents(conn, "B"))


def touched(conn: sa.Connection) -> list[str]:
    t, m = touched_members_table, members_table
    return sorted(conn.execute(sa.select(m.c.member_id).join(t, t.c.member_ref == m.c.id)).scalars())


def contents(conn: sa.Connection, side: str) -> list[Any]:
    """Every row the events of one side wrote, without ids (each side's rows in id order)."""
    m, e, t, lots = members_table, events_table, tier_changes_table, point_lots_table
    mine = m.c.member_id.like(f"{side}-%")

    def select(query: sa.Select[Any], table: sa.Table) -> list[dict[str, Any]]:
        query = query.join(m, table.c.member_ref == m.c.id).where(mine).order_by(table.c.id)
        return [dict(row) for row in conn.execute(query).mappings()]

    def columns(table: sa.Table, *left_out: str) -> list[Any]:
        return [c for c in table.c if c.name not in ("id", "member_ref", *left_out)]

    members = sa.select(*columns(m, "email")).where(mine).order_by(m.c.member_id)
    return [[dict(row) for row in conn.execute(members).mappings()],
            select(sa.select(m.c.member_id, *columns(e)), e),
            select(sa.select(m.c.member_id, *columns(t, "event_ref"), e.c.event_id)
                   .select_from(t).outerjoin(e, e.c.id == t.c.event_ref), t),
            select(sa.select(m.c.member_id, *columns(lots)), lots)]


def as_side(side: str, value: Any) -> Any:
    """`value` with side `side`'s member and event ids written as side A's."""
    if isinstance(value, str):
        return value.replace(f"{side}-", "A-").replace(f"{side}:", "A:")
    if isinstance(value, dict):
        return {as_side(side, k): as_side(side, v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(as_side(side, v) for v in value)
    return value


def test_more_rows_than_one_page_are_refused(runtime):
    with db.writer(runtime.engine()).begin() as conn, pytest.raises(ValueError, match=f"at most {AT_MOST}"):
        RequestEvents(runtime.settings).apply(conn, [(n, {}) for n in range(AT_MOST + 1)], source="api",
                                              now=FIXED_NOW)

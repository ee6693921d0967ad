"""Segment membership of the members behind sends, for `report --segments`.

Membership is written to a temporary table `(segment, send_id)` by INSERT ... SELECT statements
that run each segment's compiled condition inside the database, never in Python:

    now    one statement per segment, evaluated at the end of the report period
    send   one statement per segment and distinct send time (`scheduled_for`), evaluated at that
           instant: who was in the segment when the email went out. Sends of one tick share a
           time, so this costs one evaluation per tick (and per quiet-hours deferral) in range.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from ..config import Settings
from ..errors import ConfigError
from ..models import members_table, sends_table
from ..segments import SegmentCatalog, compile_rule, context_for

WHEN = ("send", "now")


def membership_table(conn: sa.Connection, settings: Settings, catalog: SegmentCatalog, names: list[str],
                     since: datetime, until: datetime, states: tuple[str, ...], when: str) -> sa.Table:
    """A temporary table holding (segment, send_id) for every send in [since, until) in `states`
    whose member was in the segment `when` ("send" or "now")."""
    unknown = [name for name in names if name not in catalog.segments]
    if unknown:
        raise ConfigError(f"unknown segment {', '.join(unknown)} in --segments "
                          f"(segments: {', '.join(sorted(catalog.segments)) or 'none'})")
    if when not in WHEN:
        raise ValueError(f"membership is evaluated at 'send' or 'now', not {when!r}")
    table = sa.Table("report_membership", sa.MetaData(),
                     sa.Column("segment", sa.String(64), nullable=False),
                     sa.Column("send_id", sa.String(32), nullable=False),
                     prefixes=["TEMPORARY"])
    table.drop(conn, checkfirst=True)
    table.create(conn)
    s, m = sends_table, members_table
    in_range = [s.c.state.in_(states), s.c.scheduled_for >= since, s.c.scheduled_for < until]
    instants: list[datetime | None] = [None]
    if when == "send":
        instants = list(conn.execute(sa.select(s.c.scheduled_for).where(*in_range).distinct()).scalars())
    dialect = conn.dialect.name
    for name in names:
        rule = catalog.segments[name].rule
        for instant in instants:
            ctx = context_for(settings, catalog, instant or until, dialect)
            where = [*in_range, compile_rule(rule, ctx)]
            if instant is not None:
                where.append(s.c.scheduled_for == instant)
            conn.execute(table.insert().from_select(
                ["segment", "send_id"],
                sa.select(sa.literal(name, sa.String()), s.c.send_id).join(m, m.c.id == s.c.member_ref).where(*where)))
    return table


def membership_column(table: sa.Table, name: str, send_id: sa.ColumnElement[str]) -> sa.ColumnElement[str]:
    """'in' or 'out': whether the send's member was in segment `name`."""
    inside = sa.exists(sa.select(table.c.send_id).where(table.c.segment == name, table.c.send_id == send_id))
    return sa.case((inside, "in"), else_="out")

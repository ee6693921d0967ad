"""The events of one request (at most AT_MOST) applied without a staging table.

`import_events` stages a file's rows in a temporary table and finds in SQL what needs the whole
file: unknown members, an event id repeated in the file, event ids applied before. A request's
few rows are checked here in memory instead, after two reads by key (the rows' members, and
which of their event ids are stored), with the same checks in the same order and words; then
the importer's own `Applier` applies them in its order (member, time, row) with its rules and
writes. Each value is first made what the staging table would give back (an amount as the
database's money column holds it, a time in UTC), so the effects are the importer's to the
digit. A staging table costs a request a dozen statements (create, load, index, check, drop),
and on PostgreSQL its look for applied event ids read the whole events table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

from .. import bulk, touched
from ..config import Settings
from ..models import events_table, members_table
from ..tiers import TierLadder
from .batch import ImportSummary, Rejects, validated_rows
from .events import (
    MEMBERS_PER_PAGE,
    STAGING,
    STAGING_COLUMNS,
    STATE_COLUMNS,
    Applier,
    EventRowValidator,
    member_state,
    unknown_member,
)
from .readers import SourceRow

AT_MOST = MEMBERS_PER_PAGE  # the rows the importer's applier takes in one page


class RequestEvents:
    """`apply` = import_events with skip_invalid, for at most AT_MOST rows, in the caller's transaction."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.validate = EventRowValidator(settings)
        self.ladder = TierLadder.from_settings(settings.tiers)

    def apply(self, connection: sa.Connection, rows: Sequence[SourceRow], *, source: str,
              now: datetime) -> tuple[ImportSummary, Rejects]:
        if len(rows) > AT_MOST:
            raise ValueError(f"{len(rows)} events: at most {AT_MOST} are applied without a staging table")
        summary, rejects = ImportSummary(source=source), Rejects()
        as_stored = _as_stored(connection.dialect)
        staged = sorted((as_stored(dict(zip(STAGING_COLUMNS, row)))
                         for row in validated_rows(rows, self.validate, summary, rejects)),
                        key=lambda row: row["row_no"])
        m, e = members_table, events_table
        members = {row.member_id: row for row in bulk.by_key(connection, m, "member_id", STATE_COLUMNS,
                                                             {r["member_id"] for r in staged})}
        left_out: set[int] = set()
        for row in staged:
            member = members.get(row["member_id"])
            if member is None:
                rejects.add(row["row_no"], "member_id", unknown_member(row["member_id"]))
                left_out.add(row["row_no"])
            else:
                row["member_ref"] = member.id
        first_rows: dict[str, int] = {}
        for row in staged:
            if row["event_id"] is not None:
                first = first_rows.setdefault(row["event_id"], row["row_no"])
                if first != row["row_no"]:
                    rejects.add(row["row_no"], "event_id", f"'{row['event_id']}' already appears in row {first}")
                    left_out.add(row["row_no"])
        stored = {row.event_id for row in bulk.by_key(connection, e, "event_id", [e.c.event_id], first_rows)}
        already = [row["row_no"] for row in staged if row["event_id"] in stored]
        summary.skipped = len(already)
        left_out.update(already)
        applying = sorted((row for row in staged if row["row_no"] not in left_out),
                          key=lambda row: (row["member_ref"], row["occurred_at"], row["row_no"]))
        refs = sorted({row["member_ref"] for row in applying})
        if applying:
            program = self.settings.program
            zone = program.default_timezone
            wanted = set(refs)
            states = {member.id: member_state(member, zone) for member in members.values() if member.id in wanted}
            applier = Applier(connection, self.settings, self.ladder, program.points_per_currency_unit, now, rejects,
                              summary, zone)
            events, changes, changed = applier.applied(states, applying)
            # Queued first (as the importer would at the end): on PostgreSQL this insert's foreign
            # key checks lock the members' rows, and the events' checks then find them locked.
            # Queued last, every member row was locked twice, its old version and its new one.
            touched.enqueue(connection, refs, now, count=len(events))
            applier.write_all(events, changes, changed)
        summary.rejected = len(rejects)
        return summary, rejects


def _as_stored(dialect: sa.Dialect) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A staging row's amount and time as the staging table gives them back: a time in UTC; an
    amount on SQLite as its floating-point number (PostgreSQL keeps a validated amount to the cent)."""
    money = STAGING.c.amount.type.dialect_impl(dialect)
    bind = money.bind_processor(dialect) if dialect.name == "sqlite" else None
    result = money.result_processor(dialect, None) if dialect.name == "sqlite" else None

    def as_stored(row: dict[str, Any]) -> dict[str, Any]:
        row["occurred_at"] = row["occurred_at"].astimezone(timezone.utc)
        amount = row["amount"]
        if amount is not None and bind is not None:
            amount = bind(amount)
        if amount is not None and result is not None:
            amount = result(amount)
        row["amount"] = amount
        return row

    return as_stored

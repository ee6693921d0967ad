"""Items posted to the API, applied by the file importers themselves.

Each item is a source row numbered by its index in the request, so every rule, field and message
of `members import` and `events import` holds here unchanged (one definition of a valid member).
A request of one event takes the event importer's one-event path (`OneEvent`: the same validator,
checks and effects without a staging table). Problems are collected per item. `apply_on` works in
the caller's transaction (the API's group writer gives each request a savepoint and answers after
the commit, so every 2xx is durable); `apply` in one of its own. All-or-nothing by default: any bad
item raises ItemsRejected, and the caller rolls back what was written. With `partial`, the good
items are applied and the bad ones returned.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from .. import db
from ..config import Settings
from ..errors import InputFileError
from ..importing.batch import ImportSummary, Rejects
from ..importing import request_events
from ..importing.events import OneEvent, import_events
from ..importing.members import MemberRowValidator, import_members
from ..importing.readers import PROBLEMS, SourceRow, json_row_problems
from ..models import members_table
from .schemas import allowed_for

MAX_ITEMS = 1000
MAX_FOUND_CHARS = 100
SOURCE = "api"
ATTEMPTS = 3  # a unique key raced by a concurrent request: the retry then sees the other's row


@dataclass(frozen=True)
class ItemError:
    """One problem of one item: where it is, what was found, what is allowed, in the importers' words."""

    index: int
    field: str
    found: Any
    allowed: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "field": self.field, "found": self.found, "allowed": self.allowed,
                "message": self.message}


class ItemsRejected(Exception):
    """Some items are bad and the request was all-or-nothing: nothing was applied."""

    def __init__(self, errors: list[ItemError]):
        super().__init__(f"{len({e.index for e in errors})} item(s) rejected")
        self.errors = errors


@dataclass
class Outcome:
    """What one request applied."""

    members_inserted: int = 0
    members_updated: int = 0
    events_inserted: int = 0
    events_already: int = 0  # event ids applied before: accepted, not applied twice
    tier_changes: int = 0
    rejected: list[ItemError] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"members": {"inserted": self.members_inserted, "updated": self.members_updated},
                "events": {"inserted": self.events_inserted, "already_applied": self.events_already},
                "tier_changes": self.tier_changes,
                "rejected": [e.as_dict() for e in self.rejected]}


def source_row(index: int, item: Any) -> SourceRow:
    """An item as the importers' source row; what no import can take becomes the row's problems."""
    if not isinstance(item, dict):
        return index, {PROBLEMS: [("", f"each item must be a JSON object, found {_kind(item)}")]}
    if PROBLEMS in item:
        return index, {PROBLEMS: [(PROBLEMS, "is not a name a field may have")]}
    problems = json_row_problems(item)
    return (index, {**item, PROBLEMS: problems}) if problems else (index, item)


def apply(engine: sa.Engine, settings: Settings, *, members: Sequence[SourceRow] = (),
          events: Sequence[SourceRow] = (), partial: bool = False, now: datetime) -> Outcome:
    """Apply member rows, then event rows, in one transaction of their own (retried on a raced
    unique key)."""
    for attempt in range(ATTEMPTS):
        try:
            with db.writer(engine).connect() as conn, conn.begin():
                return apply_on(conn, settings, members=members, events=events, partial=partial, now=now)
        except sa.exc.IntegrityError:
            if attempt == ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def apply_on(conn: sa.Connection, settings: Settings, *, members: Sequence[SourceRow] = (),
             events: Sequence[SourceRow] = (), partial: bool = False, now: datetime,
             one_event: OneEvent | None = None) -> Outcome:
    """Apply member rows, then event rows, in the caller's transaction. ItemsRejected (when not
    `partial`) leaves the caller to roll back what was written. A request of one event for a
    known member takes `one_event` (the same rules and effects without a staging table)."""
    members, events = list(members), list(events)
    if (not members and len(events) == 1
            and not (settings.ingest.create_unknown_members and _unknown_members(conn, events))):
        index, row = events[0]
        summary, rejects = (one_event or OneEvent(settings)).apply(conn, index, row, source=SOURCE, now=now)
        return _outcome(_events_applied(Outcome(), summary), _errors(rejects, events), partial)
    return _apply(conn, settings, members, events, partial, now)


def _apply(conn: sa.Connection, settings: Settings, members: list[SourceRow], events: list[SourceRow],
           partial: bool, now: datetime) -> Outcome:
    outcome = Outcome()
    errors: list[ItemError] = []
    if members:
        checked = _attribute_names_checked(settings, members, now)
        summary, rejects = import_members(conn, settings, checked, source=SOURCE, now=now, skip_invalid=True,
                                          consent_source="api")
        _count_members(outcome, summary)
        errors += _errors(rejects, checked)
    if events:
        created = _unknown_members(conn, events) if settings.ingest.create_unknown_members else []
        if created and partial:
            errors += _events_creating_members(conn, settings, outcome, created, events, now)
        else:
            errors += _events_and_their_members(conn, settings, outcome, created, events, now)
    return _outcome(outcome, errors, partial)


def _events_and_their_members(conn: sa.Connection, settings: Settings, outcome: Outcome, created: list[SourceRow],
                              events: list[SourceRow], now: datetime) -> list[ItemError]:
    """Create the `created` members, then apply the events; counted into `outcome`, problems returned."""
    errors: list[ItemError] = []
    if created:
        summary, rejects = import_members(conn, settings, created, source=SOURCE, now=now,
                                          skip_invalid=True, consent_source="api")
        _count_members(outcome, summary)
        errors += _errors(rejects, created)
    if len(events) <= request_events.AT_MOST:
        summary, rejects = request_events.RequestEvents(settings).apply(conn, events, source=SOURCE, now=now)
    else:
        summary, rejects = import_events(conn, settings, events, source=SOURCE, now=now, skip_invalid=True)
    _events_applied(outcome, summary)
    return errors + _errors(rejects, events)


def _events_creating_members(conn: sa.Connection, settings: Settings, outcome: Outcome, created: list[SourceRow],
                             events: list[SourceRow], now: datetime) -> list[ItemError]:
    """`_events_and_their_members` for a partial request: a member is created only when one of its
    events is applied, so a refused item creates no member. When a new member's events are all
    refused, the work is undone and done again without those items, whose first problems stand."""
    tried = Outcome()
    savepoint = conn.begin_nested()
    errors = _events_and_their_members(conn, settings, tried, created, events, now)
    refused = {e.index for e in errors}
    new_ids = {str(row["member_id"]).strip() for _, row in created}
    applied_for = {str(row.get("member_id")).strip() for index, row in events if index not in refused}
    unused = new_ids - applied_for
    if not unused:
        savepoint.commit()
        _add(outcome, tried)
        return errors
    savepoint.rollback()
    left_out = {index for index, row in events if str(row.get("member_id")).strip() in unused}
    kept = [row for row in created if str(row[1]["member_id"]).strip() not in unused]
    again = _events_and_their_members(conn, settings, outcome, kept,
                                      [row for row in events if row[0] not in left_out], now)
    return again + [e for e in errors if e.index in left_out]


def _add(outcome: Outcome, more: Outcome) -> None:
    outcome.members_inserted += more.members_inserted
    outcome.members_updated += more.members_updated
    outcome.events_inserted += more.events_inserted
    outcome.events_already += more.events_already
    outcome.tier_changes += more.tier_changes


def _outcome(outcome: Outcome, errors: list[ItemError], partial: bool) -> Outcome:
    errors.sort(key=lambda e: e.index)
    if errors and not partial:
        raise ItemsRejected(errors)
    outcome.rejected = errors
    return outcome


def _events_applied(outcome: Outcome, summary: ImportSummary) -> Outcome:
    outcome.events_inserted += summary.inserted
    outcome.events_already += summary.skipped
    outcome.tier_changes += summary.tier_changes
    return outcome


def _count_members(outcome: Outcome, summary: ImportSummary) -> None:
    outcome.members_inserted += summary.inserted
    outcome.members_updated += summary.updated
    outcome.tier_changes += summary.tier_changes


_COLUMN = re.compile(r"column '([^']*)'")
_ROW = re.compile(r"^row \d+: ")


def _attribute_names_checked(settings: Settings, rows: list[SourceRow], now: datetime) -> list[SourceRow]:
    """A field the member importer refuses for the whole file (a computed column, a name no
    attribute may have) is a problem of its item here."""
    validate = MemberRowValidator(settings, now)
    checked = []
    for index, row in rows:
        if PROBLEMS not in row:
            try:
                validate(index, row)
            except InputFileError as exc:
                found = _COLUMN.search(str(exc))
                row = {**row, PROBLEMS: [(found.group(1) if found else "", _ROW.sub("", str(exc)))]}
        checked.append((index, row))
    return checked


def _unknown_members(conn: sa.Connection, events: list[SourceRow]) -> list[SourceRow]:
    """Member rows (member_id, email) for the events' members not in the database yet, from the
    first of their events that carries an `email`."""
    wanted: dict[str, SourceRow] = {}
    for index, row in events:
        member_id, email = row.get("member_id"), row.get("email")
        if isinstance(member_id, str) and isinstance(email, str) and member_id.strip() not in wanted:
            wanted[member_id.strip()] = (index, {"member_id": member_id, "email": email})
    if not wanted:
        return []
    m = members_table
    known = set(conn.execute(sa.select(m.c.member_id).where(m.c.member_id.in_(list(wanted)))).scalars())
    return [row for member_id, row in wanted.items() if member_id not in known]


def _errors(rejects: Rejects, rows: list[SourceRow]) -> list[ItemError]:
    items = dict(rows)
    return [ItemError(index, column, _found(items.get(index, {}), column),
                      UNKNOWN_ALLOWED if message.startswith("unknown member") else allowed_for(column), message)
            for index, problems in rejects.by_row.items() for column, message in problems]


UNKNOWN_ALLOWED = "the id of a member already added (or ingest.create_unknown_members: true)"


def _found(row: dict[str, Any], column: str) -> Any:
    if not column:
        return None
    value = row.get(column)
    if isinstance(value, str) and len(value) > MAX_FOUND_CHARS:
        return value[:MAX_FOUND_CHARS] + "..."
    if isinstance(value, (dict, list)):
        return f"a JSON {'object' if isinstance(value, dict) else 'array'}"
    return value


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "true/false"
    if value is None:
        return "null"
    return "a number"

"""An event id sent again: a retry of the recorded event, or another event under its id.

An event id (`event_id`, Segment's `messageId`) names one event. The importers skip an id that is
recorded already, so a retry is applied once; this module tells a retry from a reuse by comparing
what the item says with what is stored: the member, the type, the time (as an instant), the amount
and the points (where the item gives them, or neither event is a purchase: a purchase's points
otherwise follow from its amount and the rate then in force). Properties are
not compared: they describe the event and are not what a member's totals are made of. Each field
that differs is one ItemError. Reads only; the caller decides what the answer is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from ..importing.events import STAGING_COLUMNS, SUBTRACTS, EventRowValidator
from ..importing.readers import PROBLEMS, SourceRow
from ..models import events_table, members_table
from .ingest import MAX_FOUND_CHARS, ItemError, ItemsRejected, Outcome

COMPARED = ("member_id", "type", "occurred_at", "amount", "points")


class EventIdReused(ItemsRejected):
    """Items whose event id is recorded for another event, and no other problem: nothing applied."""


def applied_once(apply: Callable[[], Outcome], connection: sa.Connection, validate: EventRowValidator,
                 events: Sequence[SourceRow], *, partial: bool, id_name: str = "event_id",
                 untimed: frozenset[int] = frozenset()) -> Outcome:
    """`apply()`'s outcome (ingest.apply_on in `connection`'s transaction), with each event whose
    id is recorded for another event made that item's error. Looked for only when the importer
    skipped ids recorded before, or refused items: a request of new events costs no query more.
    All or nothing (not `partial`): EventIdReused when those are the only problems, the
    importer's ItemsRejected with them added otherwise; the caller rolls back."""
    try:
        outcome = apply()
    except ItemsRejected as exc:
        reused = conflicts(connection, validate, events, id_name=id_name, untimed=untimed)
        if reused:
            raise ItemsRejected(merged(exc.errors, reused)) from None
        raise
    if outcome.events_already:
        reused = conflicts(connection, validate, events, id_name=id_name, untimed=untimed)
        if reused and not partial:
            raise EventIdReused(reused)
        refused = {e.index for e in outcome.rejected}
        outcome.events_already -= len({e.index for e in reused} - refused)
        outcome.rejected = merged(outcome.rejected, reused)
    return outcome


def conflicts(connection: sa.Connection, validate: EventRowValidator, rows: Sequence[SourceRow], *,
              id_name: str = "event_id", untimed: frozenset[int] = frozenset()) -> list[ItemError]:
    """The differences between `rows` and the recorded events of the same ids, one ItemError per
    field (`id_name` is what the client calls the id, for the messages; the times of the rows at
    `untimed` are not compared: they are when the item arrived). Rows the validator refuses are
    left to the importer; rows of no id, or of an id not recorded, differ from nothing."""
    wanted: dict[str, tuple[int, dict[str, Any], dict[str, Any]]] = {}
    for index, row in rows:
        if PROBLEMS in row:
            continue
        staged, _ = validate(index, row)
        if staged is None:
            continue
        event = dict(zip(STAGING_COLUMNS, staged))
        if event["event_id"]:
            wanted.setdefault(event["event_id"], (index, event, row))
    if not wanted:
        return []
    e, m = events_table, members_table
    recorded = connection.execute(
        sa.select(e.c.event_id, m.c.member_id, e.c.type, e.c.occurred_at, e.c.amount, e.c.points)
        .join(m, m.c.id == e.c.member_ref).where(e.c.event_id.in_(list(wanted)))).mappings().all()
    errors: list[ItemError] = []
    for stored in recorded:
        index, event, row = wanted[stored["event_id"]]
        for field, sent, kept in _differences(event, stored, compare_time=index not in untimed):
            errors.append(ItemError(
                index, field, _found(row.get(field)), f"{_shown(kept)}, as recorded for {id_name} '{event['event_id']}'",
                f"{id_name} '{event['event_id']}' is recorded with {field} {_shown(kept)}, not {_shown(sent)}: "
                f"a retry repeats the recorded event; another event needs another {id_name}"))
    errors.sort(key=lambda error: error.index)
    return errors


def merged(errors: list[ItemError], reused: list[ItemError]) -> list[ItemError]:
    """The importer's errors and the differences, by item; a difference at a field the importer
    already faults (an unknown member) is left out."""
    faulted = {(e.index, e.field) for e in errors}
    return sorted(errors + [e for e in reused if (e.index, e.field) not in faulted], key=lambda e: e.index)


def _differences(event: dict[str, Any], stored: Any, compare_time: bool) -> list[tuple[str, Any, Any]]:
    """(field, sent, recorded) for each compared field that differs."""
    differ: list[tuple[str, Any, Any]] = []
    if event["member_id"] != stored["member_id"]:
        differ.append(("member_id", event["member_id"], stored["member_id"]))
    if event["type"] != stored["type"]:
        differ.append(("type", event["type"], stored["type"]))
    if compare_time and _utc(event["occurred_at"]) != _utc(stored["occurred_at"]):
        differ.append(("occurred_at", _utc(event["occurred_at"]), _utc(stored["occurred_at"])))
    if _amount(event["amount"]) != _amount(stored["amount"]):
        differ.append(("amount", event["amount"], stored["amount"]))
    if event["points"] is not None or "purchase" not in (event["type"], stored["type"]):
        sent = event["points"] or 0
        delta = -sent if event["type"] in SUBTRACTS else sent
        kept = stored["points"] or 0
        if delta != kept:
            differ.append(("points", sent, -kept if stored["type"] in SUBTRACTS else kept))
    return differ


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive UTC
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _amount(value: Decimal | None) -> Decimal | None:
    return None if value is None else Decimal(value).quantize(Decimal("0.01"))


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, datetime):
        return _utc(value).isoformat()
    if isinstance(value, Decimal):
        return f"{value.quantize(Decimal('0.01'))}"
    if isinstance(value, str):
        return f"'{value}'"
    return str(value)


def _found(value: Any) -> Any:
    """What was sent, as an error entry shows it (long text shortened)."""
    if isinstance(value, str) and len(value) > MAX_FOUND_CHARS:
        return value[:MAX_FOUND_CHARS] + "..."
    return value

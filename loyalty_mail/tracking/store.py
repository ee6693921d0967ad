"""Writing what the tracking service sees: hits in batches, webhook events, unsubscribes.

Pixel and click hits are queued and written by one background thread in batches (every
`tracking.flush_interval` or 500 hits), so the request path never waits for the database;
`close()` writes everything still queued (graceful shutdown loses no accepted hit). Webhook events
are written per request, de-duplicated by SendGrid's `sg_event_id` (or a digest of the event), and
answered once committed; an event that cannot be stored is kept aside with its reason, and the
rest of its batch is applied. An unsubscribe is written at once, before the page answers, so every
later send sees it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from .. import db, suppression
from ..errors import InputFileError
from ..models import (
    members_table,
    rejected_webhook_events_table,
    sends_table,
    tracking_events_table,
)
from .bots import is_machine_open, is_scanner
from .webhooks import DeliveryEvent

log = logging.getLogger("loyalty_mail.tracking")
BATCH = 500


@dataclass(frozen=True)
class Hit:
    kind: str            # open | click
    send_id: str
    occurred_at: datetime
    url: str | None = None
    link: int | None = None
    user_agent: str | None = None
    ip: str | None = None


class HitWriter:
    """A queue of hits and the thread that writes them."""

    def __init__(self, engine: sa.Engine, interval: timedelta, bot_click_seconds: int) -> None:
        self.engine, self.interval = engine, interval.total_seconds()
        self.bot_click = timedelta(seconds=bot_click_seconds)
        self._queue: queue.Queue[Hit | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="hit-writer", daemon=True)
        self.written = 0
        self._thread.start()

    def add(self, hit: Hit) -> None:
        self._queue.put(hit)

    def close(self) -> None:
        """Write everything queued, then stop."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch: list[Hit] = []
            deadline = time.monotonic() + self.interval
            while len(batch) < BATCH:
                try:
                    item = self._queue.get(timeout=max(deadline - time.monotonic(), 0.001))
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            while stopping and not self._queue.empty():  # drain what arrived before the stop
                item = self._queue.get_nowait()
                if item is not None:
                    batch.append(item)
            if batch:
                self._write_with_retries(batch)

    def _write_with_retries(self, batch: list[Hit]) -> None:
        for attempt in range(1, 6):
            try:
                self._write(batch)
                self.written += len(batch)
                return
            except sa.exc.OperationalError as exc:  # e.g. SQLite busy beyond its timeout
                log.warning("writing %d hits failed (attempt %d): %s", len(batch), attempt, exc)
                time.sleep(0.2 * attempt)
        log.error("gave up writing %d hits", len(batch))

    def _write(self, batch: list[Hit]) -> None:
        with db.writer(self.engine).begin() as conn:
            sent = dict(conn.execute(sa.select(sends_table.c.send_id, sends_table.c.sent_at)
                                     .where(sends_table.c.send_id.in_({h.send_id for h in batch}))).all())
            same_second: dict[tuple[str, int], set[int | None]] = defaultdict(set)
            for hit in batch:
                if hit.kind == "click":
                    same_second[(hit.send_id, int(hit.occurred_at.timestamp()))].add(hit.link)
            rows: list[dict[str, Any]] = []
            for hit in batch:
                delivered = sent.get(hit.send_id)
                bot = hit.kind == "click" and (
                    is_scanner(hit.user_agent)
                    or (delivered is not None and hit.occurred_at - delivered < self.bot_click)
                    or len(same_second[(hit.send_id, int(hit.occurred_at.timestamp()))]) >= 3)
                machine = hit.kind == "open" and is_machine_open(hit.user_agent)
                rows.append({"send_id": hit.send_id, "kind": hit.kind, "source": "tracker",
                             "occurred_at": hit.occurred_at, "url": hit.url, "link": hit.link,
                             "user_agent": (hit.user_agent or "")[:500] or None, "ip": hit.ip,
                             "machine": machine, "bot": bot, "provider_event_id": None, "detail": {}})
            conn.execute(tracking_events_table.insert(), rows)


@dataclass(frozen=True)
class Rejected:
    """An event of a batch kept aside instead of applied."""

    index: int        # its position in the batch
    key: str          # the provider's event id, or a digest of the event
    reason: str
    raw: str


@dataclass(frozen=True)
class Recorded:
    """What one webhook batch did: events stored (not seen before), suppressions added, and the
    events kept aside with their reasons."""

    new: int
    suppressed: int
    rejected: list[Rejected]


def record_events(engine: sa.Engine, events: list[DeliveryEvent], now: datetime) -> Recorded:
    """Store webhook events (duplicates by provider event id ignored), suppress bounced,
    complaining and unsubscribing addresses, and keep the rejected events with their reasons, in
    one transaction. The batch is applied whole when it can be; when the database refuses it, each
    event is applied on its own and one it refuses is kept aside instead."""
    rejected = [Rejected(i, e.provider_event_id or "", e.rejected, e.raw)
                for i, e in enumerate(events) if e.rejected]
    valid = [(i, e) for i, e in enumerate(events) if not e.rejected]
    new = suppressed = 0
    with db.writer(engine).begin() as conn:
        try:
            with conn.begin_nested():
                new, suppressed = _apply_events(conn, [e for _, e in valid], now)
        except _EVENT_FAULTS:
            for index, event in valid:
                try:
                    with conn.begin_nested():
                        added, suppressed_now = _apply_events(conn, [event], now)
                except _EVENT_FAULTS as exc:
                    rejected.append(Rejected(index, event.provider_event_id or "", _fault(exc), event.raw))
                else:
                    new, suppressed = new + added, suppressed + suppressed_now
        _keep_rejected(conn, rejected, now)
    return Recorded(new, suppressed, sorted(rejected, key=lambda r: r.index))


# A database or validation refusal of one event's data; a lost connection is not one of these.
_EVENT_FAULTS = (sa.exc.DataError, sa.exc.IntegrityError, InputFileError, ValueError)


def _fault(exc: Exception) -> str:
    """Why the database refused an event, without the statement or its parameters."""
    if isinstance(exc, sa.exc.DBAPIError):
        first = str(exc.orig).splitlines()[0] if exc.orig is not None else type(exc).__name__
        return f"the database refused it: {first}"[:300]
    return f"refused: {exc}"[:300]


def _apply_events(conn: sa.Connection, events: list[DeliveryEvent], now: datetime) -> tuple[int, int]:
    if not events:
        return 0, 0
    rows: list[dict[str, Any]] = [{"send_id": e.send_id or "", "kind": e.kind, "source": "sendgrid", "occurred_at": e.occurred_at,
             "url": e.url, "link": None, "user_agent": e.user_agent, "ip": e.ip,
             "machine": e.machine, "bot": e.kind == "click" and is_scanner(e.user_agent),
             "provider_event_id": e.provider_event_id, "detail": {**e.detail, "email": e.email}}
            for e in events]
    new, suppressed = 0, 0
    t = tracking_events_table
    ids = {e.provider_event_id for e in events if e.provider_event_id}
    known: set[str] = set()
    for chunk in _chunks(sorted(ids), 500):
        known |= {i for (i,) in conn.execute(sa.select(t.c.provider_event_id)
                                              .where(t.c.provider_event_id.in_(chunk)))}
    fresh, seen = [], set(known)
    for row in rows:
        key = row["provider_event_id"]
        if key is None or key not in seen:
            fresh.append(row)
            if key is not None:
                seen.add(key)
    if fresh:
        conn.execute(db.insert_ignoring_duplicates(tracking_events_table, conn.dialect.name), fresh)  # a concurrent duplicate is still ignored
    new = len(fresh)
    for event in events:
        if event.suppress_as and event.email:
            suppressed += suppression.add(conn, event.email, event.suppress_as, now,
                                          detail=f"SendGrid {event.kind}")
    return new, suppressed


def _keep_rejected(conn: sa.Connection, rejected: list[Rejected], now: datetime) -> None:
    """Keep rejected events for someone to look at; one already kept (a retried batch) is not
    kept again. Raw events are cut at 64 KB."""
    if rejected:
        rows = [{"source": "sendgrid", "event_key": r.key, "reason": r.reason[:300],
                 "raw": r.raw[:65536], "received_at": now} for r in rejected]
        conn.execute(db.insert_ignoring_duplicates(rejected_webhook_events_table, conn.dialect.name), rows)


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def unsubscribe(engine: sa.Engine, send_id: str, now: datetime, source: str) -> dict[str, Any] | None:
    """Unsubscribe the member a send went to, at once. Returns the member (locale, email) or None
    when the send is unknown."""
    s, m = sends_table, members_table
    with db.writer(engine).begin() as conn:
        row = conn.execute(sa.select(m.c.id, m.c.email, m.c.locale, m.c.first_name)
                           .join(s, s.c.member_ref == m.c.id).where(s.c.send_id == send_id)).mappings().first()
        if row is None:
            return None
        suppression.unsubscribe(conn, [row["email"]], now, detail=f"{source} from send {send_id}")
        conn.execute(tracking_events_table.insert().values(
            send_id=send_id, kind="unsubscribe", source=source, occurred_at=now, machine=False, bot=False,
            detail={}))
        return dict(row)


def member_for_send(engine: sa.Engine, send_id: str) -> dict[str, Any] | None:
    s, m = sends_table, members_table
    with engine.connect() as conn:
        row = conn.execute(sa.select(m.c.email, m.c.locale, m.c.subscribed)
                           .join(s, s.c.member_ref == m.c.id).where(s.c.send_id == send_id)).mappings().first()
    return dict(row) if row else None


Clock = Callable[[], datetime]

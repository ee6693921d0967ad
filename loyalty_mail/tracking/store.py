"""Writing what the tracking service sees: hits by group commit, webhook events, unsubscribes.

An open or click is answered once it is committed (group commit): one background thread writes,
in one transaction, every hit that arrived while its previous commit ran, and each request waits
for its own batch (a few milliseconds), so a hit that was answered survives kill -9 and the event
loop never blocks on the database. The writer never dies: a batch the database refuses is split
until the hits it refuses are found, and those are kept aside in `rejected_hits` with the reason;
a database that is away is retried until it is back, and `status()` says so (for `/health`).
Webhook events are written per request, de-duplicated by SendGrid's `sg_event_id` (or a digest of
the event), and answered once committed; an event that cannot be stored is kept aside with its
reason, and the rest of its batch is applied. An unsubscribe is written at once, before the page
answers, so every later send sees it. Bounces and complaints read from the bounce mailbox are
written one report per transaction, keyed by the report's own Message-ID, so reading one again
records nothing.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from .. import consent, db, suppression
from ..errors import InputFileError
from ..models import (
    members_table,
    rejected_hits_table,
    rejected_webhook_events_table,
    sends_table,
    tracking_events_table,
)
from .bots import is_machine_open, is_scanner
from .webhooks import DeliveryEvent

log = logging.getLogger("loyalty_mail.tracking")
BATCH = 2000  # hits in one transaction at most; more wait for the next one
SOURCE_NAMES = {"sendgrid": "SendGrid", "mailbox": "bounce mailbox"}
SOFT_BOUNCES = ("soft_bounce", "deferred")


@dataclass(frozen=True)
class Hit:
    kind: str            # open | click
    send_id: str
    occurred_at: datetime
    url: str | None = None
    link: int | None = None
    user_agent: str | None = None
    ip: str | None = None


@dataclass
class _Group:
    """Hits that are committed together, and the future their requests wait on."""

    hits: list[Hit] = field(default_factory=list)
    done: Future[None] = field(default_factory=Future)


@dataclass(frozen=True)
class WriterStatus:
    """What `/health` shows: `state` is idle, writing, retrying (the database refused to commit,
    e.g. it is down) or stopped; `stuck` when the thread is gone or one batch has been unwritten
    for longer than the write timeout."""

    state: str
    backlog: int        # hits accepted and not yet committed
    written: int
    rejected: int       # hits kept aside in rejected_hits
    waiting_seconds: float
    stuck: bool
    last_error: str | None


# The database is away or busy: retry the same rows. Anything else is a refusal of their data.
_UNAVAILABLE = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.DisconnectionError)


class HitWriter:
    """Commits hits in groups on one thread; `add` returns a future done once its hit is stored
    (or kept aside)."""

    def __init__(self, engine: sa.Engine, bot_click_seconds: int, write_timeout: timedelta) -> None:
        self.engine = engine
        self._checkpoints: db.WalCheckpointer | None = None
        self._checkpoints = db.WalCheckpointer.for_file(engine)
        if self._checkpoints is not None:
            self.engine = self._checkpoints.writer
        self.bot_click = timedelta(seconds=bot_click_seconds)
        self.write_timeout = write_timeout.total_seconds()
        self.written = self.rejected = 0
        self._lock = threading.Condition()
        self._open = _Group()            # filling while the previous group commits
        self._writing = 0                # hits in the group being committed
        self._writing_since: float | None = None
        self._state: str = "idle"
        self._last_error: str | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="hit-writer", daemon=True)
        self._thread.start()

    def add(self, hit: Hit) -> Future[None]:
        with self._lock:
            group = self._open
            group.hits.append(hit)
            self._lock.notify()
            return group.done

    def close(self, timeout: float = 30.0) -> None:
        """Write everything accepted, then stop (waiting at most `timeout` seconds)."""
        with self._lock:
            self._stopping = True
            self._lock.notify()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("stopped with %d hits not written: the database did not take them in %.0f s",
                      self.status(time.monotonic()).backlog, timeout)
        elif self._checkpoints is not None:
            self._checkpoints.close()

    def status(self, now: float) -> WriterStatus:
        """The writer's state at monotonic time `now`."""
        with self._lock:
            backlog = len(self._open.hits) + self._writing
            since = self._writing_since
            waiting = max(now - since, 0.0) if since is not None else 0.0
            alive = self._thread.is_alive()
            state = self._state if alive else "stopped"
            stuck = (not alive and not self._stopping) or waiting > self.write_timeout
            return WriterStatus(state, backlog, self.written, self.rejected, round(waiting, 3), stuck,
                                self._last_error)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._open.hits and not self._stopping:
                    self._lock.wait()
                if not self._open.hits:
                    self._state = "stopped"
                    return
                group, self._open = self._open, _Group()
                self._writing, self._writing_since, self._state = len(group.hits), time.monotonic(), "writing"
            for start in range(0, len(group.hits), BATCH):
                try:
                    self._write_isolating(group.hits[start:start + BATCH])
                except Exception as exc:  # noqa: BLE001 - the thread must never die: log and go on
                    log.exception("writing %d hits failed unexpectedly", len(group.hits))
                    with self._lock:
                        self._last_error = f"{type(exc).__name__}: {exc}"[:300]
            with self._lock:
                self._writing, self._writing_since, self._state = 0, None, "idle"
            group.done.set_result(None)
            if self._checkpoints is not None:
                self._checkpoints.between_transactions()

    def _write_isolating(self, hits: list[Hit]) -> None:
        """Commit `hits`; when the database refuses them, split them until each refused hit is
        found, and keep that one aside."""
        try:
            self._commit(lambda conn: self._insert(conn, hits))
            self.written += len(hits)
        except _UNAVAILABLE:
            raise
        except Exception as exc:  # noqa: BLE001 - a refusal of these rows' data, by any driver
            if len(hits) == 1:
                self._keep_aside(hits[0], exc)
                return
            middle = len(hits) // 2
            self._write_isolating(hits[:middle])
            self._write_isolating(hits[middle:])

    def _commit(self, write: Callable[[sa.Connection], None]) -> None:
        """Run `write` in one transaction, retrying while the database is away; other errors are
        raised."""
        attempt = 0
        while True:
            try:
                with db.writer(self.engine).begin() as conn:
                    write(conn)
                if attempt:
                    log.info("the database takes hits again after %d attempts", attempt + 1)
                    with self._lock:
                        self._state, self._last_error = "writing", None
                return
            except _UNAVAILABLE as exc:
                attempt += 1
                reason = _fault(exc)
                with self._lock:
                    self._state, self._last_error = "retrying", reason
                log.warning("writing hits failed (attempt %d), retrying: %s", attempt, reason)
                time.sleep(min(0.05 * 2 ** attempt, 2.0))

    def _keep_aside(self, hit: Hit, exc: Exception) -> None:
        reason = _fault(exc)
        log.warning("a %s hit for send %s was kept aside: %s", hit.kind, hit.send_id[:40], reason)
        raw = json.dumps({"kind": hit.kind, "send_id": hit.send_id, "url": hit.url, "link": hit.link,
                          "user_agent": hit.user_agent, "ip": hit.ip}, ensure_ascii=True)
        row = {"kind": hit.kind[:24], "reason": reason[:300], "raw": raw, "occurred_at": hit.occurred_at}

        def keep(conn: sa.Connection) -> None:
            conn.execute(rejected_hits_table.insert(), [row])

        try:
            self._commit(keep)
        except Exception:  # noqa: BLE001 - nothing more can be done with this hit
            log.exception("a refused %s hit could not be kept aside either: %s", hit.kind, raw[:500])
            return
        self.rejected += 1

    def _insert(self, conn: sa.Connection, batch: list[Hit]) -> None:
        clicked = {h.send_id for h in batch if h.kind == "click"}  # only clicks are judged by delivery time
        sent = dict(conn.execute(sa.select(sends_table.c.send_id, sends_table.c.sent_at)
                                 .where(sends_table.c.send_id.in_(clicked))).all()) if clicked else {}
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
                         "machine": machine, "bot": bot})  # detail: the column's default
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


def _apply_events(conn: sa.Connection, events: list[DeliveryEvent], now: datetime,
                  source: str = "sendgrid") -> tuple[int, int]:
    if not events:
        return 0, 0
    rows: list[dict[str, Any]] = [{"send_id": e.send_id or "", "kind": e.kind, "source": source, "occurred_at": e.occurred_at,
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
            consent_source = "bounce" if source == "mailbox" or event.suppress_as == "hard_bounce" else "webhook"
            suppressed += suppression.add(conn, event.email, event.suppress_as, now,
                                          detail=f"{SOURCE_NAMES.get(source, source)} {event.kind}",
                                          source=consent_source)
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


def sent_to(engine: sa.Engine, send_ids: Sequence[str]) -> dict[str, str]:
    """The address each of `send_ids` that is one of our sends went to (unknown ids are left out)."""
    s, m = sends_table, members_table
    if not send_ids:
        return {}
    with engine.connect() as conn:
        rows = conn.execute(sa.select(s.c.send_id, m.c.email).join(m, s.c.member_ref == m.c.id)
                            .where(s.c.send_id.in_(list(send_ids)[:100]))).all()
    return {send_id: email for send_id, email in rows}


@dataclass(frozen=True)
class BounceRecorded:
    """What one report from the bounce mailbox did: stored (False when it was already), the
    address newly suppressed, and for a soft bounce how many of the member's sends within the
    window have soft-bounced."""

    new: bool
    suppressed: bool
    soft_bounces: int = 0


def record_bounce(engine: sa.Engine, event: DeliveryEvent, now: datetime, *, soft_limit: int,
                  soft_window: timedelta, keep: bool = True) -> BounceRecorded:
    """Store a bounce or complaint read from the bounce mailbox (once per report: its key is the
    event's provider id) and suppress the address: at once for a hard bounce or a complaint, and
    for soft bounces once `soft_limit` of the member's sends sent within `soft_window` before `now`
    have soft-bounced. One transaction; `keep=False` rolls it back (a dry run)."""
    with db.writer(engine).connect() as conn:
        transaction = conn.begin()
        try:
            # Every suppression goes through suppression.add, which writes the consent log.
            new, suppressed = _apply_events(conn, [event], now, source="mailbox")
            soft = 0
            if event.kind in SOFT_BOUNCES and event.send_id and event.email:
                soft = _soft_bounced_sends(conn, event.send_id, now - soft_window)
                if soft >= soft_limit:
                    suppressed += suppression.add(
                        conn, event.email, "soft_bounce", now,
                        detail=f"{soft} sends soft-bounced within {soft_window.days} days (limit {soft_limit})",
                        source="bounce")
        except BaseException:
            transaction.rollback()
            raise
        if keep:
            transaction.commit()
        else:
            transaction.rollback()
    return BounceRecorded(new=new > 0, suppressed=suppressed > 0, soft_bounces=soft)


def _soft_bounced_sends(conn: sa.Connection, send_id: str, since: datetime) -> int:
    """How many sends to the member of `send_id`, sent since `since`, the bounce mailbox reported
    soft-bounced (a send reported several times counts once)."""
    s, t = sends_table, tracking_events_table
    member = sa.select(s.c.member_ref).where(s.c.send_id == send_id).scalar_subquery()
    query = (sa.select(sa.func.count(sa.distinct(s.c.send_id)))
             .join(t, t.c.send_id == s.c.send_id)
             .where(s.c.member_ref == member, s.c.sent_at >= since, t.c.source == "mailbox",
                    t.c.kind.in_(SOFT_BOUNCES)))
    return int(conn.execute(query).scalar_one())


def unsubscribe(engine: sa.Engine, send_id: str, now: datetime, source: str, topic: str | None = None,
                topics: Mapping[str, bool] | None = None, *, event_source: str | None = None
                ) -> dict[str, Any] | None:
    """The member a send went to leaves the email's `topic` (`topics`: every topic's default), or
    all email when `topic` is None, at once; the unsubscribe is a tracking event of the send
    (labelled `event_source`, default `source`) and the change is in the consent log, from
    `source` (consent.SOURCES). Returns the member (see `recipient`) or None when the send is
    unknown."""
    with db.writer(engine).begin() as conn:
        row = _recipient(conn, send_id)
        if row is None:
            return None
        detail = f"from send {send_id}"
        if topic is None:
            suppression.unsubscribe(conn, [row["email"]], now, detail=f"{source} {detail}", source=source)
        else:
            consent.set_topics(conn, {row["member_ref"]: {topic: False}}, topics or {topic: True},
                               source, now, detail=detail)
        conn.execute(tracking_events_table.insert().values(
            send_id=send_id, kind="unsubscribe", source=event_source or source, occurred_at=now, machine=False,
            bot=False, detail={"topic": topic} if topic else {}))
        return _recipient(conn, send_id)


def confirm(engine: sa.Engine, member_ref: int, now: datetime) -> bool:
    """Double opt-in: the member confirmed their address from the link in an email."""
    with db.writer(engine).begin() as conn:
        return consent.confirm(conn, member_ref, "link", now)


def recipient(engine: sa.Engine, send_id: str) -> dict[str, Any] | None:
    """Who a send went to: member_ref, email, locale, subscribed, paused_until, and the send's flow
    and occurrence (see `Settings.send_topic`)."""
    with engine.connect() as conn:
        return _recipient(conn, send_id)


def _recipient(conn: sa.Connection, send_id: str) -> dict[str, Any] | None:
    s, m = sends_table, members_table
    row = conn.execute(sa.select(m.c.id.label("member_ref"), m.c.email, m.c.locale, m.c.subscribed,
                                 m.c.paused_until, m.c.unconfirmed_since, s.c.flow, s.c.occurrence)
                       .join(s, s.c.member_ref == m.c.id).where(s.c.send_id == send_id)).mappings().first()
    return dict(row) if row else None


VIEWABLE = ("sending", "sent", "unknown")  # handed to the transport: the email exists


def sent_email(engine: sa.Engine, send_id: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """A send handed to the transport, and its member as stored (what delivery renders), or None."""
    s, m = sends_table, members_table
    with engine.connect() as conn:
        row = conn.execute(sa.select(s.c.template, s.c.flow, s.c.occurrence, s.c.state, s.c.sent_at,
                                     s.c.scheduled_for, *[c.label(f"m_{c.name}") for c in m.c])
                           .join(m, m.c.id == s.c.member_ref).where(s.c.send_id == send_id)).mappings().first()
    if row is None or row["state"] not in VIEWABLE:
        return None
    send = {k: v for k, v in row.items() if not k.startswith("m_")}
    return send, {k[2:]: v for k, v in row.items() if k.startswith("m_")}


def preferences(engine: sa.Engine, member_ref: int, topics: Mapping[str, bool]) -> consent.Preferences | None:
    with engine.connect() as conn:
        return consent.preferences(conn, member_ref, topics)


def save_preferences(engine: sa.Engine, member_ref: int, chosen: Mapping[str, bool], pause: str,
                     topics: Mapping[str, bool], now: datetime) -> None:
    """What the preference centre's form asked for: the topics `chosen`, and `pause` (keep: leave
    it as it is, resume: end it, or 30 / 90 days from `now`), logged as from the link."""
    with db.writer(engine).begin() as conn:
        consent.set_topics(conn, {member_ref: chosen}, topics, "link", now, detail="preference centre")
        if pause == "resume":
            consent.pause(conn, member_ref, None, "link", now)
        elif pause != "keep":
            consent.pause(conn, member_ref, int(pause), "link", now)


Clock = Callable[[], datetime]

"""The touched-members queue: members whose data just changed, for the daemon to plan at once.

The imports (files, and the HTTP API through them) add the members they changed in their own
transaction, so a queued member's data is committed with it, and on PostgreSQL send
`NOTIFY loyalty_mail_touched` in that transaction (delivered at commit). The planning daemon
waits on it (`LISTEN`; on SQLite a cheap look at the queue every `sending.wake.poll`), takes the
queue and plans only those members, through the same planner and ledger as its ticks. A member
taken but not planned (the daemon died in between) is planned by the next tick: the queue only
makes planning sooner, never decides what is sent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Protocol

import sqlalchemy as sa

from . import bulk
from .models import UTCDateTime, touched_members_table

CHANNEL = "loyalty_mail_touched"
TAKE_AT_MOST = 5_000  # members planned per wake-up; the rest wait for the next one
QUEUE_AT_MOST = 10_000  # an import touching more members (a bulk load) is planned by the next tick

log = logging.getLogger("loyalty_mail.touched")


def enqueue(connection: sa.Connection, members: sa.Select[Any] | Iterable[int], now: datetime,
            count: int | None = None) -> None:
    """Queue `members` (a SELECT of member ids, or the ids) inside the caller's transaction.
    `count` (how many there are, at most) above QUEUE_AT_MOST queues none: a bulk load is
    planned by the daemon's next tick, like any other data."""
    t = touched_members_table
    if count is not None and (count == 0 or count > QUEUE_AT_MOST):
        return
    if isinstance(members, sa.Select):
        connection.execute(t.insert().from_select(
            ["member_ref", "touched_at"],
            sa.select(members.subquery().c[0], sa.literal(now, UTCDateTime()))))
    else:
        refs = list(members)
        if not refs:
            return
        bulk.insert(connection, t, ("member_ref", "touched_at"), [(ref, now) for ref in refs])
    if connection.dialect.name == "postgresql":
        if connection.info.get(_DEFERRED):
            connection.info[_DUE] = True
        else:
            connection.execute(_NOTIFY)


@contextmanager
def one_notify(connection: sa.Connection) -> Iterator[None]:
    """PostgreSQL: the enqueues inside send one NOTIFY, at the end (a group writer's many
    requests in one transaction; the listener wakes once per commit anyway)."""
    connection.info[_DEFERRED] = True
    try:
        yield
        if connection.info.pop(_DUE, False):
            connection.execute(_NOTIFY)
    finally:
        connection.info.pop(_DEFERRED, None)
        connection.info.pop(_DUE, None)


_DEFERRED, _DUE = "loyalty_mail.touched.defer_notify", "loyalty_mail.touched.notify_due"
_NOTIFY = sa.select(sa.func.pg_notify(CHANNEL, ""))


def take(engine: sa.Engine, limit: int = TAKE_AT_MOST) -> list[int]:
    """Remove up to `limit` queued entries, oldest first, and return their members (each once)."""
    t = touched_members_table
    oldest = sa.select(t.c.id).order_by(t.c.id).limit(limit).scalar_subquery()
    with engine.begin() as conn:
        refs = conn.execute(t.delete().where(t.c.id.in_(oldest)).returning(t.c.member_ref)).scalars().all()
    return sorted(set(refs))


def latest(engine: sa.Engine) -> int:
    """The newest entry's id (0 when the queue is empty): a mark for `forget`."""
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(touched_members_table.c.id), 0)))
                   .scalar_one())


def forget(engine: sa.Engine, up_to: int) -> None:
    """Drop the entries up to `up_to`: a tick that planned every member has covered them."""
    if up_to:
        with engine.begin() as conn:
            conn.execute(touched_members_table.delete().where(touched_members_table.c.id <= up_to))


class Waiter(Protocol):
    """Blocks until members may have been queued, or `timeout` seconds pass."""

    def wait(self, timeout: float) -> bool: ...

    def close(self) -> None: ...


class PollingWaiter:
    """SQLite: read the queue's newest id every `poll` seconds (one primary-key probe); a change
    means new entries. So a daemon that does not take them (a standby) is not woken again and
    again by entries the planning daemon has yet to take."""

    def __init__(self, engine: sa.Engine, poll: float) -> None:
        self.engine, self.poll = engine, poll
        self.probe = sa.select(sa.func.max(touched_members_table.c.id))
        self.seen: int | None = None

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            with self.engine.connect() as conn:
                newest = conn.execute(self.probe).scalar_one()
            changed, self.seen = newest is not None and newest != self.seen, newest
            if changed:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(self.poll, left))

    def close(self) -> None:
        pass


class ListeningWaiter:
    """PostgreSQL: `LISTEN loyalty_mail_touched` on a connection of its own; the queue is looked at
    once at start and after every reconnection, so nothing queued while it was not listening
    waits for a tick."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.connection: Any = None
        self.backlog = True

    def _listen(self) -> Any:
        import psycopg
        if self.connection is None or self.connection.closed:
            self.connection = psycopg.connect(self.url, autocommit=True)
            self.connection.execute(f"LISTEN {CHANNEL}")
            self.backlog = True
        return self.connection

    def wait(self, timeout: float) -> bool:
        import psycopg
        try:
            connection = self._listen()
            if self.backlog:
                self.backlog = False
                return True
            for _ in connection.notifies(timeout=timeout, stop_after=1):
                return True
            return False
        except psycopg.OperationalError as exc:
            log.warning("listening for new data failed (%s); trying again", exc)
            self.close()
            time.sleep(min(timeout, 1.0))
            return False

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def waiter_for(engine: sa.Engine, poll: float) -> Waiter:
    return ListeningWaiter(engine) if engine.dialect.name == "postgresql" else PollingWaiter(engine, poll)

"""Group commit: one thread writes for every request, many requests a transaction.

Requests that arrive while a transaction is being written wait in a queue; the writer takes all
of them (up to MAX_GROUP) into the next transaction, each in a SAVEPOINT of its own, commits once,
and only then answers each. So every answer still follows its commit (a 2xx is durable), a
request's failure (bad items when all-or-nothing, a bug) rolls back its savepoint and is that
request's answer alone, and the database sees one writer and one commit for a whole group instead
of a queue of transactions taking turns on the write lock. When the transaction itself fails (the
database is down, or busy past its timeout), every request of the group gets that error, and
none of its work is stored.

The thread starts with the first request and ends after IDLE_S without one; a request may come
from any event loop (the answer is handed back on the request's own loop).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import sqlalchemy as sa

from .. import db, touched

T = TypeVar("T")
# Requests in one transaction; more wait for the next. PostgreSQL keeps the ids of at most 64
# subtransactions (savepoints that wrote) of a transaction in shared memory; past that, other
# sessions' snapshots look them up on disk.
MAX_GROUP = 32
IDLE_S = 5.0
ATTEMPTS = 3  # a unique key raced by another process's transaction: the retry sees its row

log = logging.getLogger("loyalty_mail.api")


class Transaction:
    """What the requests of one group share: the connection, and what is read once for all of them."""

    def __init__(self, connection: sa.Connection):
        self.connection = connection
        self._read: dict[Hashable, Any] = {}
        self._savepoint_open = False
        # PostgreSQL takes the release of one request's savepoint and the next one's in one round trip
        self._joined = connection.dialect.name == "postgresql"

    def read_once(self, key: Hashable, read: Callable[[sa.Connection], T]) -> T:
        """`read(connection)`, asked once a transaction for each `key` (it must write nothing)."""
        if key not in self._read:
            self._read[key] = read(self.connection)
        value: T = self._read[key]
        return value

    # Plain SAVEPOINT statements: SQLAlchemy's begin_nested() compiles its statements afresh
    # every time, which costs more than the savepoint itself. A request's work never ends the
    # transaction; its savepoint is released with the next one's, or by the COMMIT.

    def _savepoint(self) -> None:
        if self._savepoint_open and self._joined:
            self.connection.exec_driver_sql("RELEASE SAVEPOINT lm_request; SAVEPOINT lm_request")
        else:
            if self._savepoint_open:
                self.connection.exec_driver_sql("RELEASE SAVEPOINT lm_request")
            self.connection.exec_driver_sql("SAVEPOINT lm_request")
        self._savepoint_open = True

    def _roll_back(self) -> None:
        self.connection.exec_driver_sql("ROLLBACK TO SAVEPOINT lm_request")


@dataclass
class _Request(Generic[T]):
    work: Callable[[Transaction], T]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[T]
    value: Any = None
    error: BaseException | None = field(default=None)


class GroupWriter:
    """Runs `work(transaction)` for each request in a shared transaction; see the module docstring."""

    def __init__(self, engine: sa.Engine, max_group: int = MAX_GROUP, idle_s: float = IDLE_S):
        self.engine = engine
        self.max_group, self.idle_s = max_group, idle_s
        self._queue: queue.SimpleQueue[_Request[Any] | None] = queue.SimpleQueue()  # None: close
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.groups = 0  # transactions committed or attempted, for tests and benchmarks

    async def run(self, work: Callable[[Transaction], T]) -> T:
        """`work`'s value once the transaction it ran in has committed; its exception otherwise."""
        loop = asyncio.get_running_loop()
        request: _Request[T] = _Request(work, loop, loop.create_future())
        with self._lock:
            self._queue.put(request)
            if self._thread is None:
                # SQLite: the thread's commits leave the write-ahead log to a checkpoint thread
                # (db.WalCheckpointer), which lives as long as this thread
                checkpoints = db.WalCheckpointer.for_file(self.engine)
                engine = db.writer(self.engine if checkpoints is None else checkpoints.writer)
                self._thread = threading.Thread(target=self._serve, args=(engine, checkpoints),
                                                name="loyalty-mail-writer", daemon=True)
                self._thread.start()
        return await request.future

    def queued(self) -> int:
        """Requests waiting for a transaction (not counting those being written)."""
        return self._queue.qsize()

    def close(self, timeout: float = 30) -> None:
        """Write and answer the requests queued so far, and end the thread (up to `timeout` s)."""
        with self._lock:
            thread = self._thread
            self._queue.put(None)
        if thread is not None:
            thread.join(timeout)

    def _serve(self, engine: sa.Engine, checkpoints: db.WalCheckpointer | None) -> None:
        try:
            self._take_groups(engine, checkpoints)
        finally:
            if checkpoints is not None:
                checkpoints.close()

    def _take_groups(self, engine: sa.Engine, checkpoints: db.WalCheckpointer | None) -> None:
        while True:
            try:
                first = self._queue.get(timeout=self.idle_s)
            except queue.Empty:
                first = None
            if first is None:  # idle, or asked to close
                with self._lock:  # a request is queued under the lock, so none is left behind here
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            group = [first]
            while len(group) < self.max_group:
                try:
                    request = self._queue.get_nowait()
                except queue.Empty:
                    break
                if request is not None:
                    group.append(request)
            self._write(group, engine)
            _answer(group)
            if checkpoints is not None:
                checkpoints.between_transactions()

    def _write(self, group: list[_Request[Any]], engine: sa.Engine) -> None:
        self.groups += 1
        try:
            with engine.connect() as conn, conn.begin(), touched.one_notify(conn):
                transaction = Transaction(conn)
                for request in group:
                    _run_in_savepoint(transaction, request)
        except BaseException as exc:  # noqa: BLE001 - the group's transaction failed: each request's answer
            for request in group:
                if request.error is None:
                    request.error = exc


def _run_in_savepoint(transaction: Transaction, request: _Request[Any]) -> None:
    for attempt in range(ATTEMPTS):
        transaction._savepoint()
        try:
            request.value = request.work(transaction)
        except sa.exc.IntegrityError as exc:
            transaction._roll_back()
            if attempt == ATTEMPTS - 1:
                request.error = exc
        except Exception as exc:  # noqa: BLE001 - this request's answer; the others go on
            transaction._roll_back()
            request.error = exc
            return
        else:
            return


def _answer(group: list[_Request[Any]]) -> None:
    """Hand each request its answer on its own event loop: one wake-up of each loop a group."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Request[Any]]] = {}
    for request in group:
        by_loop.setdefault(request.loop, []).append(request)
    for loop, requests in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, requests)
        except RuntimeError:  # that event loop is closed: nobody is waiting for these answers
            log.debug("%d answers for a closed event loop were dropped", len(requests))


def _settle(requests: list[_Request[Any]]) -> None:
    for request in requests:
        if request.future.done():  # the client went away and its request was cancelled
            continue
        if request.error is not None:
            request.future.set_exception(request.error)
        else:
            request.future.set_result(request.value)

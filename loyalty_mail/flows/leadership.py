"""Exactly one planner at a time, any number of dispatchers.

APScheduler 3 must not share a job store between processes, so daemons do not coordinate through
it. Instead the planner tick runs only in the daemon that holds the planner lock: a PostgreSQL
session advisory lock (held on a connection of its own; released by the server the moment that
process dies), or on SQLite an exclusive `flock` on a file beside the database. The other daemons
are hot standbys: they dispatch, and try the lock again every tick, so one takes over within a tick.
"""

from __future__ import annotations

import fcntl
import logging
from pathlib import Path
from typing import IO

import sqlalchemy as sa

log = logging.getLogger("loyalty_mail.daemon")
ADVISORY_KEY = 0x4C4D504C  # "LMPL": loyalty-mail planner


class PlannerLock:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._connection: sa.Connection | None = None
        self._file: IO[bytes] | None = None
        self.held = False

    def try_acquire(self) -> bool:
        """True when this process is (or has just become) the planner."""
        if self.held:
            return True
        if self.engine.dialect.name == "postgresql":
            connection = self._connection or self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            self._connection = connection
            self.held = bool(connection.execute(sa.text("SELECT pg_try_advisory_lock(:key)"),
                                                {"key": ADVISORY_KEY}).scalar())
        else:
            path = Path(self.engine.url.database or "loyalty_mail.db").with_suffix(".planner.lock")
            self._file = self._file or open(path, "wb")  # noqa: SIM115 - held for the process's life
            try:
                fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.held = True
            except BlockingIOError:
                self.held = False
        if self.held:
            log.info("this daemon is the planner")
        return self.held

    def release(self) -> None:
        if self._connection is not None:
            if self.held:
                self._connection.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_KEY})
            self._connection.close()
            self._connection = None
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None
        self.held = False

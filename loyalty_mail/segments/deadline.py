"""A time limit for one segment query: past it the database stops the query and the caller gets
SegmentTimeout. PostgreSQL enforces `statement_timeout` on the server (SET LOCAL, for this
transaction only), so the query stops there even if the client has gone; SQLite calls a progress
handler every few thousand instructions, which interrupts the query after the deadline.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from ..errors import SegmentTimeout

QUERY_CANCELED = "57014"  # PostgreSQL's SQLSTATE for a statement stopped by statement_timeout
SQLITE_CHECK_EVERY = 10_000  # virtual machine instructions between two looks at the clock


@contextmanager
def time_limit(connection: sa.Connection, seconds: float | None, segment: str) -> Iterator[None]:
    """Run the block's statements on `connection` for at most `seconds` (None: no limit)."""
    if seconds is None:
        yield
        return
    dialect = connection.dialect.name
    try:
        if dialect == "postgresql":
            with _postgres_limit(connection, seconds):
                yield
        elif dialect == "sqlite":
            with _sqlite_limit(connection, seconds):
                yield
        else:
            yield
    except sa.exc.OperationalError as exc:
        if not _stopped(exc):
            raise
        raise SegmentTimeout(
            f"segment '{segment}' took longer than {seconds:g} s and was stopped; narrow it (a shorter "
            "within: on event conditions, fewer event conditions) or raise segments.timeout in "
            "config.yaml") from None


@contextmanager
def _postgres_limit(connection: sa.Connection, seconds: float) -> Iterator[None]:
    milliseconds = max(1, round(seconds * 1000))
    connection.exec_driver_sql(f"SET LOCAL statement_timeout = {milliseconds:d}")
    yield
    connection.exec_driver_sql("SET LOCAL statement_timeout TO DEFAULT")


@contextmanager
def _sqlite_limit(connection: sa.Connection, seconds: float) -> Iterator[None]:
    raw: Any = connection.connection.driver_connection
    deadline = time.monotonic() + seconds
    raw.set_progress_handler(lambda: int(time.monotonic() > deadline), SQLITE_CHECK_EVERY)
    try:
        yield
    finally:
        raw.set_progress_handler(None, 0)


def _stopped(exc: sa.exc.OperationalError) -> bool:
    """Was this error the time limit stopping the query?"""
    original = exc.orig
    if getattr(original, "sqlstate", None) == QUERY_CANCELED:
        return True
    return original.__class__.__module__ == "sqlite3" and "interrupted" in str(original)

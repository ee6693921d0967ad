"""Engine factory and schema management for SQLite and PostgreSQL.

SQLite is tuned for one writer and many readers (WAL, synchronous=NORMAL, a busy timeout);
PostgreSQL connections are checked before use. The schema is created and upgraded only through
the Alembic migrations, so a database made today can be upgraded tomorrow.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url

from .errors import DatabaseError

SQLITE_BUSY_TIMEOUT_S = 30
WAL_RESTART_PAGES = 16_384  # a service's write-ahead log starts over once it holds 64 MB (4 KB pages)
SQLITE_MMAP_BYTES = 1 << 31  # 2 GiB, SQLite's default ceiling; larger files read the rest as usual
# json.dumps(value, ensure_ascii=False) without building an encoder for every value (half its time)
_json_serializer = json.JSONEncoder(ensure_ascii=False).encode


def resolve_url(url: str, project_dir: Path) -> str:
    """Make a relative SQLite path relative to the project directory, not the shell's."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        path = Path(parsed.database)
        if not path.is_absolute():
            parsed = parsed.set(database=str((project_dir / path).resolve()))
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def display_url(url: str) -> str:
    """The URL with any password masked, for messages and logs."""
    return make_url(url).render_as_string(hide_password=True)


def create_db_engine(url: str) -> sa.Engine:
    """An engine for `url` with the settings loyalty-mail relies on. Its errors and logs never
    show a statement's parameters: they hold members' personal data."""
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError:
        raise DatabaseError(
            f"'{url}' is not a database URL (expected e.g. sqlite:///loyalty_mail.db or "
            "postgresql://user@host/dbname)"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S},
                                  json_serializer=_json_serializer, hide_parameters=True)
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own transaction handling defers BEGIN; emit it ourselves so that a
        # transaction really spans every statement in it (see SQLAlchemy's pysqlite notes).
        sa.event.listen(engine, "begin", _sqlite_begin)
        return engine
    if backend == "postgresql":
        try:
            engine = sa.create_engine(url, pool_pre_ping=True, json_serializer=_json_serializer,
                                      hide_parameters=True)
        except ModuleNotFoundError as exc:
            raise DatabaseError(f"the PostgreSQL driver is missing ({exc.name}): pip install 'psycopg[binary]'") from None
        sa.event.listen(engine, "connect", _postgres_session)
        return engine
    raise DatabaseError(f"unsupported database '{backend}' in {display_url(url)} (use sqlite or postgresql)")


def _postgres_session(dbapi_connection: Any, _record: Any) -> None:
    """Settings for loyalty-mail's own sessions (nothing server-wide):

    jit off             JIT compiling pays off for queries running for seconds; segment and planner
                        queries run for a fraction of one, and its ~0.2 s of compiling (198 ms of
                        1,052 on lapsed_vip at 1,000,000 members) made them slower.
    force_custom_plan   psycopg prepares a statement after 5 runs, and PostgreSQL may then keep a
                        generic plan made while a table was small. A tick that records 100,000
                        sends while it plans asked `sends` 400 times with a plan made when it was
                        empty: a sequential scan each time, 159 s instead of 13 s of planning.
    """
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SET jit = off")
        cursor.execute("SET plan_cache_mode = force_custom_plan")
    dbapi_connection.commit()


def insert_ignoring_duplicates(table: sa.Table, dialect: str) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING for this dialect: a row whose unique key exists is skipped."""
    from sqlalchemy.dialects import postgresql, sqlite

    return (postgresql if dialect == "postgresql" else sqlite).insert(table).on_conflict_do_nothing()


def upsert(table: sa.Table, dialect: str, keys: Sequence[str], update: Sequence[str]) -> Any:
    """INSERT ... ON CONFLICT (keys) DO UPDATE SET each of `update` to the new row's value, for this
    dialect: a row that exists (or was inserted meanwhile by another transaction) is updated."""
    from sqlalchemy.dialects import postgresql, sqlite

    statement = (postgresql if dialect == "postgresql" else sqlite).insert(table)
    return statement.on_conflict_do_update(index_elements=list(keys),
                                           set_={name: statement.excluded[name] for name in update})


def _sqlite_begin(conn: sa.Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("writer") else "BEGIN")


def writer(engine: sa.Engine) -> sa.Engine:
    """The engine for a transaction that reads, then writes. On SQLite it takes the write lock at
    BEGIN (IMMEDIATE), waiting its turn under the busy timeout; a plain BEGIN that reads first would
    get "database is locked" at once when another process has written meanwhile (WAL snapshots)."""
    return engine.execution_options(writer=True)


# Jobs that read members' state, then write what follows from it: two at once (a command by hand
# during a daemon's tick) would both act on what they read. Each holds its lock for its transaction.
EXPIRY_LOCK = 0x4C4D5058  # "LMPX": the points expiry job
REVIEW_LOCK = 0x4C4D5452  # "LMTR": the tier review


def serialized(connection: sa.Connection, key: int) -> None:
    """On PostgreSQL, wait for the transaction lock `key` and hold it until this transaction ends,
    so that a second job reads only once the first has committed. SQLite needs none: a writer
    transaction (`writer`) holds the database's one write lock from BEGIN."""
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


@contextmanager
def exclusive(engine: sa.Engine, key: int) -> Iterator[sa.Connection]:
    """A writer transaction holding the lock `key` (see `serialized`), committed at the end of the
    block (rolled back on an error)."""
    with writer(engine).begin() as connection:
        serialized(connection, key)
        yield connection


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # we emit BEGIN ourselves (see create_db_engine)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
    # Helper threads for SQLite's sorter (off by default): index builds after a bulk import
    # (3.6-4.4 s -> 3.1-3.3 s for 1,000,000 members) and grouped segments (frequent_buyers
    # 0.188 -> 0.166 s) sort faster; nothing else changes.
    cursor.execute(f"PRAGMA threads={min(4, usable_cores())}")
    # Reads straight from the operating system's page cache instead of copying each page into
    # SQLite's own 2 MB cache: segment scans over 1,000,000 members touch hundreds of MB
    # (lapsed_vip 0.299 -> 0.263-0.266 s). The mapping is address space over the same cached pages
    # for every connection; the price: a disk read error ends the process instead of raising.
    cursor.execute(f"PRAGMA mmap_size={SQLITE_MMAP_BYTES}")
    cursor.close()


def usable_cores() -> int:
    """How many cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _alembic_config(connection: sa.Connection) -> AlembicConfig:
    # Alembic narrates each step at INFO; callers report before and after themselves, and a
    # server's log (the API's, the daemon's) should not start with migration chatter.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    """The newest schema revision this version of loyalty-mail knows."""
    script = ScriptDirectory(str(Path(__file__).parent / "migrations"))
    head = script.get_current_head()
    assert head is not None, "migrations folder has no revisions"
    return head


def current_revision(engine: sa.Engine) -> str | None:
    """The database's schema revision; None for an empty database."""
    with _connect(engine) as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: sa.Engine, revision: str = "head") -> tuple[str | None, str]:
    """Apply migrations up to `revision`; returns (before, after)."""
    before = current_revision(engine)
    with _connect(engine) as connection, connection.begin():
        command.upgrade(_alembic_config(connection), revision)
    return before, current_revision(engine) or ""


def downgrade(engine: sa.Engine, revision: str) -> tuple[str | None, str]:
    """Revert migrations down to `revision` ("base" empties the schema); returns (before, after)."""
    before = current_revision(engine)
    with _connect(engine) as connection, connection.begin():
        command.downgrade(_alembic_config(connection), revision)
    return before, current_revision(engine) or ""


def ensure_schema(engine: sa.Engine, *, create_if_empty: bool = True) -> None:
    """Make sure the schema is current: create it in an empty database, refuse an outdated one."""
    revision = current_revision(engine)
    head = head_revision()
    if revision == head:
        return
    if revision is None and create_if_empty:
        if _has_foreign_tables(engine):
            raise DatabaseError(
                f"{display_url(str(engine.url))} already holds tables that are not loyalty-mail's. "
                "Point LOYALTY_MAIL_DATABASE_URL at an empty database."
            )
        upgrade(engine)
        return
    raise DatabaseError(
        f"the database schema is at revision {revision or 'none'}, this version of loyalty-mail "
        f"needs {head}. Run `loyalty-mail db upgrade` (back up the database first)."
    )


def _has_foreign_tables(engine: sa.Engine) -> bool:
    with _connect(engine) as connection:
        names = set(sa.inspect(connection).get_table_names())
    return bool(names - {"alembic_version"})


def _connect(engine: sa.Engine) -> sa.Connection:
    try:
        return engine.connect()
    except sa.exc.OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseError(f"cannot open the database {display_url(str(engine.url))}: {reason}") from None


def describe_error(exc: Exception) -> str:
    """The error's type and message; for a database error, the driver's first line only: never
    the statement or its parameters, which may hold members' personal data."""
    if isinstance(exc, sa.exc.StatementError) and exc.orig is not None:
        lines = str(exc.orig).strip().splitlines()
        return f"{type(exc).__name__} ({type(exc.orig).__name__}): {lines[0] if lines else ''}"
    return f"{type(exc).__name__}: {exc}"


class WalCheckpointer:
    """SQLite: a service's group writer (tracking hits, API writes) never copies the write-ahead
    log back into the database inside a commit.

    By default the connection whose commit takes the log past 1,000 pages does that copy, and its
    fsyncs, before its commit returns: every few hundred commits one group waited 10-30 ms longer,
    and the requests queued behind it too. Here the writer's connections have the automatic
    checkpoint off (`writer`, an engine of their own) and this thread checkpoints (PASSIVE: it
    never blocks a writer) every `every` seconds, on a connection of the service's engine, and once
    more at close.

    A passive checkpoint copies the frames committed when it started; SQLite writes the log from
    its beginning again only when a writer starts after a checkpoint that copied every frame. A
    writer that never pauses (a steady stream of API batches) always has newer frames, so the log
    grew without end (2.2 GB within 90 s of steady API batches), and its index (`-shm`, mapped
    into the process) with it. So once the log holds `restart_pages` pages, the writer's thread cuts
    it back to nothing between two of its transactions (`between_transactions`)."""

    def __init__(self, engine: sa.Engine, every: float = 0.25, restart_pages: int = WAL_RESTART_PAGES) -> None:
        self.engine, self.every = engine, every
        self.writer = create_db_engine(engine.url.render_as_string(hide_password=False))
        sa.event.listen(self.writer, "connect", _without_automatic_checkpoints)
        self._stop = threading.Event()
        self._log = Path(f"{engine.url.database}-wal")
        self._log_limit = restart_pages * 4096
        self._thread = threading.Thread(target=self._run, name="wal-checkpoints", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.checkpoint()

    def checkpoint(self) -> None:
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
        except sa.exc.SQLAlchemyError as exc:  # the next one copies what this one could not
            logging.getLogger("loyalty_mail.db").warning("checkpointing the write-ahead log failed: %s", type(exc).__name__)

    def between_transactions(self) -> None:
        """Called by the writer's thread after each of its commits: once the log's file holds
        `restart_pages`, copy what is left of it and cut it back to nothing (TRUNCATE) here, where
        no transaction of this service's writer is in the way (a RESTART from another connection
        mostly times out against a writer that starts its next group at once: the log then reached
        hundreds of MB). It does not wait: while a reader still reads from the log, the writer goes
        on and tries again after its next commit."""
        try:
            if self._log.stat().st_size < self._log_limit:
                return
        except OSError:
            return
        try:
            with self.writer.connect() as conn:
                conn.exec_driver_sql("PRAGMA busy_timeout=0")
                try:
                    conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
                finally:
                    conn.exec_driver_sql(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
        except sa.exc.SQLAlchemyError as exc:  # the next commit tries again
            logging.getLogger("loyalty_mail.db").warning("restarting the write-ahead log failed: %s", type(exc).__name__)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.writer.dispose()
        self.checkpoint()

    @classmethod
    def for_file(cls, engine: sa.Engine) -> WalCheckpointer | None:
        """One for a SQLite file's engine; None for other databases (they checkpoint apart)."""
        if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
            return cls(engine)
        return None


def _without_automatic_checkpoints(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute("PRAGMA wal_autocheckpoint=0")

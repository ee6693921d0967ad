"""A big CSV staged by several processes at once, for an import into SQLite.

Validating rows is Python work that holds the GIL, so using a second core takes a second
process. Each worker reads the whole file (a CSV cannot be cut at a byte offset: a quoted cell
may hold a line break) but validates only its share of the batches, batch i going to worker
i % count, and writes the staging rows into a scratch SQLite file of its own. The importing
connection then attaches the scratch files and copies their rows into its staging table inside
the import's transaction, so all-or-nothing holds as before. While the workers run, this
process only reports progress and collects the rows they rejected.

Workers are forked (Linux): they start at once with everything imported, and a caller's script
needs no `__main__` guard. They touch nothing they inherit but what they are given, and leave
with os._exit, so inherited database connections stay untouched.
"""

from __future__ import annotations

import gc
import multiprocessing
import queue
import shutil
import sqlite3
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite as sqlite_dialects

from ..db import usable_cores
from ..errors import InputFileError, LoyaltyMailError
from .batch import Rejects
from .readers import CsvBatch, InputFile, SourceRow

if TYPE_CHECKING:
    from multiprocessing.queues import Queue

# Below this size a file is validated in the importing process: workers would not repay the
# second reading of the file they each do.
MIN_BYTES = 8 << 20
_PREFIX = "lm_part_"


class Stager(Protocol):
    """Turns source rows into staging rows ready for the driver; bad ones go to `rejects`."""

    def batch(self, batch: CsvBatch, rejects: Rejects) -> list[tuple[Any, ...]]: ...

    def rows(self, rows: Iterable[SourceRow], rejects: Rejects) -> list[tuple[Any, ...]]: ...


@dataclass
class StagedParts:
    """What the workers staged: their scratch files, the rows they read and those they rejected."""

    table: sa.Table
    paths: list[Path]
    rows_read: int = 0
    rejects: Rejects = field(default_factory=Rejects)

    def copy_into_staging(self, connection: sa.Connection) -> None:
        """Copy the staged rows into `table` (attached by `attached`), in SQL."""
        for i in range(len(self.paths)):
            connection.exec_driver_sql(
                f"INSERT INTO temp.{self.table.name} SELECT * FROM {_PREFIX}{i}.{self.table.name}")


def worth_it(engine: sa.Engine, input_file: InputFile, workers: int | None) -> bool:
    """Whether to stage `input_file` in worker processes (`workers` None: decide by machine)."""
    if engine.dialect.name != "sqlite" or input_file.format != "csv" or sys.platform != "linux":
        return False
    count = usable_cores() if workers is None else workers
    return count >= 2 and input_file.size >= MIN_BYTES


@contextmanager
def staged_by_workers(input_file: InputFile, make_stager: Callable[[], Stager], table: sa.Table,
                      count: int | None = None, on_bytes: Callable[[int], None] | None = None,
                      ) -> Iterator[StagedParts]:
    """Run `count` workers over `input_file`; yield their StagedParts; then remove the scratch files."""
    count = count or usable_cores()
    try:
        scratch = Path(tempfile.mkdtemp(prefix="loyalty-mail-import-"))
    except OSError as exc:
        raise LoyaltyMailError(_no_scratch(tempfile.gettempdir(), exc)) from None
    parts = StagedParts(table, [scratch / f"part{i}.db" for i in range(count)])
    context = multiprocessing.get_context("fork")
    messages: Queue[tuple[str, Any]] = context.Queue()
    ddl = str(sa.schema.CreateTable(table).compile(dialect=sqlite_dialects.dialect()))
    ddl = ddl.replace("CREATE TEMPORARY TABLE", "CREATE TABLE", 1)
    workers = [context.Process(target=_work, daemon=True, name=f"loyalty-mail import worker {i}",
                               args=(i, count, input_file, make_stager, ddl, table, parts.paths[i], messages))
               for i in range(count)]
    try:
        for worker in workers:
            worker.start()
        finished = 0
        while finished < count:
            try:
                kind, payload = messages.get(timeout=0.5)
            except queue.Empty:
                for worker in workers:
                    if worker.exitcode not in (None, 0):  # killed: by the OOM killer, say
                        raise LoyaltyMailError(
                            f"{worker.name} stopped unexpectedly (exit code {worker.exitcode}); nothing was "
                            "imported. Try again with --workers 0 to import in this process.") from None
                continue
            if kind == "bytes" and on_bytes:
                on_bytes(payload)
            elif kind == "rejects":
                for row_no, problems in payload:
                    parts.rejects.extend(row_no, problems)
            elif kind == "done":
                parts.rows_read += payload
                finished += 1
            elif kind == "error":
                raise payload
        for worker in workers:
            worker.join()
        yield parts
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
                worker.join()
        messages.close()
        shutil.rmtree(scratch, ignore_errors=True)


@contextmanager
def attached(connection: sa.Connection, rows: object) -> Iterator[None]:
    """Attach the scratch files of `rows` (if it is a StagedParts) for the connection's next
    transaction; SQLite detaches only outside a transaction, so this wraps the transaction."""
    if not isinstance(rows, StagedParts):
        yield
        return
    raw = connection.connection.dbapi_connection
    assert raw is not None
    for i, path in enumerate(rows.paths):
        raw.execute(f"ATTACH DATABASE ? AS {_PREFIX}{i}", (str(path),))
    try:
        yield
    finally:
        try:
            for i in range(len(rows.paths)):
                raw.execute(f"DETACH DATABASE {_PREFIX}{i}")
        except sqlite3.Error:
            connection.invalidate()  # the pool must not hand out a connection still attached


def _work(index: int, count: int, input_file: InputFile, make_stager: Callable[[], Stager], ddl: str,
          table: sa.Table, path: Path, messages: Queue[tuple[str, Any]]) -> None:
    """One worker: stage batches index, index + count, ... of the file into `path`."""
    gc.disable()  # see batch.collection_paused; a worker lives for one import
    try:
        stager = make_stager()
        scratch = sqlite3.connect(path, isolation_level=None)
        scratch.execute("PRAGMA journal_mode=OFF")  # a scratch file: nothing to recover
        scratch.execute("PRAGMA synchronous=OFF")
        scratch.execute(ddl)
        scratch.execute("BEGIN")
        insert = f"INSERT INTO {table.name} VALUES ({', '.join('?' * len(table.columns))})"
        read = rows_read = batch_no = 0

        def count_bytes(n: int) -> None:
            nonlocal read
            read += n

        for item in input_file.batches(count_bytes if index == 0 else None):
            rejects = Rejects()
            if isinstance(item, CsvBatch):
                mine, batch_no = batch_no % count == index, batch_no + 1
                if mine:
                    rows_read += len(item.numbers)
                    scratch.executemany(insert, stager.batch(item, rejects))
            elif index == 0:  # a row the reader could not split right: worker 0 reports them all
                rows_read += 1
                scratch.executemany(insert, stager.rows((item,), rejects))
            if rejects.by_row:
                messages.put(("rejects", list(rejects.by_row.items())))
            if read:
                messages.put(("bytes", read))
                read = 0
        scratch.execute("COMMIT")
        scratch.close()
        messages.put(("done", rows_read))
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the importing process
        if isinstance(exc, InputFileError):
            failure: BaseException = exc
        elif isinstance(exc, sqlite3.Error):  # the scratch file is the only database a worker uses
            failure = LoyaltyMailError(_no_scratch(str(path.parent), exc))
        elif isinstance(exc, OSError):
            failure = InputFileError(f"{input_file.path}: could not be read ({exc})")
        else:
            failure = RuntimeError(f"import worker {index}: {type(exc).__name__}: {exc}")
        messages.put(("error", failure))


def _no_scratch(folder: str, exc: BaseException) -> str:
    return (f"the import's scratch files in {folder} could not be written ({exc}); free some space "
            "there, point TMPDIR at a roomier folder, or import with --workers 0 (nothing was imported)")

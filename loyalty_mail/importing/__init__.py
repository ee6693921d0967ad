"""Member and event import: from a file (or generated rows) to the database, all or nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from .. import db
from ..config import Settings
from ..errors import ColumnRefused, InputFileError, LoyaltyMailError
from . import partitioned
from .batch import ImportSummary, Rejects, collection_paused
from .events import import_events
from .members import STAGING as MEMBERS_STAGING
from .members import MemberStaging, import_members
from .partitioned import StagedParts
from .pending import PendingFile
from .readers import CsvBatch, InputFile, SourceRow

__all__ = ["ImportSummary", "InputFile", "import_file", "import_rows"]

# Each importer takes the row shapes it reads (only the members one takes batches and staged parts).
_KINDS: dict[str, Callable[..., tuple[ImportSummary, Rejects]]] = {"members": import_members,
                                                                   "events": import_events}
_BY_COLUMN = {"members"}  # importers that take CSV records in batches (see readers.CsvBatch)


def import_rows(
    engine: sa.Engine,
    settings: Settings,
    kind: str,
    rows: Iterable[SourceRow | CsvBatch] | StagedParts,
    *,
    source: str,
    now: datetime,
    skip_invalid: bool = False,
    before_commit: Callable[[ImportSummary, Rejects], None] | None = None,
) -> tuple[ImportSummary, Rejects]:
    """Import `kind` ("members" or "events") rows in one transaction: all of it lands, or none.

    `before_commit` runs last inside the transaction: if it raises, nothing is imported."""
    run = _KINDS[kind]
    with db.writer(engine).connect() as connection, partitioned.attached(connection, rows):
        with connection.begin(), collection_paused():
            summary, rejects = run(connection, settings, rows, source=source, now=now,
                                   skip_invalid=skip_invalid)
            if before_commit is not None:
                before_commit(summary, rejects)
            return summary, rejects


def import_file(
    engine: sa.Engine,
    settings: Settings,
    kind: str,
    input_file: InputFile,
    *,
    now: datetime,
    skip_invalid: bool = False,
    rejects_path: Path | None = None,
    on_bytes: Callable[[int], None] | None = None,
    workers: int | None = None,
) -> ImportSummary:
    """Import a CSV or JSON Lines file; with skip_invalid, bad rows go to `rejects_path`.

    The rejects file is written inside the import's transaction and put in place once it commits:
    an import that fails leaves none, and one that succeeds leaves all of its rejected rows.
    A big members CSV going into SQLite is validated by `workers` processes (default: one per
    core; below 2, or for a small file, by this one): see partitioned.py.
    """
    options: dict[str, Any] = {"source": str(input_file.path), "now": now, "skip_invalid": skip_invalid}
    rejects_file = PendingFile(_rejects_target(rejects_path, input_file.path))

    def write_rejects(summary: ImportSummary, rejects: Rejects) -> None:
        if not len(rejects):
            return
        try:
            with rejects_file.writing() as out:
                rejects.write(out, input_file.rows(), str(input_file.path))
        except OSError as exc:
            raise LoyaltyMailError(f"cannot write the rejects file {rejects_file.path} ({exc.strerror}); "
                                   "nothing was imported. Choose another place with --rejects.") from None
        summary.rejects_file = rejects_file.path

    options["before_commit"] = write_rejects
    try:
        if kind in _BY_COLUMN and partitioned.worth_it(engine, input_file, workers):
            stager = partial(MemberStaging, settings, engine.dialect, now)
            with partitioned.staged_by_workers(input_file, stager, MEMBERS_STAGING, workers, on_bytes) as parts:
                summary, _ = import_rows(engine, settings, kind, parts, **options)
        else:
            rows = input_file.batches(on_bytes) if kind in _BY_COLUMN else input_file.rows(on_bytes)
            summary, _ = import_rows(engine, settings, kind, rows, **options)
        rejects_file.publish()
    except ColumnRefused as exc:
        raise InputFileError(f"{input_file.path}: {exc}") from None
    finally:
        rejects_file.discard()
    return summary


def _rejects_target(given: Path | None, source: Path) -> Path:
    """Where the rejects go: beside the input unless given; never the input itself nor anything
    that is not a regular file (the file is replaced whole when the import commits)."""
    target = given or source.with_name(source.stem + ".rejects.csv")
    if target.exists() or target.is_symlink():
        if not target.is_file() or target.is_symlink():
            raise LoyaltyMailError(f"the rejects file {target} exists and is not a regular file; nothing was "
                                   "imported. Choose a new file name with --rejects.")
        if target.resolve() == source.resolve():
            raise LoyaltyMailError(f"the rejects file {target} is the file being imported; nothing was "
                                   "imported. Choose another file name with --rejects.")
    return target

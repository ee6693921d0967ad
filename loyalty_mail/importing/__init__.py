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
from . import partitioned
from .batch import ImportSummary, Rejects, collection_paused
from .events import import_events
from .members import STAGING as MEMBERS_STAGING
from .members import MemberStaging, import_members
from .partitioned import StagedParts
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
) -> tuple[ImportSummary, Rejects]:
    """Import `kind` ("members" or "events") rows in one transaction: all of it lands, or none."""
    run = _KINDS[kind]
    with db.writer(engine).connect() as connection, partitioned.attached(connection, rows):
        with connection.begin(), collection_paused():
            return run(connection, settings, rows, source=source, now=now,
                       skip_invalid=skip_invalid)


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

    A big members CSV going into SQLite is validated by `workers` processes (default: one per
    core; below 2, or for a small file, by this one): see partitioned.py.
    """
    options: dict[str, Any] = {"source": str(input_file.path), "now": now, "skip_invalid": skip_invalid}
    if kind in _BY_COLUMN and partitioned.worth_it(engine, input_file, workers):
        stager = partial(MemberStaging, settings, engine.dialect)
        with partitioned.staged_by_workers(input_file, stager, MEMBERS_STAGING, workers, on_bytes) as parts:
            summary, rejects = import_rows(engine, settings, kind, parts, **options)
    else:
        rows = input_file.batches(on_bytes) if kind in _BY_COLUMN else input_file.rows(on_bytes)
        summary, rejects = import_rows(engine, settings, kind, rows, **options)
    if len(rejects):
        path = rejects_path or input_file.path.with_name(input_file.path.stem + ".rejects.csv")
        rejects.write(path, input_file.rows())
        summary.rejects_file = path
    return summary

"""Member and event import: from a file (or generated rows) to the database, all or nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa

from .. import db
from ..config import Settings
from .batch import ImportSummary, Rejects
from .events import import_events
from .members import import_members
from .readers import CsvBatch, InputFile, SourceRow

__all__ = ["ImportSummary", "InputFile", "import_file", "import_rows"]

_KINDS = {"members": import_members, "events": import_events}
_BY_COLUMN = {"members"}  # importers that take CSV records in batches (see readers.CsvBatch)


def import_rows(
    engine: sa.Engine,
    settings: Settings,
    kind: str,
    rows: Iterable[SourceRow | CsvBatch],
    *,
    source: str,
    now: datetime,
    skip_invalid: bool = False,
    workers: int | None = None,
) -> tuple[ImportSummary, Rejects]:
    """Import `kind` ("members" or "events") rows in one transaction: all of it lands, or none.

    `workers`: processes that validate a big members CSV beside this one (default: one per
    core beyond this one; 0: none). Events are validated in this process.
    """
    options = {"workers": workers} if kind in _BY_COLUMN else {}
    with db.writer(engine).begin() as connection:
        return _KINDS[kind](connection, settings, rows, source=source, now=now,  # type: ignore[operator]
                            skip_invalid=skip_invalid, **options)


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
    """Import a CSV or JSON Lines file; with skip_invalid, bad rows go to `rejects_path`."""
    summary, rejects = import_rows(
        engine, settings, kind,
        input_file.batches(on_bytes) if kind in _BY_COLUMN else input_file.rows(on_bytes),
        source=str(input_file.path), now=now, skip_invalid=skip_invalid, workers=workers,
    )
    if len(rejects):
        path = rejects_path or input_file.path.with_name(input_file.path.stem + ".rejects.csv")
        rejects.write(path, input_file.rows())
        summary.rejects_file = path
    return summary

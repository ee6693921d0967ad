"""Stream rows from CSV or JSON Lines files, numbered as a person would find them.

CSV rows are numbered as a spreadsheet shows them (the header is row 1); JSON Lines rows by
their line number. Files are read in constant memory; `on_bytes` reports progress. `batches()`
hands CSV records over in lists, for importers that validate a column at a time.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..errors import InputFileError

Format = Literal["csv", "jsonl"]
SourceRow = tuple[int, dict[str, Any]]
BATCH_RECORDS = 5000


@dataclass
class CsvBatch:
    """Consecutive well-formed CSV records: each has one field per header column."""

    header: list[str]
    numbers: list[int]
    records: list[list[str]]

    def row(self, index: int) -> dict[str, str]:
        """Record `index` as the {column: value} row that `InputFile.rows()` gives."""
        return dict(zip(self.header, self.records[index]))


class _CountingReader(io.RawIOBase):
    """A raw reader that reports how many bytes were consumed."""

    def __init__(self, raw: io.BufferedReader, on_bytes: Callable[[int], None] | None):
        self._raw = raw
        self._on_bytes = on_bytes

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._raw.readinto(buffer)
        if n and self._on_bytes:
            self._on_bytes(n)
        return n or 0


@dataclass(frozen=True)
class InputFile:
    """A data file and its format."""

    path: Path
    format: Format

    @classmethod
    def open(cls, path: Path, format: str | None = None) -> InputFile:
        if not path.exists():
            raise InputFileError(f"{path}: file not found")
        if format is None:
            suffix = path.suffix.lower()
            if suffix == ".csv":
                format = "csv"
            elif suffix in (".jsonl", ".ndjson", ".json"):
                format = "jsonl"
            else:
                raise InputFileError(
                    f"{path}: cannot tell the format from the extension '{suffix}'; "
                    "use --format csv or --format jsonl"
                )
        if format not in ("csv", "jsonl"):
            raise InputFileError(f"unknown format '{format}' (expected: csv, jsonl)")
        return cls(path, format)  # type: ignore[arg-type]  # checked above: csv or jsonl

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    def rows(self, on_bytes: Callable[[int], None] | None = None) -> Iterator[SourceRow]:
        """(row number, {column: value}) for every data row."""
        for item in self.batches(on_bytes, batch_csv=False):
            assert not isinstance(item, CsvBatch)
            yield item

    def batches(self, on_bytes: Callable[[int], None] | None = None, *,
                batch_csv: bool = True) -> Iterator[SourceRow | CsvBatch]:
        """Like rows(), but well-formed CSV records come as CsvBatch lists of BATCH_RECORDS.

        A CSV record with the wrong number of fields, and every JSON Lines row, still comes as a
        (row number, row) pair, so what the rows say about a bad line is said here too.
        """
        with self.path.open("rb", buffering=0) as raw:
            text = io.TextIOWrapper(
                # _CountingReader has the readinto() BufferedReader needs, not all of RawIOBase
                io.BufferedReader(_CountingReader(raw, on_bytes), 1 << 16),  # type: ignore[arg-type]
                encoding="utf-8-sig", newline="",
            )
            try:
                if self.format == "csv":
                    yield from _csv_batches(text, str(self.path), BATCH_RECORDS if batch_csv else 0)
                else:
                    yield from _jsonl_rows(text, str(self.path))
            except UnicodeDecodeError as exc:
                raise InputFileError(f"{self.path}: not UTF-8 text ({exc.reason})") from None


def _csv_batches(text: io.TextIOWrapper, name: str, size: int) -> Iterator[SourceRow | CsvBatch]:
    """Rows one by one (size 0), or CsvBatch lists of up to `size` well-formed records."""
    reader = csv.reader(text)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise InputFileError(f"{name}: row 1: {exc}") from None
    header = [h.strip() for h in header]
    blank = [i + 1 for i, h in enumerate(header) if not h]
    if blank:
        raise InputFileError(f"{name}: row 1: header column(s) {blank} have no name")
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise InputFileError(f"{name}: row 1: repeated column(s) in the header: {', '.join(repeated)}")
    width = len(header)
    row_no = 1
    batch = CsvBatch(header, [], [])
    while True:
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise InputFileError(f"{name}: row {row_no + 1}: {exc}") from None
        row_no += 1
        if not values:
            continue
        if len(values) != width:
            yield row_no, {"__shape__": f"has {len(values)} fields, the header has {width}"}
        elif not size:
            yield row_no, dict(zip(header, values))
        else:
            batch.numbers.append(row_no)
            batch.records.append(values)
            if len(batch.records) >= size:
                yield batch
                batch = CsvBatch(header, [], [])
    if batch.records:
        yield batch


def _jsonl_rows(text: io.TextIOWrapper, name: str) -> Iterator[SourceRow]:
    for line_no, line in enumerate(text, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            yield line_no, {"__shape__": f"invalid JSON ({exc.msg} at column {exc.colno})"}
            continue
        if not isinstance(value, dict):
            yield line_no, {"__shape__": "each line must be a JSON object"}
            continue
        yield line_no, value

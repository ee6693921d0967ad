"""Stream rows from CSV or JSON Lines files, numbered as a person would find them.

CSV rows are numbered as a spreadsheet shows them (the header is row 1); JSON Lines rows by
their line number. Files are read in constant memory; `on_bytes` reports progress. `batches()`
hands CSV records over in lists, for importers that validate a column at a time.

Limits keep memory and time bounded whatever the file holds: a line longer than MAX_LINE_BYTES,
a CSV cell longer than MAX_CELL_CHARS or a header of more than MAX_COLUMNS columns stops the
import with an error, before more than about a line is held. A value no database can store (a
NUL character, an unpaired surrogate), a JSON value longer than MAX_CELL_CHARS or a JSON object
with more than MAX_COLUMNS keys is a problem of that row, reported like any other (PROBLEMS).
A file that changes while it is read is an error: the rows read would not be the file's.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import InputFileError, shown

Format = Literal["csv", "jsonl"]
SourceRow = tuple[int, dict[str, Any]]
BATCH_RECORDS = 5000
MAX_LINE_BYTES = 1 << 20
MAX_CELL_CHARS = 131_072  # also Python's own csv.field_size_limit() default
MAX_COLUMNS = 200
# The key of a source row under which the reader lists the row's problems: [(column, message)].
PROBLEMS = "__problems__"
NUL_MESSAGE = "contains a NUL character (\\u0000), which cannot be stored; remove it"
SURROGATE_MESSAGE = "contains an unpaired UTF-16 surrogate (\\ud800-\\udfff), which is not text"
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


@dataclass
class CsvBatch:
    """Consecutive well-formed CSV records: each has one field per header column."""

    header: list[str]
    numbers: list[int]
    records: list[list[str]]

    def row(self, index: int) -> dict[str, str]:
        """Record `index` as the {column: value} row that `InputFile.rows()` gives."""
        return dict(zip(self.header, self.records[index]))


class _CheckedReader(io.RawIOBase):
    """A raw reader that reports how many bytes were consumed, stops at a line longer than
    MAX_LINE_BYTES, and notes whether a NUL byte has gone by (so rows need checking for one)."""

    def __init__(self, raw: io.FileIO, on_bytes: Callable[[int], None] | None, name: str):
        self._raw = raw
        self._on_bytes = on_bytes
        self._name = name
        self._lines = 0  # newlines read so far
        self._run = 0  # bytes read since the last newline
        self.saw_nul = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._raw.readinto(buffer)
        if n:
            self._check(bytes(memoryview(buffer)[:n]))
            if self._on_bytes:
                self._on_bytes(n)
        return n or 0

    def _check(self, data: bytes) -> None:
        if not self.saw_nul and b"\x00" in data:
            self.saw_nul = True
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            self._too_long(self._run + end - start)
            self._run = 0
            self._lines += 1
            start = end + 1
            if len(data) - start <= MAX_LINE_BYTES:  # no whole line left in there can be too long
                self._lines += data.count(b"\n", start)
                start = data.rfind(b"\n", start) + 1 or start
                break
        self._run += len(data) - start
        self._too_long(self._run)

    def _too_long(self, length: int) -> None:
        if length > MAX_LINE_BYTES:
            raise InputFileError(
                f"{self._name}: line {self._lines + 1}: longer than {MAX_LINE_BYTES:,} bytes, the most a line "
                "may hold; split the file's long values or leave them out")


Fingerprint = tuple[int, int, int, int]


def _fingerprint(stat: os.stat_result) -> Fingerprint:
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


@dataclass(frozen=True)
class InputFile:
    """A data file and its format."""

    path: Path
    format: Format
    # The file as it was opened (see `open`): every reading must find it so, or it changed.
    fingerprint: Fingerprint | None = field(default=None, compare=False)

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
        try:
            fingerprint = _fingerprint(path.stat())
        except OSError as exc:
            raise InputFileError(f"{path}: cannot be read ({exc.strerror})") from None
        return cls(path, format, fingerprint)  # type: ignore[arg-type]  # checked above: csv or jsonl

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
        name = str(self.path)
        try:
            raw = self.path.open("rb", buffering=0)
        except OSError as exc:
            raise InputFileError(f"{name}: cannot be read ({exc.strerror}); nothing was imported") from None
        with raw:
            self._check_unchanged(raw)
            checked = _CheckedReader(raw, on_bytes, name)
            text = io.TextIOWrapper(io.BufferedReader(checked, 1 << 16), encoding="utf-8-sig", newline="")
            try:
                if self.format == "csv":
                    yield from _csv_batches(text, checked, name, BATCH_RECORDS if batch_csv else 0)
                else:
                    yield from _jsonl_rows(text, name)
            except UnicodeDecodeError as exc:
                raise InputFileError(f"{self.path}: not UTF-8 text ({exc.reason})") from None
            self._check_unchanged(raw)

    def _check_unchanged(self, raw: io.FileIO) -> None:
        if self.fingerprint is not None and _fingerprint(os.fstat(raw.fileno())) != self.fingerprint:
            raise InputFileError(f"{self.path}: the file changed while it was being imported; nothing was "
                                 "imported. Import it again once it is complete.")


def _csv_batches(text: io.TextIOWrapper, checked: _CheckedReader, name: str,
                 size: int) -> Iterator[SourceRow | CsvBatch]:
    """Rows one by one (size 0), or CsvBatch lists of up to `size` well-formed records."""
    csv.field_size_limit(MAX_CELL_CHARS)  # Python's default, unless something in this process changed it
    reader = csv.reader(text)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise InputFileError(f"{name}: row 1: {_csv_problem(exc)}") from None
    if len(header) > MAX_COLUMNS:
        raise InputFileError(f"{name}: row 1: the header has {len(header):,} columns; at most {MAX_COLUMNS} "
                             "are allowed")
    header = [h.strip() for h in header]
    if PROBLEMS in header:
        raise InputFileError(f"{name}: row 1: '{PROBLEMS}' is not a name a column may have")
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
            raise InputFileError(f"{name}: row {row_no + 1}: {_csv_problem(exc)}") from None
        row_no += 1
        if not values:
            continue
        if len(values) != width:
            yield row_no, {PROBLEMS: [("", f"has {len(values)} fields, the header has {width}")]}
        elif checked.saw_nul and any("\x00" in value for value in values):
            yield row_no, {**dict(zip(header, values)),
                           PROBLEMS: [(column, NUL_MESSAGE) for column, value in zip(header, values)
                                      if "\x00" in value]}
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


def _csv_problem(exc: csv.Error) -> str:
    if "field larger than field limit" in str(exc):
        return f"a cell is longer than {MAX_CELL_CHARS:,} characters, the most a cell may hold"
    return str(exc)


def _jsonl_rows(text: io.TextIOWrapper, name: str) -> Iterator[SourceRow]:
    for line_no, line in enumerate(text, start=1):
        if not line.strip():
            continue
        try:
            value = load_json(line)
        except json.JSONDecodeError as exc:
            yield line_no, {PROBLEMS: [("", f"invalid JSON ({exc.msg} at column {exc.colno})")]}
            continue
        except NumberRefused as exc:
            yield line_no, {PROBLEMS: [("", str(exc))]}
            continue
        except RecursionError:
            yield line_no, {PROBLEMS: [("", "invalid JSON (nested too deeply)")]}
            continue
        if not isinstance(value, dict):
            yield line_no, {PROBLEMS: [("", "each line must be a JSON object")]}
            continue
        if PROBLEMS in value:
            yield line_no, {PROBLEMS: [(PROBLEMS, "is not a name a column may have")]}
            continue
        if "\\u" in line or len(line) > MAX_CELL_CHARS or len(value) > MAX_COLUMNS:
            problems = json_row_problems(value)
            if problems:
                yield line_no, {**value, PROBLEMS: problems}
                continue
        yield line_no, value


MAX_JSON_INTEGER = 2**63 - 1  # the largest whole number both databases store in a JSON column
NUMBERS_ALLOWED = (f"numbers must be finite (no NaN or Infinity) and whole numbers at most "
                   f"{MAX_JSON_INTEGER:,} either side of 0, as JSON and the databases require")


class NumberRefused(ValueError):
    """A number JSON text may spell (Python's json reads NaN, Infinity, 1e400 and integers of any
    length) that no database stores in a JSON column."""


class DuplicateKey(ValueError):
    """A JSON object that gives one key twice (which value is meant cannot be told)."""


def load_json(text: str | bytes, *, unique_keys: bool = False) -> Any:
    """JSON text as Python values; NumberRefused (saying which number and what is allowed) for a
    number no database can store, json.JSONDecodeError for text that is not JSON. With
    `unique_keys`, DuplicateKey for an object that gives a key twice (it costs twice the time to
    parse, so the file imports leave it: the last value wins there, as in json.loads)."""
    hook = _unique_keys if unique_keys else None
    return json.loads(text, parse_constant=_not_a_number, parse_float=_finite, parse_int=_bounded,
                      object_pairs_hook=hook)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(f"the key {shown(key)} appears twice in one object; give each key once")
            seen.add(key)
    return obj


def _refused(literal: str, why: str) -> NumberRefused:
    shown = literal if len(literal) <= 40 else f"{literal[:40]}... ({len(literal):,} characters)"
    return NumberRefused(f"'{shown}' {why}: {NUMBERS_ALLOWED}")


def _not_a_number(literal: str) -> float:
    raise _refused(literal, "is not a finite number")


def _finite(literal: str) -> float:
    number = float(literal)
    if not math.isfinite(number):
        raise _refused(literal, "is too large")
    return number


def _bounded(literal: str) -> int:
    if len(literal) > 20 or abs(number := int(literal)) > MAX_JSON_INTEGER:  # 20: before int() reads it
        raise _refused(literal, "is too large")
    return number


def json_row_problems(row: dict[str, Any]) -> list[tuple[str, str]]:
    """What in a parsed JSON object no import can take: (key, problem) per top-level key."""
    if len(row) > MAX_COLUMNS:
        return [("", f"has {len(row):,} keys; at most {MAX_COLUMNS} are allowed")]
    problems = []
    for key, value in row.items():
        pending = [key, value]
        while pending:  # a loop, not recursion: the value may be nested as deep as JSON allows
            item = pending.pop()
            if isinstance(item, dict):
                pending += item.keys()
                pending += item.values()
            elif isinstance(item, list):
                pending += item
            elif isinstance(item, str):
                problem = _text_problem(item)
                if problem:
                    problems.append((_printable(key), problem))
                    break
    return problems


def _text_problem(value: str) -> str | None:
    if len(value) > MAX_CELL_CHARS:
        return f"longer than {MAX_CELL_CHARS:,} characters, the most a value may hold"
    found = _UNSTORABLE.search(value)
    if found is None:
        return None
    return NUL_MESSAGE if found.group() == "\x00" else SURROGATE_MESSAGE


def _printable(key: str) -> str:
    return _UNSTORABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", key)

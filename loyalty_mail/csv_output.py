"""CSV for spreadsheets: every CSV loyalty-mail writes goes through `csv_writer`.

A spreadsheet runs a cell that starts with `=`, `+`, `-` or `@` as a formula (and tab or carriage
return can hide such a start), so a member's name `=HYPERLINK(...)` in an export could run in the
reader's spreadsheet. As OWASP advises for CSV injection, such text cells are written with a single
quote in front, which spreadsheets show as text. Numbers stay numbers: numeric values, and text
that is a plain number (`-40`, `+1.5`), are written as they are. Only the file changes; stored
values never do.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from typing import Any, TextIO

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def safe_cell(value: Any) -> Any:
    """`value`, or the text with a quote in front when a spreadsheet would run it as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_START) and not _PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


class SafeCsvWriter:
    """csv.writer whose text cells cannot become spreadsheet formulas (see `safe_cell`)."""

    def __init__(self, stream: TextIO, **fmtparams: Any):
        self._writer = csv.writer(stream, **fmtparams)

    def writerow(self, row: Iterable[Any]) -> None:
        self._writer.writerow([safe_cell(value) for value in row])

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


def csv_writer(stream: TextIO, **fmtparams: Any) -> SafeCsvWriter:
    """A writer of rows (sequences of cells) to `stream`; `fmtparams` as for csv.writer."""
    return SafeCsvWriter(stream, **fmtparams)

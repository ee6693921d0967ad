"""Column-wise parsing: a column of CSV cells parsed in one pass of C-level calls.

Parsing a cell at a time costs a Python call per cell, more than the parse itself. Here a whole
column goes through `map(int, ...)`, `map(datetime.fromisoformat, ...)` and the like, or through a
table of its distinct values when it has few. A fast parser raises at the first cell it is not
sure of (a stray space, a bad value), and the column is then parsed cell by cell with the parser
of `fields`, which stays the arbiter: a fast parser accepts only cells that parser accepts, and
gives the same value for them. Blank cells are None, as in the row-wise path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, datetime, tzinfo
from decimal import Decimal
from json.encoder import encode_basestring_ascii
from operator import methodcaller
from typing import Any

from .fields import EMAIL_ADDRESS, YEARS

Cells = Sequence[str]
FastParser = Callable[[Cells], list[Any]]
# What a fast parser raises when it is not sure: the column then goes cell by cell.
NOT_SURE = (ValueError, TypeError, ArithmeticError)
_CENTS = methodcaller("quantize", Decimal("0.01"))
_MONEY_LIMIT = Decimal("1e16")


def parse_column(cells: Cells, fast: FastParser, parse: Callable[[str], Any]) -> tuple[list[Any], list[int]]:
    """The parsed column (None for blank cells) and the indexes of the cells `parse` rejects."""
    try:
        if "" not in cells:
            return fast(cells), []
        present = [i for i, cell in enumerate(cells) if cell]
        parsed: list[Any] = [None] * len(cells)
        for i, value in zip(present, fast([cells[i] for i in present])):
            parsed[i] = value
        return parsed, []
    except NOT_SURE:
        return cell_by_cell(cells, parse)


def cell_by_cell(cells: Cells, parse: Callable[[str], Any]) -> tuple[list[Any], list[int]]:
    """Each cell through the parser of `fields` (blank: None, as fields.is_blank has it)."""
    parsed: list[Any] = []
    rejected: list[int] = []
    for i, cell in enumerate(cells):
        if not cell or cell.isspace():
            parsed.append(None)
            continue
        try:
            parsed.append(parse(cell))
        except ValueError:
            parsed.append(None)
            rejected.append(i)
    return parsed, rejected


def texts(max_length: int) -> FastParser:
    """fields.text: trimmed, at most max_length characters (a blank after trimming: not sure)."""
    def fast(cells: Cells) -> list[str]:
        trimmed = list(map(str.strip, cells))
        if "" in trimmed or max(map(len, trimmed)) > max_length:
            raise ValueError
        return trimmed
    return fast


def emails(cells: Cells) -> list[str]:
    """fields.email."""
    trimmed = list(map(str.strip, cells))
    if "" in trimmed or max(map(len, trimmed)) > 254 or not all(map(EMAIL_ADDRESS.match, trimmed)):
        raise ValueError
    return trimmed


def whole_numbers(minimum: int, maximum: int) -> FastParser:
    """fields.whole_number for cells that int() reads (it trims, as the cell parser does)."""
    def fast(cells: Cells) -> list[int]:
        numbers = list(map(int, cells))
        if min(numbers) < minimum or max(numbers) > maximum:
            raise ValueError
        return numbers
    return fast


def amounts(cells: Cells) -> list[Decimal]:
    """fields.money: non-negative, below 1e16, to the cent (NaN fails the comparisons)."""
    values = list(map(Decimal, cells))
    if min(values) < 0 or max(values) >= _MONEY_LIMIT:
        raise ValueError
    return list(map(_CENTS, values))


def instants(default_zone: tzinfo) -> FastParser:
    """fields.instant: ISO 8601, a time without an offset taken in default_zone (attached with
    combine(), which takes a third of the time of replace(tzinfo=...) and gives the same)."""
    combine = datetime.combine

    def fast(cells: Cells) -> list[datetime]:
        parsed = list(map(datetime.fromisoformat, cells))
        years = [p.year for p in parsed]
        if min(years) <= YEARS[0] or max(years) >= YEARS[1]:  # near the edges, the offset decides
            raise ValueError
        return [p if p.tzinfo is not None else combine(p.date(), p.time(), default_zone) for p in parsed]
    return fast


def dates_between(first: date, last: date) -> FastParser:
    """fields.birthday: dates from `first` to `last`."""
    def fast(cells: Cells) -> list[date]:
        parsed = list(map(date.fromisoformat, cells))
        if parsed and (min(parsed) < first or max(parsed) > last):
            raise ValueError("a date out of range")
        return parsed
    return fast


def by_distinct(parse: Callable[[str], Any]) -> FastParser:
    """For columns with few distinct values (locale, zone, yes/no): each one parsed once."""
    def fast(cells: Cells) -> list[Any]:
        table = {cell: parse(cell) for cell in set(cells)}
        return list(map(table.__getitem__, cells))
    return fast


def json_objects(names: Sequence[str], columns: Sequence[Sequence[str | None]]) -> list[str | None]:
    """Per row, the JSON text `json.dumps` gives for {name: value} over the non-None values of
    `columns` (None where there are none), written without building the dicts."""
    keys = [encode_basestring_ascii(name) + ": " for name in names]
    if len(keys) == 1:
        key = "{" + keys[0]
        return [None if v is None else key + encode_basestring_ascii(v) + "}" for v in columns[0]]
    objects: list[str | None] = []
    for values in zip(*columns):
        pairs = [k + encode_basestring_ascii(v) for k, v in zip(keys, values) if v is not None]
        objects.append("{" + ", ".join(pairs) + "}" if pairs else None)
    return objects

"""Every error a user can cause, in one tree.

    LoyaltyMailError             anything the user can fix; the CLI prints it and exits 1
    ├── ConfigError              config.yaml is missing, malformed or invalid
    │   └── TemplateError        an email template does not parse or does not render
    ├── DatabaseError            the database is unreachable or its schema is out of date
    ├── ImportRejected           an import found bad rows and wrote nothing
    ├── InputFileError           a data file cannot be read at all (format, encoding, header)
    │   └── ColumnRefused        a column that cannot be imported (computed, or not a valid name)
    ├── NotFound                 a member, segment or template that does not exist
    ├── SegmentTimeout           a segment query ran past segments.timeout and was stopped
    └── CannotListen             `serve` or `api` cannot listen on its address (exits 5)

Anything else that escapes the library is a bug: the CLI reports it and exits 2.
Messages say what is wrong and, where it helps, what to do next.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, time
from decimal import Decimal

MAX_SHOWN = 80  # characters of a user's value quoted back in a message


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """A count and its noun in the right number: `1 email`, `1,200 emails`."""
    return f"{count:,} {noun if count == 1 else plural or noun + 's'}"


def shown(value: object, limit: int = MAX_SHOWN) -> str:
    """A value the user wrote, as a message quotes it: text in single quotes (cut to `limit`
    characters, control characters written as escapes), numbers, dates and times as written,
    true/false and null as YAML writes them, and only the kind of a list or mapping, never
    Python's notation."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float, Decimal)):
        try:
            text = str(value)
        except ValueError:  # an integer past Python's 4,300-digit limit for writing it out
            return "a number of more than 4,300 digits"
        return text if len(text) <= limit else f"a number of {len(text):,} digits"
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if not isinstance(value, str):
        return kind_of(value)
    cut = value if len(value) <= limit else value[:limit]
    cut = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in cut)
    return f"'{cut}'" if len(value) <= limit else f"'{cut}...' ({len(value):,} characters)"


def kind_of(value: object) -> str:
    """What kind of value the user wrote, without the value (for secrets): `a number`, `text`, ..."""
    if isinstance(value, bool):
        return "true or false"
    if value is None:
        return "null"
    if isinstance(value, (int, float, Decimal)):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (date, time)):
        return "a date or time"
    return "a value of another kind"


@dataclass(frozen=True)
class Location:
    """A place in a source file, 1-based, as editors show it; line 0 is the file (or folder) as a
    whole, shown without a line."""

    file: str
    line: int
    column: int = 0

    def __str__(self) -> str:
        if not self.line:
            return self.file
        if self.column:
            return f"{self.file}:{self.line}:{self.column}"
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Problem:
    """One finding in a source file: where, and what is wrong there."""

    location: Location | None
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}" if self.location else self.message


class LoyaltyMailError(Exception):
    """Base class of every error that is the user's to fix."""

    exit_code = 1


class ConfigError(LoyaltyMailError):
    """The configuration (or another YAML source) has one or more problems."""

    def __init__(self, problems: Sequence[Problem | str] | Problem | str):
        if isinstance(problems, (str, Problem)):
            problems = [problems]
        self.problems = [p if isinstance(p, Problem) else Problem(None, p) for p in problems]
        super().__init__("\n".join(str(p) for p in self.problems))


class TemplateError(ConfigError):
    """An email template has problems; each names the template file and line."""


class DatabaseError(LoyaltyMailError):
    """The database cannot be used as it is."""


class InputFileError(LoyaltyMailError):
    """A data file cannot be read at all."""


class ColumnRefused(InputFileError):
    """A column no row of the file may have; the message names the row, the caller the file."""


class NotFound(LoyaltyMailError):
    """Something the user named does not exist."""


class SegmentTimeout(LoyaltyMailError):
    """A segment query ran longer than its time limit and the database stopped it."""


@dataclass(frozen=True)
class RowError:
    """One rejected row of an import: its row number and every (column, reason) found in it."""

    row: int
    problems: tuple[tuple[str, str], ...]

    @property
    def reason(self) -> str:
        return "; ".join(f"{column}: {message}" if column else message
                         for column, message in self.problems)

    def __str__(self) -> str:
        return f"row {self.row}: {self.reason}"


class ImportRejected(LoyaltyMailError):
    """An all-or-nothing import found bad rows; nothing was written."""

    def __init__(self, source: str, errors: list[RowError], total_bad: int):
        self.source = source
        self.errors = errors
        self.total_bad = total_bad
        lines = [f"{source}: {e}" for e in errors]
        if total_bad > len(errors):
            lines.append(f"... and {total_bad - len(errors)} more bad rows")
        lines.append(
            f"{total_bad} bad row(s); nothing was imported. Fix them, or use --skip-invalid "
            "to import the good rows and write the rejects to a file."
        )
        super().__init__("\n".join(lines))


class CannotListen(LoyaltyMailError):
    """A service cannot listen on its host and port (in use, not allowed, not this machine's)."""

    exit_code = 5

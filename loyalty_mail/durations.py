"""Durations as people write them: `30 seconds`, `90 minutes`, `2 hours`, `3 days`, `2 weeks`,
`1 month`, `1 year`. One grammar for config.yaml and segments.

A duration is a whole number (ASCII digits) and a unit, singular or plural (`0`, written or
quoted, needs no unit), at most 100 years. It has two readings:

    Duration.before(instant)   calendar arithmetic, for segments: one month before 31 March is
                               28 (or 29) February, one year before 29 February 2028 is 28 February
                               (and Duration.after(instant), forward)
    Duration.span()            a fixed length, for config.yaml settings: a month is 30 days and a
                               year 365 days

`format_span` writes a fixed length back in the largest unit that divides it exactly (weeks down
to seconds), so `parse_span(format_span(span)) == span` for any whole number of seconds.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .errors import shown

UNITS = ("second", "minute", "hour", "day", "week", "month", "year")
MAX_DAYS = 36600  # 100 years
ALLOWED = ", ".join(f"{unit}s" for unit in UNITS)
EXAMPLES = "'30 minutes', '2 weeks' or '1 month'"

_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800,
            "month": 30 * 86400, "year": 365 * 86400}
_LONGEST_DAYS = {"second": 1 / 86400, "minute": 1 / 1440, "hour": 1 / 24, "day": 1, "week": 7,
                 "month": 31, "year": 366}
_SHAPE = re.compile(r"^\s*([0-9]+)\s*([A-Za-z]+)\s*$", re.ASCII)
_ZERO = re.compile(r"^\s*0+\s*$", re.ASCII)
_OTHER_DIGITS = re.compile(r"^\s*\d+\s*[A-Za-z]+\s*$")  # digits of any script, to say why they are refused
_MAX_DIGITS = 12  # more are longer than 100 years in any unit, without reading the number


@dataclass(frozen=True)
class Duration:
    """A length of time: an amount of one unit (one of UNITS)."""

    amount: int
    unit: str

    def __str__(self) -> str:
        return f"{self.amount} {self.unit}{'' if self.amount == 1 else 's'}"

    def before(self, instant: datetime) -> datetime:
        """`instant` minus this duration, calendar-aware for months and years."""
        if self.unit in ("month", "year"):
            return add_months(instant, -self.amount * (12 if self.unit == "year" else 1))
        return instant - self.span()

    def after(self, instant: datetime) -> datetime:
        """`instant` plus this duration, calendar-aware for months and years."""
        if self.unit in ("month", "year"):
            return add_months(instant, self.amount * (12 if self.unit == "year" else 1))
        return instant + self.span()

    def span(self) -> timedelta:
        """This duration as a fixed length: a month is 30 days, a year 365 days."""
        return timedelta(seconds=self.amount * _SECONDS[self.unit])

    def days_exact(self) -> int:
        """Whole days for days and weeks; 0 for the other units."""
        return {"day": self.amount, "week": 7 * self.amount}.get(self.unit, 0)

    def calendar_key(self) -> tuple[str, int]:
        """The same length on any calendar, in one unit per kind: `4 weeks` and `28 days` are
        ('day', 28), `1 year` and `12 months` ('month', 12), `2 hours` ('second', 7200)."""
        if self.unit in ("month", "year"):
            return "month", self.amount * (12 if self.unit == "year" else 1)
        if self.unit in ("day", "week"):
            return "day", self.days_exact()
        return "second", self.amount * _SECONDS[self.unit]

    def never_shorter_than(self, other: Duration) -> bool:
        """True when this duration is at least as long as `other` whatever the dates (a month is
        28 to 31 days, a year 365 or 366): `13 months` and `400 days` against `12 months`, not
        `365 days`, which a leap year makes shorter."""
        mine, theirs = self.calendar_key(), other.calendar_key()
        if mine[0] == theirs[0]:
            return mine[1] >= theirs[1]
        return _seconds_range(mine)[0] >= _seconds_range(theirs)[1]


def _seconds_range(key: tuple[str, int]) -> tuple[int, int]:
    """The shortest and the longest a `calendar_key` can last, in seconds."""
    kind, amount = key
    if kind == "month":
        years, months = divmod(amount, 12)
        return (years * 365 + months * 28) * 86400, (years * 366 + months * 31) * 86400
    return (amount * 86400, amount * 86400) if kind == "day" else (amount, amount)


def add_months(instant: datetime, months: int) -> datetime:
    """`instant` moved by whole calendar months; a day past the month's end falls on its last day."""
    index = instant.year * 12 + instant.month - 1 + months
    year, month = divmod(index, 12)
    day = min(instant.day, calendar.monthrange(year, month + 1)[1])
    return instant.replace(year=year, month=month + 1, day=day)


def parse_duration(value: Any) -> Duration:
    """`30 days`, `2 weeks`, `1 month`, `0` -> Duration; ValueError saying what is allowed otherwise."""
    if isinstance(value, int) and not isinstance(value, bool) and value == 0:
        return Duration(0, "second")
    if isinstance(value, str) and _ZERO.match(value):
        return Duration(0, "second")
    match = _SHAPE.match(value) if isinstance(value, str) else None
    if not match and isinstance(value, str) and _OTHER_DIGITS.match(value):
        raise ValueError(f"write the number with the digits 0-9, found {shown(value)}")
    if not match:
        raise ValueError(f"expected a duration such as {EXAMPLES} (a whole number and one of: "
                         f"{ALLOWED}), found {shown(value)}")
    unit = match.group(2).lower()
    unit = unit[:-1] if unit.endswith("s") else unit
    if unit not in _SECONDS:
        raise ValueError(f"unknown unit {shown(match.group(2))} in {shown(value)} (expected one of: {ALLOWED})")
    digits = match.group(1).lstrip("0") or "0"
    if len(digits) > _MAX_DIGITS:
        raise ValueError(f"{shown(value)} is longer than 100 years")
    return bounded(Duration(int(digits), unit), value)


def bounded(duration: Duration, text: Any) -> Duration:
    """Refuse durations over 100 years: they mean nothing here and overflow date arithmetic."""
    if duration.amount * _LONGEST_DAYS[duration.unit] > MAX_DAYS:
        raise ValueError(f"{shown(text)} is longer than 100 years")
    return duration


def parse_span(value: Any) -> timedelta:
    """A duration as a fixed length (config.yaml); a timedelta passes through unchanged."""
    if isinstance(value, timedelta):
        return value
    return parse_duration(value).span()


def format_span(span: timedelta) -> str:
    """`2 days`, `36 hours`, `90 minutes`: a fixed length in the largest unit dividing it exactly."""
    seconds = int(span.total_seconds())
    sign, seconds = ("-" if seconds < 0 else ""), abs(seconds)
    for unit in ("week", "day", "hour", "minute"):
        size = _SECONDS[unit]
        if seconds and seconds % size == 0:
            return f"{sign}{Duration(seconds // size, unit)}"
    return f"{sign}{Duration(seconds, 'second')}"

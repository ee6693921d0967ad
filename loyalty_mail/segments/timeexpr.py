"""Times and durations as marketers write them: `90 days ago`, `2 weeks`, `today`, `2026-01-01`.

Everything relative is resolved against an explicit instant `at`; nothing here reads the clock.
Months and years are calendar months and years (31 March minus one month is 28 or 29 February).
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Any

UNITS = {"minute": "minutes", "hour": "hours", "day": "days", "week": "weeks", "month": "months",
         "year": "years"}
_DURATION = re.compile(r"^\s*(\d{1,6})\s*(minute|hour|day|week|month|year)s?\s*$")
_AGO = re.compile(r"^\s*(\d{1,6})\s*(minute|hour|day|week|month|year)s?\s+ago\s*$")
MAX_DAYS = 36600


@dataclass(frozen=True)
class Duration:
    """A length of time: an amount of one unit."""

    amount: int
    unit: str  # one of UNITS

    def __str__(self) -> str:
        return f"{self.amount} {self.unit}{'' if self.amount == 1 else 's'}"

    def before(self, instant: datetime) -> datetime:
        """`instant` minus this duration (calendar-aware for months and years)."""
        if self.unit in ("month", "year"):
            months = self.amount * (12 if self.unit == "year" else 1)
            return add_months(instant, -months)
        return instant - timedelta(**{UNITS[self.unit]: self.amount})

    def days_exact(self) -> int:
        return {"minute": 0, "hour": 0, "day": self.amount, "week": 7 * self.amount}.get(self.unit, 0)


def add_months(instant: datetime, months: int) -> datetime:
    index = instant.year * 12 + instant.month - 1 + months
    year, month = divmod(index, 12)
    day = min(instant.day, calendar.monthrange(year, month + 1)[1])
    return instant.replace(year=year, month=month + 1, day=day)


@dataclass(frozen=True)
class TimeValue:
    """A point in time: absolute, `now`, `today` (start of the program's day) or `N units ago`."""

    kind: str  # "absolute" | "now" | "today" | "ago"
    absolute: datetime | None = None
    ago: Duration | None = None
    text: str = ""

    def resolve(self, at: datetime, zone: tzinfo) -> datetime:
        if self.kind == "absolute":
            assert self.absolute is not None
            return self.absolute if self.absolute.tzinfo else self.absolute.replace(tzinfo=zone)
        if self.kind == "now":
            return at
        if self.kind == "today":
            return datetime.combine(at.astimezone(zone).date(), time(), tzinfo=zone)
        assert self.ago is not None
        return self.ago.before(at)

    def __str__(self) -> str:
        return self.text


def parse_duration(value: Any) -> Duration:
    """`30 days`, `2 weeks`, `1 year` -> Duration; ValueError with the accepted forms otherwise."""
    match = _DURATION.match(str(value)) if isinstance(value, str) else None
    if not match:
        raise ValueError(f"expected a duration such as '30 days', '2 weeks' or '1 year', found {value!r}")
    return _bounded(Duration(int(match.group(1)), match.group(2)), value)


def _bounded(duration: Duration, text: Any) -> Duration:
    """Refuse durations over 100 years: they mean nothing here and overflow date arithmetic."""
    per_unit = {"minute": 1 / 1440, "hour": 1 / 24, "day": 1, "week": 7, "month": 31, "year": 366}
    if duration.amount * per_unit[duration.unit] > MAX_DAYS:
        raise ValueError(f"{text!r} is longer than 100 years")
    return duration


def parse_time(value: Any) -> TimeValue:
    """`90 days ago`, `now`, `today`, `2026-01-01` or an ISO date-time -> TimeValue."""
    parsed = _parse_time(value)
    if parsed.absolute is not None and not 1900 <= parsed.absolute.year <= 2200:
        raise ValueError(f"expected a year between 1900 and 2200, found {value!r}")
    return parsed


def _parse_time(value: Any) -> TimeValue:
    if isinstance(value, datetime):
        return TimeValue("absolute", absolute=value, text=value.isoformat())
    if isinstance(value, date):
        return TimeValue("absolute", absolute=datetime.combine(value, time()), text=value.isoformat())
    if isinstance(value, str):
        text = value.strip()
        if text in ("now", "today"):
            return TimeValue(text, text=text)
        match = _AGO.match(text)
        if match:
            return TimeValue("ago", ago=_bounded(Duration(int(match.group(1)), match.group(2)), text), text=text)
        try:
            return TimeValue("absolute", absolute=datetime.fromisoformat(text), text=text)
        except ValueError:
            pass
    raise ValueError(
        f"expected a time such as '90 days ago', 'today', 'now', '2026-01-01' or "
        f"'2026-01-01T09:00:00+07:00', found {value!r}"
    )


def parse_date(value: Any) -> date:
    """A calendar date (for birthdays)."""
    if isinstance(value, datetime):
        day = value.date()
    elif isinstance(value, date):
        day = value
    else:
        try:
            day = date.fromisoformat(str(value).strip())
        except ValueError:
            raise ValueError(f"expected a date such as 2026-01-31, found {value!r}") from None
    if not 1800 <= day.year <= 2200:
        raise ValueError(f"expected a year between 1800 and 2200, found {value!r}")
    return day


def anniversary_on(original: date, year: int) -> date:
    """The anniversary of `original` in `year`; 29 February falls on 28 February in other years."""
    if original.month == 2 and original.day == 29 and not calendar.isleap(year):
        return date(year, 2, 28)
    return date(year, original.month, original.day)

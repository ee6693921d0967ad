"""Times as marketers write them: `90 days ago`, `today`, `now`, `2026-01-01`.

Everything relative is resolved against an explicit instant `at`; nothing here reads the clock.
Durations (`2 weeks`, `1 month`) follow the one grammar in loyalty_mail/durations.py; in segments
months and years are calendar months and years (31 March minus one month is 28 or 29 February).
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date, datetime, time, tzinfo
from typing import Any

from ..durations import MAX_DAYS, Duration, add_months, parse_duration
from ..errors import shown

__all__ = ["MAX_DAYS", "Duration", "TimeValue", "add_months", "anniversary_on", "parse_date", "parse_duration",
           "parse_time"]

_AGO = re.compile(r"^(.*\S)\s+ago\s*$")


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


def parse_time(value: Any) -> TimeValue:
    """`90 days ago`, `now`, `today`, `2026-01-01` or an ISO date-time -> TimeValue."""
    parsed = _parse_time(value)
    if parsed.absolute is not None and not 1900 <= parsed.absolute.year <= 2200:
        raise ValueError(f"expected a year between 1900 and 2200, found {shown(value)}")
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
            return TimeValue("ago", ago=parse_duration(match.group(1)), text=text)
        try:
            return TimeValue("absolute", absolute=datetime.fromisoformat(text), text=text)
        except ValueError:
            pass
    raise ValueError(
        f"expected a time such as '90 days ago', 'today', 'now', '2026-01-01' or "
        f"'2026-01-01T09:00:00+07:00', found {shown(value)}"
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
            raise ValueError(f"expected a date such as 2026-01-31, found {shown(value)}") from None
    if not 1800 <= day.year <= 2200:
        raise ValueError(f"expected a year between 1800 and 2200, found {shown(value)}")
    return day


def anniversary_on(original: date, year: int) -> date:
    """The anniversary of `original` in `year`; 29 February falls on 28 February in other years."""
    if original.month == 2 and original.day == 29 and not calendar.isleap(year):
        return date(year, 2, 28)
    return date(year, original.month, original.day)

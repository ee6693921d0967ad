"""Parsers for the values of import rows. Each returns the typed value or raises ValueError
with a message a person can act on. CSV gives text, JSON Lines gives JSON types: both work.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any

from ..config import is_known_timezone, normalize_locale
from ..errors import shown

# The WHATWG HTML "valid e-mail address" grammar: what browsers accept in <input type=email>.
EMAIL_ADDRESS = re.compile(
    r"^[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
    r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)+$"
)
# The years an imported time may fall in (as `--at`): expiry, reviews and schedules add up to
# 100 years to it and stay far inside what dates and the databases hold.
YEARS = (1900, 2200)
# A birthday is from this day up to the day of the import: earlier is no one's (0001-01-01 is a
# placeholder for "unknown"), later has not happened yet.
FIRST_BIRTHDAY = date(1900, 1, 1)
AHEAD_OF_UTC = timedelta(hours=14)  # the zone furthest ahead: a birthday today there is not refused
_TOO_LARGE, _CENT = Decimal("1e16"), Decimal("0.01")  # amounts are below the first, to the second
_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f"}


def is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def text(value: Any, *, max_length: int) -> str:
    value = str(value).strip()
    if len(value) > max_length:
        raise ValueError(f"longer than {max_length} characters")
    return value


def member_id(value: Any) -> str:
    value = text(value, max_length=64)
    if not value:
        raise ValueError("is empty")
    return value


def email(value: Any) -> str:
    value = str(value).strip()
    if not value:
        raise ValueError("is empty")
    if len(value) > 254 or not EMAIL_ADDRESS.match(value):
        raise ValueError(f"'{value}' is not a valid email address")
    return value


def timezone_name(value: Any) -> str:
    value = str(value).strip()
    if not is_known_timezone(value):
        raise ValueError(f"unknown time zone '{value}' (an IANA name such as Asia/Ho_Chi_Minh)")
    return value


def locale(value: Any) -> str:
    canonical = normalize_locale(str(value).strip())
    if canonical is None:
        raise ValueError(f"unknown locale '{value}' (e.g. en, vi, en_US, vi_VN)")
    return canonical


def instant(value: Any, default_zone: tzinfo) -> datetime:
    """An ISO 8601 date or date-time; one without an offset is taken in `default_zone`."""
    raw = str(value).strip()
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"'{raw}' is not a valid ISO 8601 date or time (e.g. 2026-03-01T09:30:00+07:00)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=default_zone)
    try:
        years = (parsed.year, parsed.astimezone(timezone.utc).year)
    except OverflowError:
        years = (parsed.year, 0)
    if not all(YEARS[0] <= year <= YEARS[1] for year in years):
        raise ValueError(f"{shown(raw)} is outside the years {YEARS[0]} to {YEARS[1]}")
    return parsed


def calendar_date(value: Any) -> date:
    raw = str(value).strip()
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"'{raw}' is not a valid date (YYYY-MM-DD)") from None


def latest_birthday(now: datetime) -> date:
    """The latest birthday an import at `now` takes: today's date in the zone furthest ahead."""
    return (now.astimezone(timezone.utc) + AHEAD_OF_UTC).date()


def birthday(value: Any, *, latest: date) -> date:
    """A date of birth from FIRST_BIRTHDAY up to `latest` (see latest_birthday)."""
    day = calendar_date(value)
    if day < FIRST_BIRTHDAY:
        raise ValueError(f"{day.isoformat()} is before {FIRST_BIRTHDAY.isoformat()}: leave the cell blank when "
                         "the birthday is not known")
    if day > latest:
        raise ValueError(f"{day.isoformat()} is in the future (the import is on {latest.isoformat()})")
    return day


def whole_number(value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected a whole number, found {shown(value)}")
    if isinstance(value, int):
        number = value
    else:
        raw = str(value).strip()
        try:
            number = int(raw)
        except ValueError:
            try:
                as_decimal = Decimal(raw)
            except InvalidOperation:
                raise ValueError(f"'{raw}' is not a whole number") from None
            if not as_decimal.is_finite() or as_decimal != as_decimal.to_integral_value():
                raise ValueError(f"'{raw}' is not a whole number") from None
            number = int(as_decimal)
    if minimum is not None and number < minimum:
        raise ValueError(f"{number} is below {minimum}" if minimum else f"{number} is negative")
    if maximum is not None and number > maximum:
        raise ValueError(f"{number} is above {maximum}")
    return number


def money(value: Any, *, allow_negative: bool = False) -> Decimal:
    if isinstance(value, bool):
        raise ValueError(f"expected an amount, found {shown(value)}")
    raw = str(value).strip()
    try:
        amount = Decimal(raw)
    except InvalidOperation:
        raise ValueError(f"'{raw}' is not a number") from None
    if not amount.is_finite():
        raise ValueError(f"'{raw}' is not a number")
    if amount < 0 and not allow_negative:
        raise ValueError(f"{raw} is negative")
    if abs(amount) >= _TOO_LARGE:
        raise ValueError(f"{raw} is too large")
    return amount.quantize(_CENT)


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raw = str(value).strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ValueError(f"'{value}' is not true or false (use true/false, yes/no or 1/0)")


def custom_value(value: Any) -> Any:
    """A custom attribute: JSON values stay as they are, text is kept as text (trimmed)."""
    return value.strip() if isinstance(value, str) else value

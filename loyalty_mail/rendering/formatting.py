"""Locale-aware filters for templates, formatted by Babel: money, numbers, points, dates, zones.

Each filter takes the member's locale from the template context (`locale`), so a template writes
`{{ member.total_spend | money }}` and a Vietnamese member reads `1.250.000 ₫`. A value or an
argument a filter cannot take (text that is not a number, a currency code Babel does not know, a
`truncate` length shorter than its ending) is a TypeError or ValueError that says so, which the
template reports at its line.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import babel
import babel.dates
import babel.numbers
from jinja2 import filters as jinja_filters
from jinja2 import pass_context, pass_environment
from jinja2.environment import Environment
from jinja2.runtime import Context


@lru_cache(maxsize=64)
def babel_locale(identifier: str) -> babel.Locale:
    return babel.Locale.parse(identifier.replace("-", "_"))


def _locale(context: Context) -> babel.Locale:
    return babel_locale(context.get("locale") or "en")


@pass_context
def money(context: Context, amount: Any, currency: str | None = None) -> str:
    """`1250000 | money` -> `1.250.000 ₫` (vi) or `₫1,250,000` (en); currency defaults to the program's."""
    code = currency or context["program"]["currency"]
    if not isinstance(code, str) or not babel.numbers.is_currency(code):
        raise ValueError(f"`| money` takes an ISO 4217 currency code such as VND or USD, not {str(code)[:60]!r}")
    return babel.numbers.format_currency(_decimal(amount, "money"), code, locale=_locale(context))


def _decimal(value: Any, name: str) -> Decimal:
    """A number the filter can write; otherwise a TypeError that names the filter and the value."""
    if isinstance(value, Decimal) and value.is_finite():
        return value
    if not isinstance(value, bool) and isinstance(value, (int, float, str)):
        try:
            number = Decimal(str(value).strip())
        except ArithmeticError:
            pass
        else:
            if number.is_finite():
                return number
    raise TypeError(f"`| {name}` needs a number, not {type(value).__name__} {str(value)[:60]!r}")


@pass_context
def number(context: Context, value: Any, digits: int | None = None) -> str:
    """`12500 | number` -> `12.500` (vi) or `12,500` (en)."""
    number = _decimal(value, "number")
    if digits is not None:
        number = round(number, digits)
    return babel.numbers.format_decimal(number, locale=_locale(context))


@lru_cache(maxsize=64)
def _thousands_separator(identifier: str) -> str | None:
    """The grouping symbol when the locale groups integers by threes (most do), else None."""
    locale = babel_locale(identifier)
    pattern = locale.decimal_formats[None]
    if pattern.grouping != (3, 3):
        return None
    return locale.number_symbols["latn"]["group"] if "latn" in locale.number_symbols else \
        locale.number_symbols["group"]


@pass_context
def points(context: Context, value: Any) -> str:
    """Whole points, grouped for the locale: `12500 | points` -> `12.500`."""
    number = int(value)
    separator = _thousands_separator(context.get("locale") or "en")
    if separator is None:
        return babel.numbers.format_decimal(number, locale=_locale(context))
    return f"{number:,}".replace(",", separator)


def _moment(value: Any, name: str, kinds: tuple[type, ...]) -> Any:
    """The filter's value when it is one of `kinds`; otherwise a TypeError that the template
    reports at its line (babel would stop on an assertion, naming nothing)."""
    if isinstance(value, kinds):
        return value
    what = "a date or a datetime" if date in kinds else "a datetime"
    raise TypeError(f"`| {name}` needs {what}, not {type(value).__name__} {str(value)[:60]!r}")


def _formatted(name: str, format: str, write: Any, value: Any, locale: babel.Locale) -> str:
    try:
        return str(write(value, format=format, locale=locale))
    except (AttributeError, KeyError) as exc:  # babel on a field the value lacks (a zone on a date...)
        raise ValueError(f"`| {name}` cannot write {type(value).__name__} values in the format {format!r}") from exc


@pass_context
def localtime(context: Context, value: datetime, zone: str | None = None) -> datetime:
    """An aware UTC datetime in the member's time zone (or the zone given)."""
    value = _moment(value, "localtime", (datetime,))
    name = zone or context.get("timezone") or "UTC"
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(ZoneInfo(name))


@pass_context
def format_date(context: Context, value: date | datetime, format: str = "long") -> str:
    """`member.joined_on | date` -> `23 tháng 11, 2026` (vi) or `November 23, 2026` (en).

    A datetime is first moved to the member's time zone, so the day is the member's day.
    """
    value = _moment(value, "date", (date, datetime))
    if isinstance(value, datetime):
        value = localtime(context, value).date()
    return _formatted("date", format, babel.dates.format_date, value, _locale(context))


@pass_context
def format_datetime(context: Context, value: datetime, format: str = "medium") -> str:
    """A moment in the member's time zone, e.g. `23 thg 11, 2026 08:00:00`."""
    value = _moment(value, "datetime", (datetime,))
    return _formatted("datetime", format, babel.dates.format_datetime, localtime(context, value),
                      _locale(context))


@pass_environment
def truncate(environment: Environment, text: str, length: int = 255, killwords: bool = False, end: str = "...",
             leeway: int | None = None) -> str:
    """Jinja's `truncate`, its length and leeway checked (Jinja only asserts them)."""
    if not isinstance(length, int) or length < len(end):
        raise ValueError(f"`| truncate` needs a length of at least {len(end)} (the length of its ending "
                         f"{end!r}), not {length!r}")
    if leeway is not None and (not isinstance(leeway, int) or leeway < 0):
        raise ValueError(f"`| truncate` needs a leeway of 0 or more, not {leeway!r}")
    return jinja_filters.do_truncate(environment, text, length, killwords, end, leeway)


FILTERS = {
    "truncate": truncate,
    "money": money,
    "number": number,
    "points": points,
    "localtime": localtime,
    "date": format_date,
    "datetime": format_datetime,
}

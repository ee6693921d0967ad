"""Typed values for the fields of a sample occurrence (`preview --set KEY=VALUE`): numbers must be
numbers, times and dates ISO 8601 text, reward lists and the next reward name rewards of the
catalogue, so that a mistyped value is an error about the value, never a template error or a list
iterated letter by letter."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..config import Settings
from ..errors import shown as quoted
from .context import OCCURRENCE_DATES, OCCURRENCE_TIMES

NUMBER_FIELDS = frozenset({"threshold", "years", "points", "balance", "age", "days_before", "earned", "redeemed",
                           "expired", "expiring", "needed", "to_regain", "to_next_tier"})
REWARD_LIST_FIELDS = frozenset({"newly", "affordable"})


class OccurrenceValueError(ValueError):
    """A `--set` value that the field cannot hold: says the field, the value and what is allowed."""


def occurrence_value(key: str, value: str, settings: Settings) -> object:
    """`value` as the field `key` holds it: a whole number, a list of reward names (comma-separated),
    a reward name for `next` (`none` for none, its cost and what is missing filled in later by
    `with_standing`), a time or date checked as ISO 8601, or the text as given."""
    if key in NUMBER_FIELDS:
        try:
            return int(value)
        except ValueError:
            raise OccurrenceValueError(f"{key}: {quoted(value)} is not a whole number") from None
    if key in REWARD_LIST_FIELDS:
        names = [name.strip() for name in value.split(",") if name.strip()]
        for name in names:
            _reward(key, name, settings)
        return names
    if key == "next":
        return None if value == "none" else _reward(key, value, settings)
    if key in OCCURRENCE_TIMES or key in OCCURRENCE_DATES:
        try:
            datetime.fromisoformat(value)  # the template sees it as a datetime (or a date)
        except ValueError:
            example = "2026-12-31" if key in OCCURRENCE_DATES else "2026-12-31T17:00:00+07:00"
            raise OccurrenceValueError(f"{key}: {quoted(value)} is not an ISO 8601 "
                                       f"{'date' if key in OCCURRENCE_DATES else 'time'} (e.g. {example})") from None
    return value


def with_standing(occurrence: dict[str, Any], given: set[str], settings: Settings) -> dict[str, Any]:
    """`occurrence` with `affordable` and `next` following its balance from the catalogue, unless
    given; a `next` given by name gets its cost and what the balance misses."""
    balance = occurrence.get("balance")
    if not settings.rewards or not isinstance(balance, int):
        return occurrence
    standing = settings.reward_standing(balance)
    result = dict(occurrence)
    if "balance" in given:
        for key in ("affordable", "next"):
            if key not in given:
                result[key] = standing[key]
    nxt = result.get("next")
    if "next" in given and isinstance(nxt, str):
        cost = next(r.cost for r in settings.rewards if r.name == nxt)
        result["next"] = {"name": nxt, "cost": cost, "needed": max(cost - balance, 0)}
    return result


def _reward(key: str, name: str, settings: Settings) -> str:
    names = [r.name for r in settings.rewards]
    if name not in names:
        allowed = ", ".join(names) if names else "none: the program has no `rewards:` catalogue"
        raise OccurrenceValueError(f"{key}: unknown reward {quoted(name)} (rewards: {allowed})")
    return name

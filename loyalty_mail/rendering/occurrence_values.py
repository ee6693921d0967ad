"""Typed values for the fields of a sample occurrence (`preview --set KEY=VALUE`): numbers must be
numbers (none below 0), times and dates ISO 8601 text, a month `YYYY-MM`, tiers tiers of the
ladder, a measure `spend` or `points_earned`, reward lists and the next reward name rewards of the
catalogue, so that a mistyped value is an error about the value, never a template error or a list
iterated letter by letter."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from ..config import Settings
from ..errors import shown as quoted
from .context import OCCURRENCE_DATES, OCCURRENCE_TIMES

NUMBER_FIELDS = frozenset({"threshold", "years", "points", "balance", "age", "days_before", "earned", "redeemed",
                           "expired", "expiring", "needed", "to_regain", "to_next_tier"})
REWARD_LIST_FIELDS = frozenset({"newly", "affordable"})
TIER_FIELDS = frozenset({"old_tier", "new_tier", "tier", "downgrade_to", "next_tier"})
MEASURES = ("spend", "points_earned")
_MONTH = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])")


class OccurrenceValueError(ValueError):
    """A `--set` value that the field cannot hold: says the field, the value and what is allowed."""


def occurrence_value(key: str, value: str, settings: Settings) -> object:
    """`value` as the field `key` holds it: a whole number (0 or more), a tier of the ladder, a list of reward names (comma-separated),
    a reward name for `next` (`none` for none, its cost and what is missing filled in later by
    `with_standing`), a time or date checked as ISO 8601, or the text as given."""
    if key in NUMBER_FIELDS:
        try:
            number = int(value)
        except ValueError:
            raise OccurrenceValueError(f"{key}: {quoted(value)} is not a whole number") from None
        if number < 0:
            raise OccurrenceValueError(f"{key}: {quoted(value)} is below 0 (a whole number, 0 or more)")
        return number
    if key in TIER_FIELDS:
        tiers = [level.name for level in settings.tiers.levels]
        if key == "next_tier" and value == "none":  # a statement at the top of the ladder
            return None
        if value not in tiers:
            extra = ", or none at the top" if key == "next_tier" else ""
            raise OccurrenceValueError(f"{key}: unknown tier {quoted(value)} (tiers: {', '.join(tiers)}{extra})")
        return value
    if key == "measure" and value not in MEASURES:
        raise OccurrenceValueError(f"measure: {quoted(value)} is not a measure (measures: {', '.join(MEASURES)})")
    if key == "month" and not _MONTH.fullmatch(value):
        raise OccurrenceValueError(f"month: {quoted(value)} is not a month written YYYY-MM (e.g. 2026-11)")
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

"""Segment-spec messages (identify, track, batch) turned into our member and event rows. Pure.

Segment, RudderStack and Jitsu send the same documented shapes: `userId` is the member id,
`messageId` the event id (so a retried message is applied once), `timestamp` when it happened.
- identify: `traits` (or `context.traits`) become member fields: email, firstName/first_name,
  lastName/last_name, name (split when first and last are absent), birthday, createdAt/created_at
  (-> joined_at), timezone, locale (or `context.locale`); every other trait a custom attribute.
- track: `ingest.segment.events` maps an event name to our type and says where its amount,
  points and currency are (`properties.revenue`); an unmapped name becomes its snake_case
  (`Product Viewed` -> `product_viewed`). `properties` are kept as the event's properties.
- page, screen, group and alias carry nothing a loyalty program keeps: accepted, ignored.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from ..config import SegmentEventMapping
from ..importing.readers import PROBLEMS

IGNORED_TYPES = ("page", "screen", "group", "alias")
TRAIT_FIELDS = {"email": "email", "firstName": "first_name", "first_name": "first_name",
                "lastName": "last_name", "last_name": "last_name", "birthday": "birthday",
                "createdAt": "joined_at", "created_at": "joined_at", "timezone": "timezone",
                "locale": "locale"}
DROPPED_TRAITS = {"id", "userId", "user_id", "name", "updatedAt", "updated_at"}
_NOT_WORD = re.compile(r"[^a-z0-9]+")


def identify_row(message: dict[str, Any]) -> dict[str, Any]:
    """A `members import` row from an identify message."""
    context = _object(message.get("context"))
    traits = message.get("traits")
    if not isinstance(traits, dict):
        traits = _object(context.get("traits"))
    row: dict[str, Any] = {"member_id": message.get("userId")}
    attributes: dict[str, Any] = {}
    for name, value in traits.items():
        if name in TRAIT_FIELDS:
            row[TRAIT_FIELDS[name]] = value
        elif name not in DROPPED_TRAITS:
            attributes[name] = value
    name = traits.get("name")
    if isinstance(name, str) and "first_name" not in row and "last_name" not in row:
        first, _, last = name.strip().partition(" ")
        row["first_name"], row["last_name"] = first, last.strip()
    if "locale" not in row and isinstance(context.get("locale"), str):
        row["locale"] = context["locale"]
    if attributes:
        row["attributes"] = attributes
    return _checked(message, row)


def track_row(message: dict[str, Any], mappings: dict[str, SegmentEventMapping], now: datetime) -> dict[str, Any]:
    """An `events import` row from a track message."""
    name = message.get("event")
    properties = message.get("properties") if isinstance(message.get("properties"), dict) else {}
    row: dict[str, Any] = {"event_id": message.get("messageId"), "member_id": message.get("userId"),
                           "occurred_at": _when(message, now), "properties": properties}
    problems = []
    if not isinstance(name, str) or not name.strip():
        problems.append(("event", "is required: the name of what the member did"))
    else:
        mapping = mappings.get(name)
        row["type"] = mapping.type if mapping else _NOT_WORD.sub("_", name.lower()).strip("_")
        if mapping is not None:
            for field in ("amount", "points", "currency"):
                path = getattr(mapping, field)
                if path is not None:
                    row[field] = lookup(message, path)
    email = lookup(message, "context.traits.email")
    if email is not None:
        row["email"] = email
    return _checked(message, row, problems)


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def lookup(message: dict[str, Any], path: str) -> Any:
    """The value at a dotted path (`properties.revenue`), or None."""
    value: Any = message
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


TIME_KEYS = ("timestamp", "originalTimestamp", "sentAt", "receivedAt")


def timed(message: dict[str, Any]) -> bool:
    """Whether the message says when it happened (else it happened when it arrived: a retry of it
    arrives at another time)."""
    return any(message.get(key) not in (None, "") for key in TIME_KEYS)


def _when(message: dict[str, Any], now: datetime) -> Any:
    for key in TIME_KEYS:
        if message.get(key) not in (None, ""):
            return message[key]
    return now.isoformat()  # the spec: a message without a timestamp happened when it arrived


def _checked(message: dict[str, Any], row: dict[str, Any], problems: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    problems = list(problems or [])
    user = message.get("userId")
    if user is None or (isinstance(user, str) and not user.strip()):
        problems.insert(0, ("userId", "is required: a message with only an anonymousId is not about a member"))
    elif not isinstance(user, (str, int)) or isinstance(user, bool):
        problems.insert(0, ("userId", "must be a string"))
    if problems:
        return {**row, PROBLEMS: problems}
    return row

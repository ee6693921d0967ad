"""What every template sees: member, tier, program, flow, occurrence and event, helpers and links.

The README ("Template context") documents each name; `test_docs` keeps the two in step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from ..config import Settings
from ..signing import coupon_code
from ..tiers import TierLadder

MEMBER_FIELDS = (
    "member_id", "email", "first_name", "last_name", "locale", "timezone", "joined_at",
    "joined_on", "birthday", "points", "tier", "total_spend", "purchase_count",
    "last_purchase_at", "nps_score", "subscribed", "attributes",
)
CONTEXT_NAMES = (
    "member", "tier", "program", "flow", "occurrence", "event", "coupon", "tier_label", "reward_label",
    "unsubscribe_url", "preferences_url", "view_in_browser_url", "confirm_url", "locale", "timezone", "now",
    "subject", "preheader",
)


class Helper:
    """A function of ours that templates call (`coupon`, `tier_label`, `open_pixel_url`): plain,
    safe, taking no Jinja context. The renderer's sandbox calls it directly, without the checks
    it runs on callables it knows nothing about."""

    __slots__ = ("function",)

    def __init__(self, function: Callable[..., str]) -> None:
        self.function = function

    def __call__(self, *args: Any, **kwargs: Any) -> str:
        return self.function(*args, **kwargs)


@dataclass(frozen=True)
class Links:
    """The per-send URLs a template may print (tracking is added by the renderer, not here)."""

    unsubscribe_url: str
    preferences_url: str
    view_in_browser_url: str
    confirm_url: str


def member_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """The member as templates see it: stored fields plus `name` (first and last)."""
    member = {name: row.get(name) for name in MEMBER_FIELDS}
    member["attributes"] = dict(row.get("attributes") or {})
    first, last = member["first_name"] or "", member["last_name"] or ""
    member["name"] = f"{first} {last}".strip() or None
    return member


class TierViews:
    """The member's tier, its perks in their language, the next tier and how far it is. What
    depends only on the tier and the locale is built once; a member adds their standing."""

    def __init__(self, settings: Settings, ladder: TierLadder) -> None:
        self._levels, self._ladder = settings.tiers.levels, ladder
        self._default_locale = settings.program.default_locale
        self._fixed: dict[tuple[int, str], dict[str, Any]] = {}

    def _fixed_part(self, rank: int, locale: str) -> dict[str, Any]:
        key = (rank, locale)
        if key not in self._fixed:
            level, default = self._levels[rank], self._default_locale
            next_level = self._levels[rank + 1] if rank + 1 < len(self._levels) else None
            self._fixed[key] = {
                "name": level.name,
                "label": level.label_for(locale, default),
                "rank": rank,
                "perks": list(level.perks_for(locale, default)),
                "threshold": level.threshold,
                "next": None if next_level is None else {
                    "name": next_level.name,
                    "label": next_level.label_for(locale, default),
                    "threshold": next_level.threshold,
                    "perks": list(next_level.perks_for(locale, default)),
                },
                "basis": self._ladder.basis,
            }
        return self._fixed[key]

    def __call__(self, member: Mapping[str, Any], locale: str) -> dict[str, Any]:
        ladder = self._ladder
        name = member.get("tier") or self._levels[0].name
        rank = ladder.rank(name) if name in ladder.names else 0
        level = self._levels[rank]
        standing = Decimal(member.get("points") or 0) if ladder.basis == "points" else Decimal(
            member.get("total_spend") or 0)
        next_level = self._levels[rank + 1] if rank + 1 < len(self._levels) else None
        to_next = max(next_level.threshold - standing, Decimal(0)) if next_level else None
        span = (next_level.threshold - level.threshold) if next_level else None
        return {
            **self._fixed_part(rank, locale),
            "to_next": to_next,
            "progress": float(min((standing - level.threshold) / span, Decimal(1))) if span else 1.0,
        }


@dataclass(frozen=True)
class EventView:
    """The event that triggered an event flow, as templates see it: `event.amount` (a number),
    `event.points`, `event.items`, `event.properties.store`. An object, not a dict, so that
    `event.items` is the order's items and not the dict method."""

    id: str
    type: str
    occurred_at: datetime | None
    amount: Decimal | None
    currency: str | None
    points: int | None
    items: Any  # the `items` property as sent: a list of line items, or a count
    properties: dict[str, Any]


def event_view(occurrence: Mapping[str, Any] | None) -> EventView | None:
    """The event an occurrence carries (None for the other triggers)."""
    stored = (occurrence or {}).get("event")
    if not isinstance(stored, Mapping):
        return None
    amount, when = stored.get("amount"), stored.get("occurred_at")
    return EventView(
        id=str(stored.get("id", "")), type=str(stored.get("type", "")),
        occurred_at=datetime.fromisoformat(when) if isinstance(when, str) else None,
        amount=None if amount is None else Decimal(str(amount)), currency=stored.get("currency"),
        points=stored.get("points"), items=stored.get("items") or [],
        properties=dict(stored.get("properties") or {}))


OCCURRENCE_TIMES = ("review_at", "grace_until", "expires_at", "expiring_until")
OCCURRENCE_DATES = ("birthday", "period_start", "period_end")  # the program's calendar month


def affordable_rewards(settings: Settings, points: int, locale: str) -> list[dict[str, Any]]:
    """What `points` could buy in the rewards catalogue (`rewards:` in config.yaml), cheapest
    first, for a points expiry reminder (`occurrence.could_buy`): each with `name`, `label` (in
    the member's language) and `points` (its cost). Empty without a catalogue."""
    default_locale = settings.program.default_locale
    return [{"name": r.name, "label": r.label_for(locale, default_locale), "points": r.cost}
            for r in sorted(settings.rewards, key=lambda r: (r.cost, r.name)) if r.cost <= points]


def occurrence_view(occurrence: Mapping[str, Any] | None, settings: Settings,
                    locale: str) -> dict[str, Any] | None:
    """The occurrence as templates see it: times and dates the ledger keeps as ISO text become
    datetimes and dates (for the `date` and `datetime` filters), amounts kept as text numbers, and
    for a points expiry what its points could buy (`could_buy`)."""
    if not occurrence:
        return None
    view = dict(occurrence)
    for name in (*OCCURRENCE_TIMES, *OCCURRENCE_DATES):
        value = view.get(name)
        if isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                continue
            view[name] = parsed.date() if name in OCCURRENCE_DATES else parsed
    for name in ("needed", "threshold", "to_regain", "to_next_tier"):
        value = view.get(name)
        if isinstance(value, str):
            view[name] = Decimal(value)
    if "expires_at" in view:
        points = view.get("points")
        view["could_buy"] = affordable_rewards(settings, points, locale) if isinstance(points, int) else []
    return view


def program_view(settings: Settings) -> dict[str, Any]:
    program = settings.program
    return {
        "name": program.name, "currency": program.currency, "sender_name": program.sender_name,
        "sender_email": program.sender_email, "postal_address": program.postal_address,
        "default_locale": program.default_locale,
    }


class ContextBuilder:
    """Builds the context of one email; what is the same for every member is made once."""

    def __init__(self, settings: Settings, ladder: TierLadder, coupon_secret: bytes) -> None:
        self._settings = settings
        self._program = program_view(settings)  # templates cannot change it: the sandbox is immutable
        self._tiers = TierViews(settings, ladder)
        self._coupon_secret = coupon_secret
        self._tier_labels: dict[str, Helper] = {}  # by locale
        self._reward_labels: dict[str, Helper] = {}  # by locale

    def _tier_label(self, locale: str) -> Helper:
        """`tier_label(name)`: the display name of any tier (e.g. the old tier of an upgrade) in
        this locale. The same for every member with the locale, so made once per locale."""
        if locale not in self._tier_labels:
            default = self._settings.program.default_locale
            labels = {level.name: level.label_for(locale, default) for level in self._settings.tiers.levels}
            self._tier_labels[locale] = Helper(lambda name: labels.get(name, str(name)))
        return self._tier_labels[locale]

    def _reward_label(self, locale: str) -> Helper:
        """`reward_label(name)`: the display name of a reward of the catalogue in this locale."""
        if locale not in self._reward_labels:
            default = self._settings.program.default_locale
            labels = {reward.name: reward.label_for(locale, default) for reward in self._settings.rewards}
            self._reward_labels[locale] = Helper(lambda name: labels.get(name, str(name)))
        return self._reward_labels[locale]

    def build(self, *, member_row: Mapping[str, Any], locale: str, links: Links, now: datetime,
              flow: Mapping[str, Any] | None = None,
              occurrence: Mapping[str, Any] | None = None) -> dict[str, Any]:
        settings = self._settings
        member = member_view(member_row)
        scope = f"{(flow or {}).get('name', '')}:{(occurrence or {}).get('key', '')}"
        issued: dict[tuple[str, int], str] = {}  # the HTML and text parts print the same codes

        def coupon(prefix: str = "", length: int = 8) -> str:
            if (prefix, length) not in issued:
                issued[(prefix, length)] = coupon_code(self._coupon_secret, str(member["member_id"]), scope,
                                                       prefix, length)
            return issued[(prefix, length)]

        return {
            "member": member,
            "tier_label": self._tier_label(locale),
            "reward_label": self._reward_label(locale),
            "tier": self._tiers(member, locale),
            "program": self._program,
            "flow": dict(flow) if flow else None,
            "occurrence": occurrence_view(occurrence, settings, locale),
            "event": event_view(occurrence),
            "coupon": Helper(coupon),
            "unsubscribe_url": links.unsubscribe_url,
            "preferences_url": links.preferences_url,
            "view_in_browser_url": links.view_in_browser_url,
            "confirm_url": links.confirm_url,
            "locale": locale,
            "timezone": member.get("timezone") or settings.program.default_timezone,
            "now": now,
        }

"""A realistic, deterministic demo program: members and their events, as import rows.

Purchase behaviour (orders per customer, gaps between orders, order values) is sampled from a
profile of real CDNOW purchase history (`cdnow_profile.json`, see calibrate.py). Names, emails,
locales (vi and en), time zones, birthdays and NPS scores are synthesised. The same seed and the
same `now` always give the same program.
"""

from __future__ import annotations

import bisect
import json
import random
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from functools import cached_property
from pathlib import Path
from typing import Any

PROFILE_PATH = Path(__file__).with_name("cdnow_profile.json")

# Illustrative rates for turning 1990s US-dollar CD orders into demo amounts; not for accounting.
DEMO_RATES = {"USD": Decimal(1), "VND": Decimal(25000), "EUR": Decimal("0.92"), "GBP": Decimal("0.79"),
              "SGD": Decimal("1.35"), "AUD": Decimal("1.52"), "JPY": Decimal(150), "THB": Decimal(36)}
WHOLE_UNIT_CURRENCIES = {"VND": Decimal(1000), "JPY": Decimal(1), "THB": Decimal(1)}

VI_FAMILY = ["Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng", "Bùi",
             "Đỗ", "Hồ", "Ngô", "Dương", "Lý"]
VI_GIVEN = ["An", "Bình", "Châu", "Dũng", "Giang", "Hà", "Hải", "Hạnh", "Hiếu", "Hoa", "Hùng", "Hương",
            "Khánh", "Lan", "Linh", "Long", "Mai", "Minh", "Nam", "Ngọc", "Phong", "Phương", "Quân",
            "Quỳnh", "Sơn", "Tâm", "Thảo", "Thành", "Trang", "Trung", "Tuấn", "Vy", "Yến", "Đức"]
EN_FIRST = ["Olivia", "Liam", "Emma", "Noah", "Amelia", "Oliver", "Ava", "Elijah", "Sophia", "James",
            "Isabella", "William", "Mia", "Benjamin", "Charlotte", "Lucas", "Harper", "Henry", "Grace",
            "Jack", "Chloe", "Leo", "Zoe", "Samuel", "Ruby", "Daniel", "Ella", "Thomas"]
EN_LAST = ["Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Wilson",
           "Taylor", "Anderson", "Thomas", "Moore", "Martin", "Lee", "Walker", "Hall", "Young", "King",
           "Wright", "Scott", "Green", "Baker", "Adams", "Nelson", "Hill", "Campbell", "Mitchell"]
VI_ZONES = [("Asia/Ho_Chi_Minh", 85), ("Australia/Sydney", 5), ("America/Los_Angeles", 5),
            ("Europe/Berlin", 5)]
EN_ZONES = [("Asia/Ho_Chi_Minh", 30), ("Asia/Singapore", 20), ("America/New_York", 20),
            ("Europe/London", 15), ("Australia/Sydney", 15)]
CITIES = {"Asia/Ho_Chi_Minh": ["Hồ Chí Minh", "Hà Nội", "Đà Nẵng", "Cần Thơ", "Huế"],
          "Asia/Singapore": ["Singapore"], "America/New_York": ["New York", "Boston"],
          "Europe/London": ["London", "Manchester"], "Australia/Sydney": ["Sydney"],
          "America/Los_Angeles": ["San Jose", "Los Angeles"], "Europe/Berlin": ["Berlin"]}
CHANNELS = [("store", 55), ("web", 30), ("app", 15)]

HISTORY_DAYS = 730
RECENT_SIGNUP_SHARE = 0.03
VI_SHARE = 0.6


@dataclass(frozen=True)
class Profile:
    """Purchase behaviour sampled from real data."""

    window_days: int
    orders: list[tuple[int, int]]
    gap_quantiles: list[float]
    value_quantiles: list[float]
    items: list[tuple[int, int]]

    @classmethod
    def load(cls, path: Path = PROFILE_PATH) -> Profile:
        raw = json.loads(path.read_text())
        return cls(
            window_days=raw["window_days"],
            orders=[(int(k), v) for k, v in raw["orders_per_customer"].items()],
            gap_quantiles=raw["gap_days_quantiles"],
            value_quantiles=raw["order_value_usd_quantiles"],
            items=[(int(k), v) for k, v in raw["items_per_order"].items()],
        )

    @cached_property
    def _orders_cdf(self) -> tuple[list[int], list[int]]:
        return _cdf(self.orders)

    @cached_property
    def _items_cdf(self) -> tuple[list[int], list[int]]:
        return _cdf(self.items)

    def order_count(self, rng: random.Random) -> int:
        return _pick(self._orders_cdf, rng)

    def items_in_order(self, rng: random.Random) -> int:
        return _pick(self._items_cdf, rng)

    def gap_days(self, rng: random.Random) -> float:
        return max(1.0, _interpolate(self.gap_quantiles, rng.random()))

    def order_value_usd(self, rng: random.Random) -> float:
        return _interpolate(self.value_quantiles, rng.random())


def _cdf(weights: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    values, cumulative, total = [], [], 0
    for value, weight in weights:
        total += weight
        values.append(value)
        cumulative.append(total)
    return values, cumulative


def _pick(cdf: tuple[list[int], list[int]], rng: random.Random) -> int:
    values, cumulative = cdf
    return values[bisect.bisect_right(cumulative, rng.random() * cumulative[-1])]


def _interpolate(quantiles: list[float], u: float) -> float:
    position = u * (len(quantiles) - 1)
    low = int(position)
    high = min(low + 1, len(quantiles) - 1)
    return quantiles[low] + (quantiles[high] - quantiles[low]) * (position - low)


def _weighted(rng: random.Random, choices: list[tuple[str, int]]) -> str:
    return rng.choices([c for c, _ in choices], weights=[w for _, w in choices])[0]


def ascii_slug(text: str) -> str:
    """`Đặng Thảo` -> `dang.thao` (for synthetic email addresses)."""
    text = text.replace("Đ", "D").replace("đ", "d")
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return ".".join(part.lower() for part in folded.split())


@dataclass
class DemoProgram:
    """Generates `members` members and their events, deterministically from `seed` and `now`."""

    members: int
    now: datetime
    currency: str
    points_per_currency_unit: Decimal
    seed: int = 1
    profile: Profile = field(default_factory=Profile.load)

    def rows(self) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
        """(member row, that member's event rows) for every member."""
        rng = random.Random(self.seed)
        for number in range(1, self.members + 1):
            yield self._member(rng, number)

    def newcomer(self, rng: random.Random, number: int, joined: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
        """A member who signs up at `joined` (the demo's simulated days): member row, signup event."""
        member, _ = self._member(rng, number, joined=joined.replace(microsecond=0), history=False)
        signup = {"event_id": f"{member['member_id']}-signup", "member_id": member["member_id"], "type": "signup",
                  "occurred_at": member["joined_at"]}
        return member, signup

    def purchase_amount(self, rng: random.Random) -> Decimal:
        """One order's value in the program's currency, sampled from the real-data profile."""
        return self._amount(self.profile.order_value_usd(rng))

    def _member(self, rng: random.Random, number: int, joined: datetime | None = None,
                history: bool = True) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        member_id = f"LM{number:07d}"
        vietnamese = rng.random() < VI_SHARE
        if vietnamese:
            family, given = rng.choice(VI_FAMILY), rng.choice(VI_GIVEN)
            first, last, zone = given, family, _weighted(rng, VI_ZONES)
            slug = ascii_slug(f"{given} {family}")
        else:
            first, last, zone = rng.choice(EN_FIRST), rng.choice(EN_LAST), _weighted(rng, EN_ZONES)
            slug = ascii_slug(f"{first} {last}")
        if joined is None:
            if rng.random() < RECENT_SIGNUP_SHARE:
                joined = self.now - timedelta(days=rng.uniform(0, 7))
            else:
                joined = self.now - timedelta(days=rng.uniform(7, HISTORY_DAYS))
            joined = joined.replace(microsecond=0)
        birthday = date(self.now.year - rng.randint(18, 70), 1, 1) + timedelta(days=rng.randrange(366))
        events = self._events(rng, member_id, joined) if history else []
        purchases = sum(1 for e in events if e["type"] == "purchase")
        member = {
            "member_id": member_id,
            "email": f"{slug}.{number}@example.{rng.choice(['com', 'net', 'org'])}",
            "first_name": first, "last_name": last,
            "locale": "vi" if vietnamese else "en", "timezone": zone,
            "joined_at": joined.isoformat(), "birthday": birthday.isoformat(),
            "nps_score": self._nps(rng, purchases),
            "subscribed": "false" if rng.random() < 0.04 else "true",
            "city": rng.choice(CITIES[zone]),
            "channel": _weighted(rng, CHANNELS),
        }
        return member, events

    def _nps(self, rng: random.Random, purchases: int) -> int | None:
        if rng.random() < 0.4:
            return None
        loyal = min(purchases, 10) / 10
        roll = rng.random()
        if roll < 0.2 + 0.5 * loyal:
            return rng.choice([9, 10])
        if roll < 0.55 + 0.3 * loyal:
            return rng.choice([7, 8])
        return rng.randint(0, 6)

    def _events(self, rng: random.Random, member_id: str, joined: datetime) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = [{"event_id": f"{member_id}-signup", "member_id": member_id,
                                         "type": "signup", "occurred_at": joined.isoformat()}]
        balance = 0
        when = joined + timedelta(hours=rng.uniform(0, 72))
        for order in range(self.profile.order_count(rng)):
            if order:
                when += timedelta(days=self.profile.gap_days(rng), hours=rng.uniform(-6, 6))
            if when >= self.now:
                break
            amount = self._amount(self.profile.order_value_usd(rng))
            events.append({
                "event_id": f"{member_id}-p{order + 1}", "member_id": member_id, "type": "purchase",
                "occurred_at": when.replace(microsecond=0).isoformat(), "amount": str(amount),
                "items": self.profile.items_in_order(rng),
            })
            balance += int((amount * self.points_per_currency_unit).to_integral_value(ROUND_FLOOR))
            if balance >= 1500 and rng.random() < 0.08:
                redeemed = rng.choice([500, 1000]) if balance < 3000 else rng.choice([1000, 2000])
                later = when + timedelta(days=rng.uniform(1, 20))
                if later < self.now:
                    balance -= redeemed
                    events.append({
                        "event_id": f"{member_id}-r{order + 1}", "member_id": member_id,
                        "type": "points_redeemed", "occurred_at": later.replace(microsecond=0).isoformat(),
                        "points": redeemed, "reward": "voucher",
                    })
        return events

    def _amount(self, usd: float) -> Decimal:
        rate = DEMO_RATES.get(self.currency, Decimal(1))
        raw = Decimal(str(usd)) * rate
        step = WHOLE_UNIT_CURRENCIES.get(self.currency, Decimal("0.01"))
        return max(step, (raw / step).to_integral_value() * step)

"""An independent reference for points that expire, written differently from loyalty_mail/points:

- expiry dates with dateutil's relativedelta on the member's wall clock (not add_months);
- what is left of each lot from cumulative sums (first in, first out means lot i keeps
  min(points_i, max(0, earned up to and including lot i - everything spent))), not a replay loop;
- inactivity by walking the list of activity times from each lot's own earning.

It assumes what the differential test generates: every redemption is within the balance and every
point is in a lot (no opening balance set by a members import).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from dateutil.relativedelta import relativedelta

UNITS = {"day": "days", "week": "weeks", "month": "months", "year": "years"}


def wall_clock_plus(moment: datetime, amount: int, unit: str, zone: str) -> datetime:
    """`moment` + amount units on the wall clock of `zone`, as UTC."""
    local = moment.astimezone(ZoneInfo(zone)).replace(tzinfo=None)
    later = local + relativedelta(**{UNITS[unit]: amount})
    return later.replace(tzinfo=ZoneInfo(zone)).astimezone(timezone.utc)


@dataclass
class RefMember:
    member_id: str
    zone: str
    earned: list[tuple[datetime, int]] = field(default_factory=list)      # lots, in time order
    spent: list[tuple[datetime, int]] = field(default_factory=list)       # redeemed and expired
    activity: list[datetime] = field(default_factory=list)                # earning or redeeming
    expired: list[tuple[datetime, int]] = field(default_factory=list)     # recorded expiries

    @property
    def balance(self) -> int:
        return sum(p for _, p in self.earned) - sum(p for _, p in self.spent)

    def lot_expiry(self, index: int, policy: str, amount: int, unit: str) -> datetime:
        earned_at = self.earned[index][0]
        if policy == "after":
            return wall_clock_plus(earned_at, amount, unit, self.zone)
        times = sorted(self.activity)
        k = times.index(earned_at)
        while k + 1 < len(times) and times[k + 1] < wall_clock_plus(times[k], amount, unit, self.zone):
            k += 1
        return wall_clock_plus(times[k], amount, unit, self.zone)

    def lots(self, policy: str, amount: int, unit: str) -> list[tuple[datetime, datetime, int, int]]:
        """(earned_at, expires_at, points, remaining) of lots with points left."""
        spent = sum(p for _, p in self.spent)
        out, cumulative = [], 0
        for index, (earned_at, points) in enumerate(self.earned):
            cumulative += points
            remaining = min(points, max(0, cumulative - spent))
            if remaining:
                out.append((earned_at, self.lot_expiry(index, policy, amount, unit), points, remaining))
        return out

    def run_job(self, now: datetime, policy: str, amount: int, unit: str) -> list[tuple[datetime, int]]:
        """The expiries the job records at `now`: per expiry instant, the points left in its lots."""
        due: dict[datetime, int] = {}
        for _, expires_at, _, remaining in self.lots(policy, amount, unit):
            if expires_at <= now:
                due[expires_at] = due.get(expires_at, 0) + remaining
        recorded = sorted(due.items())
        for expires_at, points in recorded:
            self.spent.append((expires_at, points))
            self.expired.append((expires_at, points))
        return recorded

    def expiring(self, at: datetime, until: datetime, policy: str, amount: int, unit: str) -> int:
        return sum(r for _, e, _, r in self.lots(policy, amount, unit) if at < e <= until)

    def next_expiry(self, at: datetime, policy: str, amount: int, unit: str) -> datetime | None:
        later = [e for _, e, _, _ in self.lots(policy, amount, unit) if e > at]
        return min(later) if later else None

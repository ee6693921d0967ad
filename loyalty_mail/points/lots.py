"""Points as lots: what a member still holds from each earning event, and when it expires.

Pure: events in, lots out, no database and no clock. A member's point events are replayed in time
order (ties in the order they were recorded):

- an event that adds points (a purchase, `points_earned`, any type with points) opens a lot;
- `points_redeemed` and `points_expired` take their points from the oldest lots first;
- under `after: D` a lot expires D after it was earned, in the member's own time zone (calendar
  months and years: a lot earned on 29 February expires on 28 February of a common year; local
  midnight stays local midnight across a DST change);
- under `inactivity: D` every lot held expires D after the member's last earning or redeeming
  event; a gap longer than D in the history expires the lots held before it, at the end of the gap.

An expiry is only a date until the expiry job records it as a `points_expired` event; until then
the lot stays open (a redemption may still take from it) and the job finds it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from ..config import PointsExpiry
from ..durations import Duration, add_months

SPENDING = ("points_redeemed", "points_expired")  # types that take points from the oldest lots
NOT_ACTIVITY = ("points_expired",)                 # an expiry does not keep points alive


@dataclass(slots=True)
class Lot:
    earned_at: datetime
    points: int
    remaining: int
    expires_at: datetime | None = None  # None: not known yet (inactivity: more activity may follow)


def expiry_after(moment: datetime, duration: Duration, zone: ZoneInfo) -> datetime:
    """`moment` + `duration` on the member's wall clock, as a UTC instant: days, weeks, months and
    years are calendar days in `zone` (a day past a month's end falls on its last day); hours,
    minutes and seconds are elapsed time. A wall time that a DST change skips is read with the
    offset before the change (so it lands just after the gap)."""
    return _on_wall_clock(moment, duration, zone, 1)


def reminder_before(expires_at: datetime, duration: Duration, zone: ZoneInfo) -> datetime:
    """`expires_at` - `duration` on the member's wall clock, as a UTC instant: a `before:`
    reminder, read as the expiry is (a month before 1 March 05:00 local is 1 February 05:00
    local, whatever the date in UTC; local midnight stays local midnight across a DST change)."""
    return _on_wall_clock(expires_at, duration, zone, -1)


def _on_wall_clock(moment: datetime, duration: Duration, zone: ZoneInfo, sign: int) -> datetime:
    if duration.unit in ("second", "minute", "hour"):
        return (moment + sign * duration.span()).astimezone(timezone.utc)
    local = moment.astimezone(zone).replace(tzinfo=None)
    if duration.unit in ("month", "year"):
        moved = add_months(local, sign * duration.amount * (12 if duration.unit == "year" else 1))
    else:
        moved = local + sign * timedelta(days=duration.days_exact())
    return moved.replace(tzinfo=zone).astimezone(timezone.utc)


def replay(events: Iterable[tuple[datetime, str, int]], expiry: PointsExpiry, zone: ZoneInfo) -> list[Lot]:
    """The open lots (points left) after `events`: (occurred_at, type, signed points) in time order."""
    lots: list[Lot] = []
    first = 0          # lots before this index are used up
    floating = 0       # inactivity: lots from this index on expire after the last activity
    last_activity: datetime | None = None
    inactivity = expiry.inactivity
    for occurred_at, kind, points in events:
        if not points:
            continue
        if inactivity is not None and last_activity is not None:
            deadline = expiry_after(last_activity, inactivity, zone)
            if deadline <= occurred_at:  # a gap: the lots held until then expired at its end
                for lot in lots[floating:]:
                    lot.expires_at = deadline
                floating = len(lots)
        if points > 0 and kind not in SPENDING:
            lots.append(Lot(occurred_at, points, points,
                            expiry_after(occurred_at, expiry.after, zone) if expiry.after else None))
        elif points < 0:
            owed = -points
            while owed and first < len(lots):
                lot = lots[first]
                taken = min(owed, lot.remaining)
                lot.remaining -= taken
                owed -= taken
                if lot.remaining == 0:
                    first += 1
        if kind not in NOT_ACTIVITY:
            last_activity = occurred_at
    if inactivity is not None and last_activity is not None:
        deadline = expiry_after(last_activity, inactivity, zone)
        for lot in lots[floating:]:
            lot.expires_at = deadline
    return [lot for lot in lots[first:] if lot.remaining > 0]

"""How an instant reads in what a marketer sees: the member's wall clock with its zone's
abbreviation (`2026-11-24 08:00 +07`, `2026-03-08 08:00 EDT`), and, where the decision was taken
in UTC, that instant too (`2026-11-24 08:00 +07 (01:00 UTC)`)."""

from __future__ import annotations

from datetime import datetime, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo


@lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def local_text(moment: datetime, zone: str | tzinfo) -> str:
    """`2026-11-24 08:00 +07`: `moment` on the wall clock of `zone`, with the zone's abbreviation."""
    local = moment.astimezone(_zone(zone) if isinstance(zone, str) else zone)
    return (f"{local.year:04d}-{local.month:02d}-{local.day:02d} {local.hour:02d}:{local.minute:02d} "
            f"{local.tzname()}")


def with_utc(moment: datetime, zone: str | tzinfo) -> str:
    """`2026-11-24 08:00 +07 (01:00 UTC)`: local_text and the UTC instant (its date when that
    differs); `2026-11-24 01:00 UTC` alone when the zone is UTC."""
    local = moment.astimezone(_zone(zone) if isinstance(zone, str) else zone)
    utc = moment.astimezone(_zone("UTC"))
    if local.tzname() == "UTC":
        return local_text(moment, zone)
    day = "" if utc.date() == local.date() else f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d} "
    return f"{local_text(moment, zone)} ({day}{utc.hour:02d}:{utc.minute:02d} UTC)"

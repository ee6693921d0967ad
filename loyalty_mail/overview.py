"""What a program holds: members by tier, locale and time zone; purchases; tier movements."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa

from .models import UTCDateTime, events_table, members_table, tier_changes_table
from .tiers import TierLadder


@dataclass(frozen=True)
class TierRow:
    tier: str
    members: int
    avg_points: int
    avg_spend: Decimal


@dataclass(frozen=True)
class Overview:
    """A snapshot of the program at `at`."""

    at: datetime
    members: int
    subscribed: int
    tiers: list[TierRow]
    locales: list[tuple[str, int]]
    timezones: list[tuple[str, int]]
    purchases: int
    revenue: Decimal
    active_90d: int
    lapsed_90d: int
    never_purchased: int
    tier_upgrades: int
    tier_downgrades: int


def program_overview(connection: sa.Connection, ladder: TierLadder, default_locale: str,
                     at: datetime) -> Overview:
    """Aggregate the member base in SQL as of `at`."""
    m, e, t = members_table, events_table, tier_changes_table
    count = sa.func.count()
    members, subscribed = connection.execute(
        sa.select(count, sa.func.coalesce(sa.func.sum(sa.case((m.c.subscribed, 1), else_=0)), 0))
    ).one()
    by_tier = {
        row.tier: TierRow(row.tier, row.n, int(row.points or 0), Decimal(row.spend or 0).quantize(Decimal(1)))
        for row in connection.execute(
            sa.select(m.c.tier, count.label("n"), sa.func.avg(m.c.points).label("points"),
                      sa.func.avg(m.c.total_spend).label("spend")).group_by(m.c.tier))
    }
    tiers = [by_tier.get(name, TierRow(name, 0, 0, Decimal(0))) for name in ladder.names]
    locale = sa.func.coalesce(m.c.locale, default_locale)
    locales = [tuple(r) for r in connection.execute(
        sa.select(locale, count).group_by(locale).order_by(count.desc()))]
    timezones = [tuple(r) for r in connection.execute(
        sa.select(sa.func.coalesce(m.c.timezone, "(program default)"), count)
        .group_by(m.c.timezone).order_by(count.desc()).limit(6))]
    purchases, revenue = connection.execute(
        sa.select(count, sa.func.coalesce(sa.func.sum(e.c.amount), 0)).where(e.c.type == "purchase")
    ).one()
    cutoff = sa.literal(at - timedelta(days=90), UTCDateTime())
    active, lapsed, never = connection.execute(sa.select(
        sa.func.coalesce(sa.func.sum(sa.case((m.c.last_purchase_at >= cutoff, 1), else_=0)), 0),
        sa.func.coalesce(sa.func.sum(sa.case((m.c.last_purchase_at < cutoff, 1), else_=0)), 0),
        sa.func.coalesce(sa.func.sum(sa.case((m.c.last_purchase_at.is_(None), 1), else_=0)), 0),
    )).one()
    rank = sa.case(*((t.c.to_tier == name, i) for i, name in enumerate(ladder.names)), else_=-1)
    from_rank = sa.case(*((t.c.from_tier == name, i) for i, name in enumerate(ladder.names)), else_=-1)
    ups, downs = connection.execute(sa.select(
        sa.func.coalesce(sa.func.sum(sa.case((rank > from_rank, 1), else_=0)), 0),
        sa.func.coalesce(sa.func.sum(sa.case((rank < from_rank, 1), else_=0)), 0),
    )).one()
    return Overview(at, members, int(subscribed), tiers, locales, timezones, purchases,
                    Decimal(revenue), int(active), int(lapsed), int(never), int(ups), int(downs))

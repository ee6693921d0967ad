"""Points that expire, against the independent reference in tests/points_reference.py: random
earning and redeeming histories imported in batches, the expiry job after each batch, under both
policies, on SQLite and PostgreSQL. The recorded expiries, balances, lots and both segment fields
must agree with the reference."""

from __future__ import annotations

import random
from datetime import datetime, time, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from loyalty_mail import db
from loyalty_mail.config import load_settings
from loyalty_mail.importing import import_rows
from loyalty_mail.models import events_table, members_table, point_lots_table
from loyalty_mail.points.expiry import expire_points
from loyalty_mail.segments import context_for, segment_query
from loyalty_mail.segments.spec import SegmentCatalog, SegmentParser
from loyalty_mail.tiers import TierLadder
from loyalty_mail.yaml_source import load_yaml_text

from .conftest import TEST_CONFIG
from .points_reference import RefMember

pytestmark = pytest.mark.slow  # 18 histories of 10 batches each, on both databases

ZONES = ["Asia/Ho_Chi_Minh", "America/New_York", "Europe/London", "Australia/Sydney", "UTC"]
POLICIES = [("after", 2, "month"), ("inactivity", 3, "month"), ("after", 45, "day")]
START = datetime(2025, 1, 1, tzinfo=timezone.utc)
BATCHES, BATCH_DAYS, MEMBERS = 10, 40, 8


def history(rng: random.Random, members: dict[str, RefMember], batch: int) -> tuple[list[dict], datetime]:
    """One batch of events (each redemption within the member's balance), and the batch's end."""
    begin = START + timedelta(days=BATCH_DAYS * batch)
    rows: list[dict] = []
    moments: list[tuple[datetime, str]] = []
    for number, member in enumerate(members.values()):
        if rng.random() < (0.2, 0.6, 0.9)[number % 3]:
            continue  # inactive this batch: long gaps make inactivity expire points
        for _ in range(rng.randint(1, 4)):
            when = begin + timedelta(seconds=rng.randrange(BATCH_DAYS * 86400))
            if rng.random() < 0.3:  # local midnight, where DST changes bite
                local = when.astimezone(ZoneInfo(member.zone)).date()
                when = datetime.combine(local, time(), tzinfo=ZoneInfo(member.zone)).astimezone(timezone.utc)
            moments.append((when.replace(microsecond=0), member.member_id))
    for when, member_id in sorted(moments):
        member = members[member_id]
        number = len(rows)
        if member.balance and rng.random() < 0.35:
            points = rng.randint(1, member.balance)
            member.spent.append((when, points))
            rows.append({"event_id": f"b{batch}-{number}", "member_id": member_id, "type": "points_redeemed",
                         "occurred_at": when.isoformat(), "points": points})
        elif rng.random() < 0.5:
            amount = rng.randint(1, 900) * 1000  # 0.001 points per VND: whole points
            member.earned.append((when, amount // 1000))
            rows.append({"event_id": f"b{batch}-{number}", "member_id": member_id, "type": "purchase",
                         "occurred_at": when.isoformat(), "amount": amount})
        else:
            points = rng.randint(1, 700)
            member.earned.append((when, points))
            rows.append({"event_id": f"b{batch}-{number}", "member_id": member_id, "type": "points_earned",
                         "occurred_at": when.isoformat(), "points": points})
        member.activity.append(when)
    return rows, begin + timedelta(days=BATCH_DAYS)


def segment_ids(engine: sa.Engine, settings, yaml_text: str, at: datetime) -> set[str]:
    parser = SegmentParser(load_yaml_text(yaml_text, "segments/s.yaml"), TierLadder.from_settings(settings.tiers))
    segment = parser.segment("s")
    assert segment is not None, parser.problems
    ctx = context_for(settings, SegmentCatalog({}), at, engine.dialect.name)
    with engine.connect() as connection:
        return set(connection.execute(segment_query(segment.rule, ctx, members_table.c.member_id)).scalars())


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: f"{p[0]}-{p[1]}{p[2]}")
def test_expiry_matches_the_reference(database_url: str, tmp_path: Path, policy, seed: int):
    kind, amount, unit = policy
    project = tmp_path / "program"
    project.mkdir()
    (project / "config.yaml").write_text(TEST_CONFIG.replace(
        "  points_per_currency_unit: 0.001\n",
        f"  points_per_currency_unit: 0.001\n  points:\n    expiry: {{{kind}: {amount} {unit}s}}\n"))
    settings = load_settings(project, environ={}, database_url=database_url)
    engine = db.create_db_engine(database_url)
    rng = random.Random(f"{seed}-{kind}-{amount}-{unit}")
    members = {f"M{n}": RefMember(f"M{n}", rng.choice(ZONES)) for n in range(MEMBERS)}
    import_rows(engine, settings, "members", enumerate(
        ({"member_id": m.member_id, "email": f"{m.member_id.lower()}@example.com", "timezone": m.zone}
         for m in members.values()), 1), source="members", now=START)
    end = START
    for batch in range(BATCHES):
        rows, end = history(rng, members, batch)
        if rows:
            import_rows(engine, settings, "events", enumerate(rows, 1), source=f"batch {batch}", now=end)
        report = expire_points(engine, settings, end)
        expected = {(m.member_id, e, p) for m in members.values() for e, p in m.run_job(end, kind, amount, unit)}
        assert report.events == len(expected)
        assert report.points == sum(p for _, _, p in expected)

    with engine.connect() as connection:
        m, e, lots = members_table, events_table, point_lots_table
        expired = {(r.member_id, r.occurred_at, -r.points) for r in connection.execute(
            sa.select(m.c.member_id, e.c.occurred_at, e.c.points).join(m, m.c.id == e.c.member_ref)
            .where(e.c.type == "points_expired"))}
        balances = dict(connection.execute(sa.select(m.c.member_id, m.c.points)).all())
        stored = sorted((r.member_id, r.earned_at, r.expires_at, r.points, r.remaining) for r in connection.execute(
            sa.select(m.c.member_id, lots.c.earned_at, lots.c.expires_at, lots.c.points, lots.c.remaining)
            .join(m, m.c.id == lots.c.member_ref)))
    assert expired == {(m.member_id, e, p) for m in members.values() for e, p in m.expired}
    assert len(expired) >= 3  # the histories do make points expire
    assert balances == {m.member_id: m.balance for m in members.values()}
    assert stored == sorted((m.member_id, *lot) for m in members.values() for lot in m.lots(kind, amount, unit))

    # The job again, at the same instant: nothing new.
    assert expire_points(engine, settings, end).events == 0

    for days_after, within, at_least in ((0, 30, 1), (3, 30, 150), (10, 90, 400)):
        at = end + timedelta(days=days_after)
        until = at + timedelta(days=within)
        assert segment_ids(engine, settings, f"points_expiring: {{within: {within} days, gte: {at_least}}}\n", at) == {
            m.member_id for m in members.values() if m.expiring(at, until, kind, amount, unit) >= at_least}
        assert segment_ids(engine, settings, f"not: {{points_expiring: {{within: {within} days, gte: {at_least}}}}}\n",
                           at) == {m.member_id for m in members.values()
                                   if m.expiring(at, until, kind, amount, unit) < at_least}
        soon = {m.member_id for m in members.values()
                if (n := m.next_expiry(at, kind, amount, unit)) is not None and n <= until}
        assert segment_ids(engine, settings, f"next_points_expiry_at: {{within_next: {within} days}}\n", at) == soon
    engine.dispose()

"""`needed_to_keep_tier` against a plain-Python sum over random histories, for both measures
(spend, points earned), on SQLite and PostgreSQL, at pinned instants: alone, under `not`, and
beside a member condition (the shape of a reminder before the review)."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loyalty_mail import db
from loyalty_mail.config import load_settings
from loyalty_mail.models import events_table, members_table
from loyalty_mail.segments import context_for, segment_query
from loyalty_mail.segments.spec import SegmentCatalog, SegmentParser
from loyalty_mail.tiers import TierLadder
from loyalty_mail.yaml_source import load_yaml_text

UTC = timezone.utc
INSTANTS = [datetime(2026, 11, 23, 3, 0, tzinfo=UTC), datetime(2028, 2, 29, 12, 0, tzinfo=UTC)]
TIERS = ["member", "silver", "gold", "platinum", "legacy"]  # legacy: no longer on the ladder
EVENT_TYPES = ["purchase", "purchase", "points_earned", "points_redeemed", "signup"]
MADE = datetime(2020, 1, 1, tzinfo=UTC)


@st.composite
def histories(draw):
    """(at, members as (id, tier, period start, review), events as (member, type, time, amount, points))."""
    at = draw(st.sampled_from(INSTANTS))
    members, events = [], []
    for ref in range(1, draw(st.integers(2, 8)) + 1):
        start = draw(st.one_of(st.none(), st.integers(0, 500).map(lambda d: at - timedelta(days=d))))
        review = draw(st.one_of(st.none(), st.integers(-10, 60).map(lambda d: at + timedelta(days=d))))
        members.append((ref, draw(st.sampled_from(TIERS)), start, review))
        for _ in range(draw(st.integers(0, 8))):
            if start is not None and draw(st.booleans()):  # at the edges of the period and of `at`
                when = draw(st.sampled_from([start, start + timedelta(seconds=1), at, at + timedelta(seconds=1)]))
            else:
                when = at - timedelta(days=draw(st.integers(-5, 520)), minutes=draw(st.integers(0, 1439)))
            amount = draw(st.one_of(st.none(), st.integers(0, 3000).map(Decimal),
                                    st.sampled_from([Decimal("0.5"), Decimal("999.5")])))
            points = draw(st.one_of(st.none(), st.integers(-400, 1500)))
            events.append((ref, draw(st.sampled_from(EVENT_TYPES)), when, amount, points))
    return at, members, events


number_ops = st.one_of(
    st.builds(lambda op, v: {op: v}, st.sampled_from(["gt", "gte", "lt", "lte", "eq", "ne"]),
              st.sampled_from([0, 1, 500, 999.5, 1000, 4000, 5000, 19000])),
    st.builds(lambda a, b: {"between": [min(a, b), max(a, b)]}, st.integers(0, 6000), st.integers(0, 6000)),
    st.sampled_from([{"is_null": True}, {"is_set": True}]))
rules = st.one_of(
    number_ops.map(lambda c: {"needed_to_keep_tier": c}),
    number_ops.map(lambda c: {"not": {"needed_to_keep_tier": c}}),
    number_ops.map(lambda c: {"all": [{"tier_review_at": {"within_next": "30 days"}}, {"needed_to_keep_tier": c}]}),
    number_ops.map(lambda c: {"any": [{"tier": "gold"}, {"needed_to_keep_tier": c}]}))


def needed(tier: str, start: datetime | None, at: datetime, history: list[tuple], measure: str,
           ladder: TierLadder) -> Decimal | None:
    """The plain reading: the tier's threshold less the measure over (start, at], never below 0."""
    if start is None or tier not in ladder.names[1:]:
        return None
    if measure == "spend":
        counted = sum((amount or 0 for _, kind, when, amount, _ in history
                       if kind == "purchase" and start < when <= at), Decimal(0))
    else:
        counted = Decimal(sum(points for _, _, when, _, points in history
                              if points is not None and points > 0 and start < when <= at))
    return max(ladder.levels[ladder.rank(tier)].threshold - counted, Decimal(0))


def holds(value: Decimal | None, condition: dict) -> bool:
    (name, bound), = condition.items()
    if name in ("is_null", "is_set"):
        return (value is None) == (name == "is_null")
    if value is None:
        return False
    if name == "between":
        return Decimal(str(bound[0])) <= value <= Decimal(str(bound[1]))
    b = Decimal(str(bound))
    return {"gt": value > b, "gte": value >= b, "lt": value < b, "lte": value <= b, "eq": value == b,
            "ne": value != b}[name]


def expected(rule: dict, member: tuple, value: Decimal | None, at: datetime) -> bool:
    if "needed_to_keep_tier" in rule:
        return holds(value, rule["needed_to_keep_tier"])
    if "not" in rule:
        return not expected(rule["not"], member, value, at)
    if "all" in rule:
        review = member[3]
        soon = review is not None and at <= review <= at + timedelta(days=30)
        return soon and expected(rule["all"][1], member, value, at)
    return member[1] == "gold" or expected(rule["any"][1], member, value, at)


def insert(engine: sa.Engine, members: list[tuple], events: list[tuple]) -> None:
    with engine.begin() as connection:
        connection.execute(events_table.delete())
        connection.execute(members_table.delete())
        connection.execute(members_table.insert(), [{
            "id": ref, "member_id": f"M{ref}", "email": f"m{ref}@example.com", "tier": tier,
            "tier_period_start": start, "tier_review_at": review, "attributes": {},
            "created_at": MADE, "updated_at": MADE} for ref, tier, start, review in members])
        if events:
            connection.execute(events_table.insert(), [{
                "member_ref": ref, "type": kind, "occurred_at": when, "amount": amount, "currency": "VND",
                "points": points, "properties": {}, "created_at": MADE} for ref, kind, when, amount, points in events])


@pytest.mark.parametrize("measure", ["points_earned", "spend"])
def test_needed_to_keep_tier_matches_a_plain_sum(database_url: str, project: Path, measure: str):
    settings_ = load_settings(project, environ={})
    ladder = TierLadder.from_settings(settings_.tiers)
    engine = db.create_db_engine(database_url)
    seen = {"examples": 0, "partial": 0}

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(data=histories(), rule=rules)
    def check(data, rule):
        at, members, events = data
        parser = SegmentParser(load_yaml_text(yaml.safe_dump({"name": "s", **rule}), "segments/s.yaml"), ladder)
        segment = parser.segment("s")
        assert segment is not None and not parser.problems, parser.problems
        ctx = dataclasses.replace(context_for(settings_, SegmentCatalog({}), at, engine.dialect.name),
                                  qualification=measure)
        insert(engine, members, events)
        with engine.connect() as connection:
            from_sql = set(connection.execute(segment_query(segment.rule, ctx)).scalars())
        want = {m[0] for m in members
                if expected(rule, m, needed(m[1], m[2], at, [e for e in events if e[0] == m[0]], measure, ladder), at)}
        assert from_sql == want, (rule, at)
        seen["examples"] += 1
        seen["partial"] += 0 < len(want) < len(members)

    try:
        check()
    finally:
        engine.dispose()
    assert seen["partial"] >= seen["examples"] // 4, seen  # not vacuous

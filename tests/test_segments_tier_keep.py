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

from loyalty_mail import db, tier_review
from loyalty_mail.api import ingest
from loyalty_mail.config import load_settings
from loyalty_mail.importing import import_rows
from loyalty_mail.models import SQLModel, events_table, members_table
from loyalty_mail.segments import context_for, segment_query
from loyalty_mail.segments.spec import SegmentCatalog, SegmentParser
from loyalty_mail.tier_review import recount_periods
from loyalty_mail.tiers import TierLadder
from loyalty_mail.yaml_source import load_yaml_text

from .conftest import TEST_CONFIG

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
        recount_periods(connection, [ref for ref, *_ in members])


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


# -- through the writers ---------------------------------------------------------------------
# The measure is kept on the member by whatever writes events (the file import, the API's
# request paths, PostgreSQL's JSON-parameter statements, the expiry job) and counted afresh by the
# tier review when it starts a period. Histories go in through them, partly before the periods
# are set and partly after, out of time order and ahead of the pinned instant; the segment is
# checked against a plain sum over the events as stored, and the kept columns against a recount.

WRITERS = ["file import", "api requests", "tier review"]
JOINED = datetime(2024, 6, 1, tzinfo=UTC)


def qualifying(measure: str, expiry: bool = False) -> str:
    config = TEST_CONFIG.replace(
        "  levels:\n", f"  qualification: {{period: 12 months, measure: {measure}, grace: 30 days}}\n  levels:\n", 1)
    if measure == "spend":
        config = config.replace("  basis: points\n", "  basis: spend\n", 1)
    if expiry:
        config = config.replace("  points_per_currency_unit: 0.001\n",
                                "  points_per_currency_unit: 0.001\n  points:\n    expiry: {after: 3 months}\n")
    return config


@st.composite
def written_histories(draw):
    """(at, members as (number, tier, period start in days before `at`), two batches of event rows)."""
    at = draw(st.sampled_from(INSTANTS))
    members = [(n, draw(st.sampled_from(TIERS)), draw(st.one_of(st.none(), st.integers(-5, 500))))
               for n in range(1, draw(st.integers(2, 6)) + 1)]
    batches: tuple[list[dict], list[dict]] = ([], [])
    for n, _, days in members:
        start = None if days is None else at - timedelta(days=days)
        for k in range(draw(st.integers(0, 7))):
            if start is not None and draw(st.booleans()):  # at the edges of the period and of `at`
                when = draw(st.sampled_from([start, start + timedelta(seconds=1), at, at + timedelta(seconds=1)]))
            else:
                when = at - timedelta(days=draw(st.integers(-5, 520)), minutes=draw(st.integers(0, 1439)))
            kind = draw(st.sampled_from(["purchase", "purchase", "points_earned", "points_redeemed", "signup",
                                         "review_written"]))
            row = {"event_id": f"M{n}-{k}", "member_id": f"M{n}", "type": kind, "occurred_at": when.isoformat()}
            if kind == "purchase":
                row["amount"] = str(draw(st.sampled_from([Decimal(0), Decimal("0.5"), Decimal("12.34"),
                                                          Decimal("999.5"), Decimal(1000), Decimal(2500)])))
                if draw(st.booleans()):
                    row["points"] = draw(st.integers(0, 1500))
            elif kind in ("points_earned", "points_redeemed"):
                row["points"] = draw(st.integers(1, 1500 if kind == "points_earned" else 400))
            elif kind == "review_written" and draw(st.booleans()):
                row["points"] = draw(st.integers(0, 300))
            batches[draw(st.integers(0, 1))].append(row)
    return at, members, batches


def emptied(engine: sa.Engine) -> None:
    with engine.begin() as connection:
        for table in reversed(SQLModel.metadata.sorted_tables):
            connection.execute(table.delete())


def write_events(engine: sa.Engine, settings_, writer: str, rows: list[dict], now: datetime, split: list[int]) -> None:
    """`rows` through the file import, or as API requests of the sizes in `split` (a request of
    one event takes the one-event path, a bigger one the request path)."""
    if writer != "api requests":
        import_rows(engine, settings_, "events", enumerate(rows, 1), source="events", now=now, skip_invalid=True)
        return
    first = 0
    for size in split or [len(rows)]:
        part = rows[first:first + size]
        first += size
        if part:
            ingest.apply(engine, settings_, events=[ingest.source_row(i, r) for i, r in enumerate(part)],
                         partial=True, now=now)
    if rows[first:]:
        ingest.apply(engine, settings_, events=[ingest.source_row(i, r) for i, r in enumerate(rows[first:])],
                     partial=True, now=now)


def set_periods(engine: sa.Engine, members: list[tuple], at: datetime) -> None:
    """Tiers and periods set by hand (as a member import from another system might hold them)."""
    m = members_table
    with engine.begin() as connection:
        for n, tier, days in members:
            start = None if days is None else at - timedelta(days=days)
            connection.execute(m.update().where(m.c.member_id == f"M{n}").values(
                tier=tier, tier_period_start=start, tier_review_at=start and start + timedelta(days=365)))
        recount_periods(connection, connection.execute(sa.select(m.c.id)).scalars().all())


def stored(engine: sa.Engine) -> tuple[list[tuple], list[tuple]]:
    """Members as (id, tier, period start, review, kept measures) and events as the segment reads them."""
    m, e = members_table, events_table
    with engine.connect() as connection:
        members = [tuple(r) for r in connection.execute(sa.select(
            m.c.id, m.c.tier, m.c.tier_period_start, m.c.tier_review_at, m.c.period_spend, m.c.period_points_earned,
            m.c.period_last_event_at).order_by(m.c.id))]
        events = [tuple(r) for r in connection.execute(
            sa.select(e.c.member_ref, e.c.type, e.c.occurred_at, e.c.amount, e.c.points).order_by(e.c.id))]
    return members, events


def assert_kept(engine: sa.Engine) -> int:
    """Each member's kept measures are those of their events after their period's start; the
    number of members with something counted."""
    members, events = stored(engine)
    counted = 0
    for ref, _, start, _, spend, earned, last in members:
        mine = [e for e in events if e[0] == ref and start is not None and e[2] > start]
        want_spend = sum((e[3] or 0 for e in mine if e[1] == "purchase"), Decimal(0))
        want_earned = sum(e[4] for e in mine if e[4] is not None and e[4] > 0)
        times = [e[2] for e in mine if e[1] == "purchase" or (e[4] is not None and e[4] > 0)]
        assert (spend, earned, last) == (want_spend, want_earned, max(times, default=None)), ref
        counted += bool(times)
    return counted


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("measure", ["points_earned", "spend"])
def test_needed_to_keep_tier_through_the_writers(database_url: str, tmp_path: Path, measure: str, writer: str):
    project = tmp_path / "program"
    project.mkdir()
    (project / "config.yaml").write_text(qualifying(measure))
    settings_ = load_settings(project, environ={})
    ladder = TierLadder.from_settings(settings_.tiers)
    engine = db.create_db_engine(database_url)
    seen = {"examples": 0, "partial": 0, "counted": 0, "ahead": 0}

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(data=written_histories(), rule=rules, split=st.lists(st.integers(1, 4), max_size=6))
    def check(data, rule, split):
        at, members, (before, after) = data
        parser = SegmentParser(load_yaml_text(yaml.safe_dump({"name": "s", **rule}), "segments/s.yaml"), ladder)
        segment = parser.segment("s")
        assert segment is not None and not parser.problems, parser.problems
        emptied(engine)
        import_rows(engine, settings_, "members", enumerate(
            ({"member_id": f"M{n}", "email": f"m{n}@example.com", "points": 100_000,
              "joined_at": (JOINED + timedelta(days=40 * n)).isoformat()} for n, _, _ in members), 1),
            source="members", now=at)
        write_events(engine, settings_, writer, before, at, split)
        if writer == "tier review":  # the review starts the periods (and moves members) at its instant
            m = members_table
            with engine.begin() as connection:
                for n, tier, _ in members:
                    connection.execute(m.update().where(m.c.member_id == f"M{n}").values(tier=tier))
                tier_review.apply(connection, settings_, at - timedelta(days=len(before) * 37 % 400))
        else:
            set_periods(engine, members, at)
        write_events(engine, settings_, writer, after, at, split)
        seen["counted"] += assert_kept(engine)
        kept, events = stored(engine)
        seen["ahead"] += any(last is not None and last > at for *_, last in kept)
        ctx = context_for(settings_, SegmentCatalog({}), at, engine.dialect.name)
        with engine.connect() as connection:
            from_sql = set(connection.execute(segment_query(segment.rule, ctx)).scalars())
        want = {ref for ref, tier, start, review, *_ in kept
                if expected(rule, (ref, tier, start, review),
                            needed(tier, start, at, [e for e in events if e[0] == ref], measure, ladder), at)}
        assert from_sql == want, (rule, at)
        seen["examples"] += 1
        seen["partial"] += 0 < len(want) < len(kept)

    try:
        check()
    finally:
        engine.dispose()
    # not vacuous: members in a period with events counted, some ahead of `at`, mixed answers
    assert seen["partial"] >= seen["examples"] // 5 and seen["counted"] >= seen["examples"], seen
    assert seen["ahead"] >= seen["examples"] // 5, seen

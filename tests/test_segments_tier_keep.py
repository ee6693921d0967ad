"""`needed_to_keep_tier` against a plain-Python sum over random histories, for both measures
(spend, points earned), on SQLite and PostgreSQL, at pinned instants: alone, under `not`, and
beside a member condition (the shape of a reminder before the review)."""

from __future__ import annotations

import dataclasses
import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

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
from loyalty_mail.segments.compiler import _Compiler
from loyalty_mail.segments.spec import SegmentCatalog, SegmentParser
from loyalty_mail.tier_review import recount_periods
from loyalty_mail.tiers import TierLadder
from loyalty_mail.yaml_source import load_yaml_text

from .conftest import TEST_CONFIG

UTC = timezone.utc
INSTANTS = [datetime(2026, 11, 23, 3, 0, tzinfo=UTC), datetime(2028, 2, 29, 12, 0, tzinfo=UTC)]
TIERS = ["silver", "gold", "platinum", "member", "legacy"]  # legacy: no longer on the ladder
EVENT_TYPES = ["purchase", "purchase", "points_earned", "points_redeemed", "signup"]
MADE = datetime(2020, 1, 1, tzinfo=UTC)


def moments(at: datetime, start: datetime | None) -> st.SearchStrategy[datetime]:
    """At the edges of the period and of `at`, before `at`, or after it (not happened yet at `at`)."""
    edges = ([start, start + timedelta(seconds=1)] if start is not None else []) + [at, at + timedelta(seconds=1)]
    return st.one_of(st.sampled_from(edges),
                     st.builds(lambda d, s: at - timedelta(days=d, seconds=s), st.integers(0, 520), st.integers(0, 86399)),
                     st.builds(lambda s: at + timedelta(seconds=s), st.integers(1, 5 * 86400)))


def values(connection: sa.Connection, ctx) -> dict[int, Decimal | None]:
    """Each member's `needed_to_keep_tier` as the segment compiler computes it."""
    column = _Compiler(ctx).column_for("needed_to_keep_tier")
    return {ref: None if value is None else Decimal(str(value))
            for ref, value in connection.execute(sa.select(members_table.c.id, column))}


def plain_values(members: list[tuple], events: list[tuple], at: datetime, measure: str, ladder: TierLadder,
                 until: datetime | None = None, earlier: timedelta = timedelta(0)) -> dict[int, Decimal | None]:
    """`needed` for each member; with `until` and `earlier`, as if events up to `until` counted,
    and events `earlier` than the period's start."""
    return {m[0]: needed(m[1], m[2] and m[2] - earlier, until or at, [e for e in events if e[0] == m[0]], measure,
                         ladder) for m in members}


def edges_told_apart(members: list[tuple], events: list[tuple], at: datetime, measure: str, ladder: TierLadder,
                     want: dict[int, Decimal | None]) -> tuple[bool, bool]:
    """Whether a value would differ if the events after `at` counted, and if the events at the
    period's start counted: the example tells the field's exact edges apart."""
    return (plain_values(members, events, at, measure, ladder, until=at + timedelta(days=3650)) != want,
            plain_values(members, events, at, measure, ladder, earlier=timedelta(microseconds=1)) != want)


@st.composite
def histories(draw):
    """(at, members as (id, tier, period start, review), events as (member, type, time, amount, points))."""
    at = draw(st.sampled_from(INSTANTS))
    members, events = [], []
    for ref in range(1, draw(st.integers(2, 8)) + 1):
        start = draw(st.one_of(st.integers(-5, 500).map(lambda d: at - timedelta(days=d)), st.none()))
        review = draw(st.one_of(st.none(), st.integers(-10, 60).map(lambda d: at + timedelta(days=d))))
        members.append((ref, draw(st.sampled_from(TIERS)), start, review))
        for _ in range(draw(st.integers(0, 8))):
            when = draw(moments(at, start))
            amount = draw(st.one_of(st.none(), st.integers(0, 1200).map(Decimal),
                                    st.sampled_from([Decimal("0.5"), Decimal("999.5")])))
            points = draw(st.one_of(st.none(), st.integers(-400, 600)))
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


def qualifying_program(tmp_path: Path, database_url: str, measure: str) -> tuple[Any, TierLadder, sa.Engine]:
    """A program whose tiers are kept by `measure` over the period: its settings, ladder and engine."""
    project = tmp_path / "program"
    project.mkdir()
    (project / "config.yaml").write_text(qualifying(measure))
    settings_ = load_settings(project, environ={})
    return settings_, TierLadder.from_settings(settings_.tiers), db.create_db_engine(database_url)


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
    seen = {"examples": 0, "partial": 0, "ahead": 0, "at start": 0}

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
            computed = values(connection, ctx)
        plain = plain_values(members, events, at, measure, ladder)
        assert computed == plain, at
        want = {m[0] for m in members if expected(rule, m, plain[m[0]], at)}
        assert from_sql == want, (rule, at)
        seen["examples"] += 1
        seen["partial"] += 0 < len(want) < len(members)
        ahead, at_start = edges_told_apart(members, events, at, measure, ladder, plain)
        seen["ahead"] += ahead
        seen["at start"] += at_start

    try:
        check()
    finally:
        engine.dispose()
    # not vacuous: mixed answers, and answers that events after `at`, or at the period's start, would change
    assert seen["partial"] >= seen["examples"] // 4, seen
    assert seen["ahead"] >= seen["examples"] // 10 and seen["at start"] >= 1, seen


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
    members = [(n, draw(st.sampled_from(TIERS)), draw(st.one_of(st.integers(-5, 500), st.none())))
               for n in range(1, draw(st.integers(2, 6)) + 1)]
    batches: tuple[list[dict], list[dict]] = ([], [])
    for n, _, days in members:
        start = None if days is None else at - timedelta(days=days)
        for k in range(draw(st.integers(0, 7))):
            when = draw(moments(at, start))
            kind = draw(st.sampled_from(["purchase", "purchase", "points_earned", "points_redeemed", "signup",
                                         "review_written"]))
            row = {"event_id": f"M{n}-{k}", "member_id": f"M{n}", "type": kind, "occurred_at": when.isoformat()}
            if kind == "purchase":
                row["amount"] = str(draw(st.sampled_from([Decimal("12.34"), Decimal("999.5"), Decimal(1000),
                                                          Decimal("0.5"), Decimal(2500), Decimal(0)])))
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
    settings_, ladder, engine = qualifying_program(tmp_path, database_url, measure)
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
        ctx = context_for(settings_, SegmentCatalog({}), at, engine.dialect.name)
        with engine.connect() as connection:
            from_sql = set(connection.execute(segment_query(segment.rule, ctx)).scalars())
            computed = values(connection, ctx)
        members_now = [m[:4] for m in kept]
        plain = plain_values(members_now, events, at, measure, ladder)
        assert computed == plain, at
        want = {m[0] for m in members_now if expected(rule, m, plain[m[0]], at)}
        assert from_sql == want, (rule, at)
        seen["examples"] += 1
        seen["partial"] += 0 < len(want) < len(kept)
        seen["ahead"] += edges_told_apart(members_now, events, at, measure, ladder, plain)[0]

    try:
        check()
    finally:
        engine.dispose()
    # not vacuous: members in a period with events counted, mixed answers, and values that events
    # after `at` would change (the edge at the period's start: test_each_writer_counts_from_the_period_start)
    assert seen["partial"] >= seen["examples"] // 10 and seen["counted"] >= seen["examples"] // 2, seen
    assert seen["ahead"] >= seen["examples"] // 10, seen


def rich_history(at: datetime) -> tuple[list[tuple], list[tuple]]:
    """Members and raw events with every edge at once: events at and just after the period's
    start, at and just after `at`, periods starting ahead of `at`, amounts in cents (their sum is
    not exact in floating point), members without a period and at tiers off the ladder."""
    rng = random.Random(18)
    members, events = [], []
    for ref in range(1, 61):
        days = rng.choice([None, -3, 0, 1, 90, 200, 364, 500])
        start = None if days is None else at - timedelta(days=days, seconds=rng.randrange(86400))
        members.append((ref, rng.choice(TIERS), start, start and start + timedelta(days=365)))
        for _ in range(rng.randrange(12)):
            if start is not None and rng.random() < 0.4:
                when = rng.choice([start, start + timedelta(seconds=1), at, at + timedelta(seconds=1)])
            else:
                when = at - timedelta(days=rng.randint(-5, 520), minutes=rng.randrange(1440))
            kind = rng.choice(EVENT_TYPES + ["points_expired"])
            amount = rng.choice([None, Decimal("0.10"), Decimal("0.20"), Decimal("12.34"), Decimal(999)])
            points = rng.choice([None, -50, 0, 7, 300, 1200])
            events.append((ref, kind, when, amount, points))
    return members, events


def test_the_migration_counts_the_periods_of_existing_members(database_url: str, project: Path):
    """Migration 0018 counts the kept measures from the events already stored (downgraded to 0017
    and upgraded again, the columns are made afresh), to the values the writers keep."""
    at = INSTANTS[0]
    members, events = rich_history(at)
    engine = db.create_db_engine(database_url)
    insert(engine, members, events)  # counted by recount_periods: now forgotten by the downgrade
    db.downgrade(engine, "0017")
    with engine.connect() as connection:
        assert "period_spend" not in {c["name"] for c in sa.inspect(connection).get_columns("members")}
    db.upgrade(engine, "0018")
    assert assert_kept(engine) >= 15
    settings_ = load_settings(project, environ={})
    ladder = TierLadder.from_settings(settings_.tiers)
    for measure in ("points_earned", "spend"):
        ctx = dataclasses.replace(context_for(settings_, SegmentCatalog({}), at, engine.dialect.name),
                                  qualification=measure)
        for bound in (0, 999.9, 1000):
            rule = {"needed_to_keep_tier": {"gte": bound}}
            segment = SegmentParser(load_yaml_text(yaml.safe_dump({"name": "s", **rule}), "s.yaml"), ladder).segment("s")
            assert segment is not None
            with engine.connect() as connection:
                from_sql = set(connection.execute(segment_query(segment.rule, ctx)).scalars())
            assert from_sql == {m[0] for m in members if expected(rule, m, needed(
                m[1], m[2], at, [e for e in events if e[0] == m[0]], measure, ladder), at)}, (measure, bound)
    engine.dispose()


def test_the_expiry_job_leaves_the_measures_as_its_events_give_them(database_url: str, tmp_path: Path):
    """`points_expired` events (negative points, no purchase) count towards neither measure: the
    job's writes keep the columns equal to a recount."""
    from loyalty_mail.points.expiry import expire_points

    project = tmp_path / "program"
    project.mkdir()
    (project / "config.yaml").write_text(qualifying("points_earned", expiry=True))
    settings_ = load_settings(project, environ={})
    engine = db.create_db_engine(database_url)
    at = INSTANTS[0]
    members = [(n, "silver", days) for n, days in enumerate([400, 100, 10], 1)]
    import_rows(engine, settings_, "members", enumerate(
        ({"member_id": f"M{n}", "email": f"m{n}@example.com"} for n, _, _ in members), 1),
        source="members", now=at)
    set_periods(engine, members, at)
    rows = [{"event_id": f"M{n}-{k}", "member_id": f"M{n}", "type": "points_earned", "points": 100 * (k + 1),
             "occurred_at": (at - timedelta(days=30 * k + 5)).isoformat()} for n, _, _ in members for k in range(8)]
    import_rows(engine, settings_, "events", enumerate(rows, 1), source="events", now=at)
    before = stored(engine)[0]
    assert assert_kept(engine) == 3
    report = expire_points(engine, settings_, at)
    assert report.events >= 3
    assert stored(engine)[0] == before  # nothing to add, nothing to take off
    assert assert_kept(engine) == 3
    with engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).where(events_table.c.type == "points_expired")
                                  ).scalar_one() == report.events
    engine.dispose()


def test_the_demo_seed_and_simulation_keep_the_measures(database_url: str, tmp_path: Path):
    """The demo program (imported histories, the reviews replayed over them) and its simulated
    days: the kept measures equal a recount, and the segment the plain sum."""
    from loyalty_mail.seeding import DemoProgram, seed_program
    from loyalty_mail.seeding.simulation import Simulation

    settings_, ladder, engine = qualifying_program(tmp_path, database_url, "points_earned")
    at = INSTANTS[0]
    seed_program(engine, settings_, members=60, seed=3, now=at)
    program = DemoProgram(members=60, now=at, currency=settings_.program.currency,
                          points_per_currency_unit=settings_.program.points_per_currency_unit, seed=3)
    simulation = Simulation(engine, settings_, program, seed=3, next_number=61, window=timedelta(days=7))
    for day in range(14):
        simulation.live(at + timedelta(days=day), at + timedelta(days=day + 1))
    assert simulation.totals.purchases > 0
    assert assert_kept(engine) >= 5
    kept, events = stored(engine)
    assert any(last is not None and last > at for *_, last in kept)  # simulated purchases in a period
    ctx = context_for(settings_, SegmentCatalog({}), at, engine.dialect.name)  # the simulated days lie ahead
    segment = SegmentParser(load_yaml_text("needed_to_keep_tier: {gte: 1}\n", "s.yaml"), ladder).segment("s")
    assert segment is not None
    with engine.connect() as connection:
        from_sql = set(connection.execute(segment_query(segment.rule, ctx)).scalars())
    want = {ref for ref, tier, start, *_ in kept
            if (n := needed(tier, start, at, [e for e in events if e[0] == ref], "points_earned", ladder)) is not None
            and n >= 1}
    assert from_sql == want and want
    engine.dispose()


@pytest.mark.parametrize("writer", ["file import", "one event a request", "one request", "tier review"])
@pytest.mark.parametrize("measure", ["points_earned", "spend"])
def test_each_writer_counts_from_the_period_start(database_url: str, tmp_path: Path, measure: str, writer: str):
    """Each writer counts exactly the events after the period's start: not one at the start, nor
    before; one at `at` and ones after it are kept on the member and taken off by the segment,
    which leaves alone those after `at` but before a period that starts later (M4, a review ahead
    of a pinned `at`). On PostgreSQL a request or file of several members writes them with
    pg_bulk's JSON statements, a request of one event with the one-event path's own statements."""
    settings_, ladder, engine = qualifying_program(tmp_path, database_url, measure)
    at = INSTANTS[1]
    starts = {1: at - timedelta(days=100), 2: at - timedelta(days=10), 3: None, 4: at + timedelta(days=1)}
    import_rows(engine, settings_, "members", enumerate(
        ({"member_id": f"M{n}", "email": f"m{n}@example.com", "points": 10_000,
          "joined_at": (start or at - timedelta(days=30)).isoformat()} for n, start in starts.items()), 1),
        source="members", now=at)
    rows = []
    for n, start in starts.items():
        start = start or at - timedelta(days=30)
        for k, (kind, when, value) in enumerate([
                ("purchase", start, {"amount": "1000", "points": 500}),            # at the start: not counted
                ("points_earned", start - timedelta(days=1), {"points": 900}),    # before it: not counted
                ("purchase", start + timedelta(microseconds=1), {"amount": "12.34"}),
                ("points_redeemed", start + timedelta(days=1), {"points": 50}),   # neither measure
                ("points_earned", at, {"points": 300}),
                ("signup", at, {}),
                ("points_earned", at + timedelta(seconds=1), {"points": 700}),    # ahead of `at`
                ("purchase", at + timedelta(days=3), {"amount": "999.5"})]):
            rows.append({"event_id": f"M{n}-{k}", "member_id": f"M{n}", "type": kind, "occurred_at": when.isoformat(),
                         **value})
    m = members_table
    if writer == "tier review":  # the review starts the periods at the members' joining
        rows = [row for row in rows if row["member_id"] in ("M1", "M2")]  # (M3 and M4 would qualify for silver)
        import_rows(engine, settings_, "events", enumerate(rows, 1), source="events", now=at)
        with engine.begin() as connection:
            connection.execute(m.update().where(m.c.member_id.in_(["M1", "M2"])).values(tier="silver"))
            connection.execute(m.update().where(m.c.member_id.in_(["M3", "M4"])).values(tier="member"))
            report = tier_review.apply(connection, settings_, at)
        assert report.started == 2 and not report.decisions
    else:
        set_periods(engine, [(1, "silver", 100), (2, "silver", 10), (3, "member", None), (4, "silver", -1)], at)
        if writer == "file import":
            import_rows(engine, settings_, "events", enumerate(rows, 1), source="events", now=at)
        elif writer == "one request":
            outcome = ingest.apply(engine, settings_, events=[ingest.source_row(i, r) for i, r in enumerate(rows)], now=at)
            assert outcome.events_inserted == len(rows)
        else:
            for row in rows:
                ingest.apply(engine, settings_, events=[ingest.source_row(0, row)], now=at)
    assert assert_kept(engine) == (2 if writer == "tier review" else 3)
    with engine.connect() as connection:
        kept = connection.execute(sa.select(m.c.tier_period_start, m.c.period_spend, m.c.period_points_earned,
                                            m.c.period_last_event_at).order_by(m.c.member_id)).all()
        computed = values(connection, context_for(settings_, SegmentCatalog({}), at, engine.dialect.name))
    # 12.34 and 999.5 spent; 300 + 700 points earned (and no points for a purchase of less than 1,000);
    # after M4's start, only the purchases
    periods = [(starts[1], Decimal("1011.84"), 1000, at + timedelta(days=3)),
               (starts[2], Decimal("1011.84"), 1000, at + timedelta(days=3)), (None, 0, 0, None)]
    periods.append((None, 0, 0, None) if writer == "tier review" else
                   (starts[4], Decimal("1011.84"), 0, at + timedelta(days=3)))
    assert [tuple(row) for row in kept] == periods
    members, events = stored(engine)
    assert computed == plain_values([row[:4] for row in members], events, at, measure, ladder)
    short = Decimal("987.66") if measure == "spend" else Decimal(700)
    assert sorted(computed.values(), key=str) == sorted(
        [short, short, None] + [None if writer == "tier review" else Decimal(1000)], key=str)
    engine.dispose()

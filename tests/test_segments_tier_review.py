"""Segments on tier reviews, on SQLite and PostgreSQL: `within_next` on a time that lies ahead
(`tier_review_at`), from the planner's instant up to N ahead, both ends included, calendar months,
`not:` taking in members without a review, its explanation, and mistakes reported at their file,
line and column; and `needed_to_keep_tier` per tier against tier_review.needed_to_keep."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa

from loyalty_mail import db
from loyalty_mail.config import load_settings
from loyalty_mail.importing import import_rows
from loyalty_mail.models import members_table
from loyalty_mail.tier_review import needed_to_keep, recount_periods
from loyalty_mail.segments import context_for, segment_query
from loyalty_mail.segments.compiler import compile_rule
from loyalty_mail.segments.explain import why_not
from loyalty_mail.segments.spec import SegmentCatalog, SegmentParser
from loyalty_mail.tiers import TierLadder
from loyalty_mail.yaml_source import load_yaml_text

from .conftest import TEST_CONFIG

UTC = timezone.utc
AT = datetime(2026, 1, 31, 3, 0, tzinfo=UTC)  # one calendar month ahead: 28 February
REVIEWS = {
    "none": None,
    "past": AT - timedelta(seconds=1),
    "now": AT,
    "day29": AT + timedelta(days=29, hours=23),  # 2 March 02:00
    "day30": AT + timedelta(days=30),           # 2 March 03:00: in 30 days, past 1 month
    "day30+1s": AT + timedelta(days=30, seconds=1),
    "feb28": datetime(2026, 2, 28, 3, 0, tzinfo=UTC),
    "feb28+1s": datetime(2026, 2, 28, 3, 0, 1, tzinfo=UTC),
    "day60": AT + timedelta(days=60),
}


def setup(tmp_path: Path, database_url: str):
    project = tmp_path / "program"
    project.mkdir()
    (project / "config.yaml").write_text(TEST_CONFIG)
    settings = load_settings(project, environ={}, database_url=database_url)
    engine = db.create_db_engine(database_url)
    import_rows(engine, settings, "members", enumerate(
        ({"member_id": name, "email": f"m{n}@example.com"} for n, name in enumerate(REVIEWS)), 1),
        source="members", now=AT - timedelta(days=1))
    m = members_table
    with engine.begin() as connection:
        for name, review in REVIEWS.items():
            connection.execute(m.update().where(m.c.member_id == name).values(tier_review_at=review))
    return settings, engine


def parser(settings, text: str) -> SegmentParser:
    return SegmentParser(load_yaml_text(text, "segments/s.yaml"), TierLadder.from_settings(settings.tiers))


def ids(settings, engine: sa.Engine, text: str, at: datetime = AT) -> set[str]:
    segment = parser(settings, text).segment("s")
    assert segment is not None
    ctx = context_for(settings, SegmentCatalog({}), at, engine.dialect.name)
    with engine.connect() as connection:
        return set(connection.execute(segment_query(segment.rule, ctx, members_table.c.member_id)).scalars())


def test_within_next_is_from_now_up_to_the_end_of_the_window(database_url: str, tmp_path: Path):
    settings, engine = setup(tmp_path, database_url)
    assert ids(settings, engine, "tier_review_at: {within_next: 30 days}\n") == {"now", "day29", "day30", "feb28",
                                                                                 "feb28+1s"}
    assert ids(settings, engine, "tier_review_at: {within_next: 1 month}\n") == {"now", "feb28"}
    assert ids(settings, engine, "tier_review_at: {within_next: 0 days}\n") == {"now"}
    assert ids(settings, engine, "not: {tier_review_at: {within_next: 30 days}}\n") == {
        "none", "past", "day30+1s", "day60"}
    assert ids(settings, engine, "all: [{tier_review_at: {within_next: 8 weeks}}, "
                                 "{tier_review_at: {after: 2026-03-01}}]\n") == {"day29", "day30", "day30+1s"}
    # time is an input: the same rule a second later
    assert ids(settings, engine, "tier_review_at: {within_next: 30 days}\n", AT + timedelta(seconds=1)) == {
        "day29", "day30", "day30+1s", "feb28", "feb28+1s"}
    engine.dispose()


def test_within_next_compiles_to_bound_instants_and_is_explained(database_url: str, tmp_path: Path):
    settings, engine = setup(tmp_path, database_url)
    segment = parser(settings, "tier_review_at: {within_next: 30 days}\n").segment("s")
    assert segment is not None
    ctx = context_for(settings, SegmentCatalog({}), AT, engine.dialect.name)
    compiled = compile_rule(segment.rule, ctx).compile(dialect=engine.dialect)
    assert "tier_review_at >=" in str(compiled) and "tier_review_at <=" in str(compiled)
    assert sorted(v for v in compiled.params.values() if isinstance(v, datetime)) == [AT, AT + timedelta(days=30)]
    with engine.connect() as connection:
        ref = dict(connection.execute(sa.select(members_table.c.member_id, members_table.c.id)).all())
        assert why_not(connection, segment, ctx, ref["day30"]) is None
        assert why_not(connection, segment, ctx, ref["day60"]) == (
            "not in segment s: tier_review_at is 2026-04-01 (60 days later), the rule needs within the next 30 days")
        assert why_not(connection, segment, ctx, ref["none"]) == (
            "not in segment s: tier_review_at is not set, the rule needs within the next 30 days")
    engine.dispose()


def test_within_next_mistakes_are_reported_at_their_place(tmp_path: Path):
    (tmp_path / "config.yaml").write_text(TEST_CONFIG)
    settings = load_settings(tmp_path, environ={})

    def problems(text: str) -> list[str]:
        p = parser(settings, text)
        assert p.segment("s") is None
        return [str(problem) for problem in p.problems]

    assert problems("tier_review_at: {within_next: soon}\n") == [
        "segments/s.yaml:1:31: field 'tier_review_at': within_next: expected a duration such as '30 minutes', "
        "'2 weeks' or '1 month' (a whole number and one of: seconds, minutes, hours, days, weeks, months, years), "
        "found 'soon'"]
    assert problems("all:\n  - tier_review_at:\n      within_next: 200 years\n") == [
        "segments/s.yaml:3:20: field 'tier_review_at': within_next: '200 years' is longer than 100 years"]
    assert problems("tier_review_at: {within_next: -3 days}\n") == [
        "segments/s.yaml:1:31: field 'tier_review_at': within_next: expected a duration such as '30 minutes', "
        "'2 weeks' or '1 month' (a whole number and one of: seconds, minutes, hours, days, weeks, months, years), "
        "found '-3 days'"]
    assert problems("last_purchase_at: {within_next: 30 days}\n") == [
        "segments/s.yaml:1:20: unknown operator 'within_next' for field 'last_purchase_at' (expected: before, "
        "after, since, within, older_than, between, is_set, is_null)"]


def test_needed_to_keep_tier_per_tier_matches_the_review(database_url: str, tmp_path: Path):
    project = tmp_path / "program"
    project.mkdir()
    assert "levels:\n" in TEST_CONFIG
    (project / "config.yaml").write_text(TEST_CONFIG.replace(
        "  levels:\n", "  qualification: {period: 12 months, measure: points_earned, grace: 30 days}\n  levels:\n", 1))
    settings = load_settings(project, environ={}, database_url=database_url)
    assert settings.tiers.qualification is not None
    engine = db.create_db_engine(database_url)
    start = AT - timedelta(days=200)
    # member id -> (tier, period start, points earned before the period, in it, after AT)
    people = {"S-short": ("silver", start, 5000, 400, 900), "S-kept": ("silver", start, 0, 1200, 0),
              "G-none": ("gold", start, 9000, 0, 0), "G-edge": ("gold", start, 0, 4000, 0),
              "P-some": ("platinum", start, 0, 12500, 0), "S-unknown": ("silver", None, 0, 300, 0),
              "M-lowest": ("member", None, 0, 50, 0)}
    import_rows(engine, settings, "members", enumerate(
        ({"member_id": name, "email": f"m{n}@example.com"} for n, name in enumerate(people)), 1),
        source="members", now=start - timedelta(days=30))
    rows = []
    for name, (_, _, before, during, later) in people.items():
        for label, at, points in (("before", start - timedelta(days=1), before), ("at", start, 77),
                                  ("during", start + timedelta(days=10), during), ("now", AT, 5),
                                  ("later", AT + timedelta(seconds=1), later)):
            if points:
                rows.append({"event_id": f"{name}-{label}", "member_id": name, "type": "points_earned",
                             "occurred_at": at.isoformat(), "points": points})
    import_rows(engine, settings, "events", enumerate(rows, 1), source="events", now=AT)
    m = members_table
    with engine.begin() as connection:
        for name, (tier, period, *_) in people.items():
            connection.execute(m.update().where(m.c.member_id == name).values(
                tier=tier, tier_period_start=period, tier_review_at=period and period + timedelta(days=365)))
        refs = dict(connection.execute(sa.select(m.c.member_id, m.c.id)).all())
        recount_periods(connection, refs.values())  # the periods were set here, not by the review
        expected = {name: needed_to_keep(connection, settings, refs[name], tier, period, AT)
                    for name, (tier, period, *_) in people.items() if period is not None}
    # the event at the period's start does not count; the one at AT does; later ones do not
    assert expected == {"S-short": 595, "S-kept": 0, "G-none": 4995, "G-edge": 995, "P-some": 7495}
    assert ids(settings, engine, "needed_to_keep_tier: {gte: 995}\n") == {"G-none", "G-edge", "P-some"}
    assert ids(settings, engine, "needed_to_keep_tier: {eq: 0}\n") == {"S-kept"}
    assert ids(settings, engine, "needed_to_keep_tier: {lt: 996}\n") == {"S-short", "S-kept", "G-edge"}
    assert ids(settings, engine, "needed_to_keep_tier: {is_null: true}\n") == {"S-unknown", "M-lowest"}
    assert ids(settings, engine, "not: {needed_to_keep_tier: {gt: 0}}\n") == {"S-kept", "S-unknown", "M-lowest"}
    assert ids(settings, engine, "all: [{tier_review_at: {within_next: 200 days}}, "
                                 "{needed_to_keep_tier: {between: [500, 1000]}}]\n") == {"S-short", "G-edge"}
    engine.dispose()


def test_points_to_next_tier_counts_the_period_measure_with_qualification(database_url: str, tmp_path: Path):
    """With tiers.qualification the way to the next tier is what the review moves members up on,
    the points earned over the period ending at the segment's instant, not the balance held."""
    project = tmp_path / "program"
    project.mkdir()
    (project / "config.yaml").write_text(TEST_CONFIG.replace(
        "  levels:\n", "  qualification: {period: 12 months, measure: points_earned, grace: 30 days}\n  levels:\n", 1))
    settings = load_settings(project, environ={}, database_url=database_url)
    engine = db.create_db_engine(database_url)
    start = datetime(2025, 1, 31, 3, 0, tzinfo=UTC)  # AT less the 12 months
    # member id -> events (label, when, points): balance and points earned in the period differ
    people = {
        "hoarder": [("old", start - timedelta(days=90), 900), ("start", start, 40), ("in", AT, 50)],
        "earner": [("in", start + timedelta(seconds=1), 800), ("spent", AT - timedelta(days=1), -700),
                   ("later", AT + timedelta(seconds=1), 5000)],
        "silver": [("in", AT - timedelta(days=3), 4600)],
        "top": [("in", AT - timedelta(days=3), 100)],
    }
    import_rows(engine, settings, "members", enumerate(
        ({"member_id": name, "email": f"m{n}@example.com"} for n, name in enumerate(people)), 1),
        source="members", now=start - timedelta(days=100))
    rows = [{"event_id": f"{name}-{label}", "member_id": name, "occurred_at": when.isoformat(), "points": abs(points),
             "type": "points_earned" if points > 0 else "points_redeemed"}
            for name, events in people.items() for label, when, points in events]
    import_rows(engine, settings, "events", enumerate(rows, 1), source="events", now=AT)
    m = members_table
    with engine.begin() as connection:
        connection.execute(m.update().where(m.c.member_id == "silver").values(tier="silver"))
        connection.execute(m.update().where(m.c.member_id == "top").values(tier="platinum"))
        held = dict(connection.execute(sa.select(m.c.member_id, m.c.points)).all())
        tiers = dict(connection.execute(sa.select(m.c.member_id, m.c.tier)).all())
    assert tiers == {"hoarder": "member", "earner": "member", "silver": "silver", "top": "platinum"}
    assert (held["hoarder"], held["earner"]) == (990, 5100)  # the balance alone: hoarder close, earner past it
    # earned in the period: hoarder 50 (the event at its start does not count), earner 800
    # (the redemption takes nothing off, the event after AT is not yet), silver 4600
    assert ids(settings, engine, "points_to_next_tier: {lte: 500}\n") == {"earner", "silver"}
    assert ids(settings, engine, "points_to_next_tier: {eq: 950}\n") == {"hoarder"}
    assert ids(settings, engine, "points_to_next_tier: {eq: 200}\n") == {"earner"}
    assert ids(settings, engine, "points_to_next_tier: {eq: 400}\n") == {"silver"}
    assert ids(settings, engine, "points_to_next_tier: {is_null: true}\n") == {"top"}
    # a later instant counts the event after AT
    later = AT + timedelta(days=1)
    assert ids(settings, engine, "points_to_next_tier: {lt: 0}\n", at=later) == {"earner"}
    engine.dispose()

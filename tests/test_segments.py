"""Segments: errors at file:line:column, the example segments on known members, SQL, CLI."""

from __future__ import annotations

import json
import shutil
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from loyalty_mail.models import events_table, members_table
from loyalty_mail.segments import context_for, count_members, load_catalog, segment_query, segment_sql
from loyalty_mail.segments.spec import SegmentParser
from loyalty_mail.tiers import TierLadder
from loyalty_mail.yaml_source import load_yaml_text

from .conftest import blank_member_row, REPO

AT = datetime(2026, 11, 23, 3, 0, tzinfo=timezone.utc)  # 10:00 in Ho Chi Minh City, 22:00 the day before in New York


def parse_problems(text: str, runtime) -> list[str]:
    ladder = TierLadder.from_settings(runtime.settings.tiers)
    parser = SegmentParser(load_yaml_text(text, "segments/s.yaml"), ladder)
    parser.segment("s")
    return [str(p) for p in parser.problems]


@pytest.fixture
def sqlite_runtime(project, tmp_path):
    from loyalty_mail.runtime import Runtime

    rt = Runtime.load(project, database_url=f"sqlite:///{tmp_path / 'x.db'}", clock=lambda: AT)
    yield rt
    rt.close()


def test_mistakes_name_file_line_column_and_what_is_allowed(sqlite_runtime):
    problems = parse_problems("""\
name: s
all:
  - points: {greater_than: 5}
  - tier: {at_least: diamond}
  - last_purchase_at: {within: 3 fortnights}
  - total_spend: {gte: lots}
  - favourite_colour: blue
  - event: {type: purchase, count: {gte: 2}, within: 30 dayz, colour: red}
  - nps: fan
""", sqlite_runtime)
    assert problems == [
        "segments/s.yaml:3:14: unknown operator 'greater_than' for field 'points' (expected: eq, ne, in, not_in, "
        "gt, gte, lt, lte, between, is_set, is_null)",
        "segments/s.yaml:4:22: field 'tier': at_least: unknown tier 'diamond' (tiers: member, silver, gold, platinum)",
        "segments/s.yaml:5:32: field 'last_purchase_at': within: unknown unit 'fortnights' in '3 fortnights' "
        "(expected one of: seconds, minutes, hours, days, weeks, months, years)",
        "segments/s.yaml:6:24: field 'total_spend': gte: expected a number, found 'lots'",
        "segments/s.yaml:7:5: unknown field 'favourite_colour' (expected: all, any, not, segment, event, purchases, "
        "emails, subscribed_to, attributes.NAME, member_id, email, first_name, last_name, locale, timezone, tier, points, total_spend, "
        "purchase_count, nps_score, joined_at, last_purchase_at, unsubscribed_at, birthday, subscribed, nps, "
        "days_since_last_purchase, membership_days, average_order_value, clv, points_to_next_tier, tier_review_at, "
        "needed_to_keep_tier, affordable_rewards, points_expiring, next_points_expiry_at)",
        "segments/s.yaml:8:63: unknown key 'colour' in event (expected: type, count, sum, within, since, until, where)",
        "segments/s.yaml:9:10: field 'nps': eq: unknown NPS category 'fan' (expected: promoter, passive, detractor)",
    ]


def test_structure_mistakes(sqlite_runtime):
    assert parse_problems("name: s\ndescription: x\n", sqlite_runtime) == [
        "segments/s.yaml:1:1: the segment has no rule: add all:, any:, not:, or a condition such as tier: {at_least: gold}"]
    assert parse_problems("name: s\ntier: gold\npoints: {gte: 1}\n", sqlite_runtime) == [
        "segments/s.yaml:3:1: a segment has one rule at the top; combine several with all: or any: (found tier, points)"]
    assert parse_problems("name: other\ntier: gold\n", sqlite_runtime) == [
        "segments/s.yaml:1:7: name 'other' differs from the file name 's'; make them the same"]
    assert parse_problems("name: s\nall: []\n", sqlite_runtime) == ["segments/s.yaml:2:6: all: takes a non-empty list of rules"]
    assert parse_problems("name: s\nany:\n  - {tier: gold, points: {gte: 1}}\n", sqlite_runtime) == [
        "segments/s.yaml:3:5: each rule is a mapping with one key, e.g. - tier: {at_least: gold} (found a mapping)"]
    assert parse_problems("name: s\npoints: {between: [10, 1]}\n", sqlite_runtime) == [
        "segments/s.yaml:2:19: field 'points': between: the low end 10 is above the high end 1"]
    assert parse_problems("name: s\njoined_at: 2026-01-01\n", sqlite_runtime) == [
        "segments/s.yaml:2:12: field 'joined_at' needs an operator mapping such as {before: ...} (expected: before, "
        "after, since, within, older_than, between, is_set, is_null, anniversary)"]


def write_segments(project: Path, files: dict[str, str]) -> None:
    folder = project / "segments"
    folder.mkdir(exist_ok=True)
    for name, text in files.items():
        (folder / f"{name}.yaml").write_text(text, encoding="utf-8")


def test_check_reports_every_problem_in_every_file_at_once(run, project, monkeypatch):
    monkeypatch.chdir(project)
    write_segments(project, {
        "a": "all:\n  - segment: b\n  - points: {gte: 1}\n",
        "b": "segment: c\n",
        "c": "segment: a\n",
        "d": "any:\n  - segment: nowhere\n",
        "e": "tier: [gold\n",
        "f": "all:\n  - segment: a\n  - points: {gte: x}\n",
    })
    result = run("check")
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[0].startswith("Error: ")
    assert "segments/f.yaml:3:19: field 'points': gte: expected a number, found 'x'" in result.stderr
    assert "segments/d.yaml:2:14: unknown segment 'nowhere' (segments: a, b, c, d, e, f)" in lines
    assert "segments/e.yaml:2:1: invalid YAML: expected ',' or ']'" in result.stderr
    assert "segments/c.yaml:1:10: segments refer to each other in a cycle: a -> b -> c -> a" in lines
    assert "Traceback" not in result.output


# -- the example segments on a known program ----------------------------------------------------

def member(ref: int, **values) -> dict:
    # Every row carries every column: executemany takes its columns from the first row.
    base = blank_member_row()
    base.update({"id": ref, "member_id": f"M{ref:02d}", "email": f"m{ref}@example.com", "tier": "member",
                 "points": 0, "total_spend": Decimal(0), "purchase_count": 0, "subscribed": True,
                 "attributes": {}, "created_at": AT, "updated_at": AT})
    base.update(values)
    if base.get("joined_at") is not None and "joined_on" not in values:
        from zoneinfo import ZoneInfo
        base["joined_on"] = base["joined_at"].astimezone(ZoneInfo(base.get("timezone") or "Asia/Ho_Chi_Minh")).date()
    return base


MEMBERS = [
    member(1, joined_at=AT - timedelta(days=3), tier="member", points=200),                 # new
    member(2, joined_at=AT - timedelta(days=8), tier="member", points=4700,                 # close to gold
           last_purchase_at=AT - timedelta(days=10), purchase_count=4, total_spend=Decimal(4_700_000)),
    member(3, joined_at=datetime(2024, 11, 23, 1, 0, tzinfo=timezone.utc), tier="gold", points=9000,  # anniversary today
           last_purchase_at=AT - timedelta(days=120), purchase_count=5, total_spend=Decimal(12_000_000), nps_score=10),
    member(4, joined_at=datetime(2023, 11, 22, 17, 0, tzinfo=timezone.utc), tier="platinum", points=30000,  # 00:00 on the 23rd locally
           last_purchase_at=AT - timedelta(days=2), purchase_count=20, total_spend=Decimal(60_000_000), nps_score=3),
    member(5, joined_at=datetime(2025, 11, 23, 12, 0, tzinfo=timezone.utc), timezone="America/New_York",  # local 23rd, NY is still 22nd
           tier="silver", points=1500, last_purchase_at=AT - timedelta(days=89, hours=23), purchase_count=1,
           total_spend=Decimal(1_500_000), nps_score=8),
    member(6, joined_at=datetime(2020, 2, 29, 5, 0, tzinfo=timezone.utc), tier="member", points=0, nps_score=6,
           birthday=date(1992, 2, 29)),
    member(7, joined_at=AT - timedelta(days=400), tier="gold", points=6000, last_purchase_at=AT - timedelta(days=91),
           purchase_count=6, total_spend=Decimal(30_000_000), nps_score=9, birthday=date(1990, 11, 25)),
]
EVENTS = [
    *({"member_ref": 7, "type": "purchase", "occurred_at": AT - timedelta(days=d), "amount": Decimal(5_000_000),
       "currency": "VND", "points": 5000, "properties": {}, "created_at": AT} for d in (91, 150, 300)),
    *({"member_ref": 4, "type": "purchase", "occurred_at": AT - timedelta(days=d), "amount": Decimal(3_000_000),
       "currency": "VND", "points": 3000, "properties": {"store": "Q1"}, "created_at": AT} for d in (2, 9, 20)),
]

EXPECTED = {
    "new_members": {"M01"},
    "lapsed_90_days": {"M03", "M07"},
    "vip": {"M03", "M04", "M07"},
    "promoters": {"M03", "M07"},
    "detractors": {"M04", "M06"},
    "close_to_next_tier": {"M02"},
    "anniversary_today": {"M03", "M04"},
    "high_lifetime_value": {"M03", "M04", "M07"},
    "lapsed_vip": {"M07"},
    "frequent_buyers": {"M04"},
    "birthday_this_week": {"M07"},
    "unsubscribed_recently": set(),
    "disengaged": set(),   # no email sent yet to anyone (tests/test_engagement.py covers it)
}


@pytest.fixture
def example_program(runtime) -> None:
    shutil.copytree(REPO / "segments", runtime.project_dir / "segments")
    with runtime.engine().begin() as connection:
        connection.execute(members_table.insert(), MEMBERS)
        connection.execute(events_table.insert(), EVENTS)


def test_example_segments_select_exactly_the_expected_members(runtime, example_program):
    catalog, problems = load_catalog(runtime.settings)
    assert problems == []
    assert set(catalog.segments) == set(EXPECTED)
    engine = runtime.engine()
    ctx = context_for(runtime.settings, catalog, AT, engine.dialect.name)
    with engine.connect() as connection:
        for name, expected in EXPECTED.items():
            query = segment_query(catalog.get(name).rule, ctx, members_table.c.member_id)
            assert {row[0] for row in connection.execute(query)} == expected, name
            assert count_members(connection, catalog.get(name), ctx) == len(expected)


def test_anniversary_follows_the_members_clock(runtime, example_program):
    catalog, _ = load_catalog(runtime.settings)
    engine = runtime.engine()
    with engine.connect() as connection:
        def anniversary(at: datetime) -> set[str]:
            ctx = context_for(runtime.settings, catalog, at, engine.dialect.name)
            query = segment_query(catalog.get("anniversary_today").rule, ctx, members_table.c.member_id)
            return {row[0] for row in connection.execute(query)}

        # 05:00 UTC on the 23rd is 00:00 on the 23rd in New York: member 5's first anniversary begins.
        assert "M05" not in anniversary(datetime(2026, 11, 23, 4, 59, tzinfo=timezone.utc))
        assert "M05" in anniversary(datetime(2026, 11, 23, 5, 0, tzinfo=timezone.utc))
        # Joined on 29 February 2020 (12:00 in Ho Chi Minh City): in 2027 the day is 28 February...
        assert "M06" in anniversary(datetime(2027, 2, 28, 1, 0, tzinfo=timezone.utc))
        assert "M06" not in anniversary(datetime(2027, 3, 1, 1, 0, tzinfo=timezone.utc))
        # ... and in a leap year it is 29 February, not the 28th.
        assert "M06" not in anniversary(datetime(2028, 2, 28, 1, 0, tzinfo=timezone.utc))
        assert "M06" in anniversary(datetime(2028, 2, 29, 1, 0, tzinfo=timezone.utc))


def test_sql_binds_every_value(runtime, example_program):
    catalog, _ = load_catalog(runtime.settings)
    engine = runtime.engine()
    ctx = context_for(runtime.settings, catalog, AT, engine.dialect.name)
    compiled = segment_sql(catalog.get("lapsed_vip"), ctx, engine.dialect)
    assert "'" not in compiled.sql  # no string literal at all: every value is a parameter
    assert "10000000" not in compiled.sql and "90" not in compiled.sql
    assert {"gold", "platinum", "purchase"} <= set(compiled.params.values())
    assert Decimal(10_000_000) in compiled.params.values()


def members_of(runtime, project: Path, files: dict[str, str]) -> dict[str, set[str]]:
    """Write these segment files, then the member ids each selects at AT."""
    write_segments(project, files)
    catalog, problems = load_catalog(runtime.settings)
    assert problems == []
    engine = runtime.engine()
    ctx = context_for(runtime.settings, catalog, AT, engine.dialect.name)
    with engine.connect() as connection:
        return {name: {row[0] for row in connection.execute(
                    segment_query(catalog.get(name).rule, ctx, members_table.c.member_id))}
                for name in files}


def test_counts_that_zero_satisfies_include_members_without_events(runtime, example_program, project):
    ids = members_of(runtime, project, {
        "never_bought": "purchases: {count: 0}\n",
        "at_most_two": "purchases: {count: {lte: 2}, within: 365 days}\n",
        "big_spenders": "purchases: {sum: {amount: {gte: 15000000}}}\n",
        "q1_shoppers": "event: {type: purchase, where: {store: Q1}, count: {gte: 3}}\n",
    })
    everyone = {m["member_id"] for m in MEMBERS}
    assert ids["never_bought"] == everyone - {"M04", "M07"}
    assert ids["at_most_two"] == everyone - {"M04", "M07"}
    assert ids["big_spenders"] == {"M07"}
    assert ids["q1_shoppers"] == {"M04"}


def test_clv_at_its_exact_boundary(runtime, example_program, project):
    # M02 joined 8 days ago (a member counts as at least a year) with 4,700,000 spent: clv is
    # exactly 4,700,000 x 3 = 14,100,000, where the total_spend floor the compiler adds is tightest.
    rules = {"gte": "clv: {gte: 14100000}", "gt": "clv: {gt: 14100000}",
             "exactly": "clv: {between: [14100000, 14100000]}", "not_gte": "not: {clv: {gte: 14100000}}"}
    assert members_of(runtime, project, {f"clv_{name}": f"{rule}\n" for name, rule in rules.items()}) == {
        "clv_gte": {"M02", "M03", "M04", "M07"}, "clv_gt": {"M03", "M04", "M07"},
        "clv_exactly": {"M02"}, "clv_not_gte": {"M01", "M05", "M06"}}


def test_segments_commands(run, runtime, example_program):
    listed = run("segments", "list", "--count", "--at", AT.isoformat(), "--format", "json")
    assert listed.exit_code == 0, listed.output
    assert {row["segment"]: row["members"] for row in json.loads(listed.stdout)} == {
        name: len(ids) for name, ids in EXPECTED.items()}
    count = run("segments", "count", "vip", "--at", AT.isoformat())
    assert (count.exit_code, count.stdout) == (0, "3\n")
    members = json.loads(run("segments", "members", "vip", "--at", AT.isoformat(), "--format", "json").stdout)
    assert [m["member_id"] for m in members] == ["M03", "M04", "M07"] and members[0]["email"] == "m3@example.com"
    limited = run("segments", "members", "vip", "--at", AT.isoformat(), "--format", "csv", "--limit", "2")
    assert limited.stdout.splitlines()[0].startswith("member_id,email,") and len(limited.stdout.splitlines()) == 3
    shown = run("segments", "show", "lapsed_vip", "--at", AT.isoformat())
    assert shown.exit_code == 0
    assert "tier at_least gold" in shown.stdout and "SELECT members.member_id" in shown.stdout
    missing = run("segments", "count", "nope")
    assert missing.exit_code == 1 and missing.stderr.startswith("Error: no segment named 'nope' (segments: ")
    bad_at = run("segments", "count", "vip", "--at", "yesterday")
    assert bad_at.exit_code == 1 and "'yesterday' is not an ISO 8601 time" in bad_at.stderr

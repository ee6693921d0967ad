"""`explain`: which rule keeps a member out of a segment, with the member's value, for every rule
kind; each flow's precise reason; and explanations at a past instant that ignore later sends."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from loyalty_mail.models import events_table, members_table, sends_table
from loyalty_mail.segments import context_for, load_catalog
from loyalty_mail.segments.explain import why_not

from .conftest import blank_member_row

from .flow_program import member as flow_member

AT = datetime(2026, 11, 30, 3, 0, tzinfo=timezone.utc)  # 10:00 in Ho Chi Minh City

MEMBER = blank_member_row() | {
    "id": 1, "member_id": "M01", "email": "m1@example.com", "tier": "silver", "points": 1500,
    "total_spend": Decimal(2_000_000), "purchase_count": 2, "nps_score": 8, "subscribed": True,
    "joined_at": datetime(2025, 6, 1, 3, 0, tzinfo=timezone.utc), "joined_on": date(2025, 6, 1),
    "birthday": date(1990, 5, 1), "last_purchase_at": datetime(2026, 11, 20, 3, 0, tzinfo=timezone.utc),
    "attributes": {"store": "Q1"}, "created_at": AT, "updated_at": AT}
EVENTS = [{"member_ref": 1, "type": "purchase", "occurred_at": when, "amount": Decimal(1_000_000),
           "currency": "VND", "points": 1000, "properties": {"store": store}, "created_at": AT}
          for when, store in ((datetime(2026, 11, 20, 3, 0, tzinfo=timezone.utc), "Q1"),
                              (datetime(2026, 10, 1, 3, 0, tzinfo=timezone.utc), "Q3"))]
SEND = {"send_id": "s" * 32, "member_ref": 1, "flow": "welcome", "occurrence_key": "welcome",
        "template": "welcome", "state": "sent", "reason": "joined", "occurrence": {},
        "occurred_at": AT - timedelta(days=5), "scheduled_for": AT - timedelta(days=5),
        "sent_at": AT - timedelta(days=5), "created_at": AT - timedelta(days=5), "attempts": 1}

CASES = {
    "lapsed_90_days": ("last_purchase_at: {before: 90 days ago}",
                       "last_purchase_at is 2026-11-20 (10 days ago), the rule needs before 90 days ago"),
    "lapsed_days": ("days_since_last_purchase: {gte: 90}",
                    "days_since_last_purchase is 10 (last_purchase_at 2026-11-20), the rule needs at least 90"),
    "new_members": ("joined_at: {within: 7 days}",
                    "joined_at is 2025-06-01 (547 days ago), the rule needs within the last 7 days"),
    "rich": ("points: {gte: 5000}", "points is 1,500, the rule needs at least 5,000"),
    "narrow": ("points: {gte: 1000, lte: 1200}", "points is 1,500, the rule needs at most 1,200"),
    "english": ("locale: en", "locale is 'vi', the rule needs 'en'"),
    "vip": ("tier: {at_least: gold}", "tier is silver, the rule needs at least gold"),
    "promoters": ("nps: promoter", "nps is passive (nps_score 8), the rule needs promoter"),
    "gone": ("subscribed: false", "subscribed is true, the rule needs false"),
    "big_baskets": ("average_order_value: {gte: 5000000}",
                    "average_order_value is 1,000,000, the rule needs at least 5,000,000"),
    "birthday_today": ("birthday: {anniversary: today}",
                       "birthday is 1990-05-01 (the member's local date is 2026-11-30), "
                       "the rule needs its anniversary today (the member's local date)"),
    "district_3": ("attributes.store: Q3", "attributes.store is 'Q1', the rule needs 'Q3'"),
    "frequent": ("purchases: {count: {gte: 3}, within: 30 days}",
                 "1 purchase event within the last 30 days, the rule needs at least 3"),
    "big_spenders": ("purchases: {sum: {amount: {gte: 5000000}}}",
                     "the amount of purchase events sums to 2,000,000, the rule needs a sum of at least 5,000,000"),
    "district_3_recent": ("event: {type: purchase, where: {store: Q3}, within: 30 days}",
                          "0 purchase events within the last 30 days where store 'Q3', the rule needs at least 1"),
    "readers": ("emails: {action: opened, within: 60 days}",
                "opened 0 emails within the last 60 days (people only), the rule needs at least 1"),
    "quiet": ("emails: {action: received, count: 0, within: 60 days}",
              "received 1 email within the last 60 days, the rule needs exactly 0"),
    "vip_ref": ("segment: vip", "not in segment vip: tier is silver, the rule needs at least gold"),
    "loyal_vip": ("all:\n  - points: {gte: 1000}\n  - tier: {at_least: gold}",
                  "tier is silver, the rule needs at least gold"),
    "fans_or_rich": ("any:\n  - nps: promoter\n  - points: {gte: 5000}",
                     "none of the alternatives holds: (1) nps is passive (nps_score 8), the rule needs "
                     "promoter; (2) points is 1,500, the rule needs at least 5,000"),
    "not_silver": ("not: {tier: silver}", "tier is silver, the rule needs not silver"),
    "not_ref": ("not: {segment: silver_members}",
                "in segment silver_members, the rule needs not in segment silver_members"),
    "not_any": ("not:\n  any:\n    - nps: detractor\n    - points: {gte: 1000}",
                "the rule needs the opposite of: points is 1,500, matching at least 1,000"),
}


@pytest.fixture
def explained(runtime):
    folder = runtime.project_dir / "segments"
    folder.mkdir()
    (folder / "silver_members.yaml").write_text("tier: silver\n")
    (folder / "member_m01.yaml").write_text("all:\n  - member_id: M01\n  - points: {between: [1000, 2000]}\n")
    for name, (rule, _) in CASES.items():
        (folder / f"{name}.yaml").write_text(rule + "\n")
    engine = runtime.engine()
    with engine.begin() as connection:
        connection.execute(members_table.insert(), [MEMBER])
        connection.execute(events_table.insert(), EVENTS)
        connection.execute(sends_table.insert(), [SEND])
    catalog, problems = load_catalog(runtime.settings)
    assert problems == []
    ctx = context_for(runtime.settings, catalog, AT, engine.dialect.name)

    def explain(name: str) -> str | None:
        with engine.connect() as connection:
            return why_not(connection, catalog.get(name), ctx, 1)
    return explain


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_failing_rule_is_named_with_the_members_value(explained, name):
    assert explained(name) == f"not in segment {name}: {CASES[name][1]}"


def test_a_member_in_the_segment_has_no_reason(explained):
    assert explained("member_m01") is None
    assert explained("silver_members") is None


# -- through the planner and the CLI ------------------------------------------------------------

def test_explain_names_the_segment_rule_and_the_reentry_cooldown(program):
    program.load("members", [flow_member("M1", joined_at="2025-01-01T10:00:00+07:00",
                                         last_purchase_at="2026-11-20T10:00:00+07:00"),
                             flow_member("M2", joined_at="2025-01-01T10:00:00+07:00",
                                         last_purchase_at="2026-05-01T10:00:00+07:00")],
                 at="2026-11-20T11:00:00+07:00")
    one = program.run("explain", "M1", at="2026-11-30T10:00:00+07:00")
    assert one.exit_code == 0, one.output
    assert ("winback (reengagement -> reengagement):\n  not in segment lapsed: days_since_last_purchase is 10 "
            "(last_purchase_at 2026-11-20), the rule needs at least 90\n") in one.stdout
    assert program.run("run", "--once", at="2026-11-30T10:00:00+07:00").exit_code == 0
    two = program.run("explain", "M2", at="2026-12-05T10:00:00+07:00")
    assert ("winback (reengagement -> reengagement):\n"
            "  recorded segment:lapsed:1: sent (2026-11-30 10:00 +07): in segment lapsed (entry 1 of at most 2)\n"
            "  in segment lapsed, but in the reentry cooldown: last entry 2026-11-30 10:00 +07, "
            "next one possible from 2026-12-30 10:00 +07\n") in two.stdout


def test_explain_names_each_planner_reason(program):
    program.load("members", [flow_member("M1", joined_at="2026-11-23T09:00:00+07:00", subscribed=False),
                             flow_member("M2", joined_at="2026-11-23T21:30:00+07:00")],
                 at="2026-11-23T22:00:00+07:00")
    one = program.run("explain", "M1", at="2026-11-23T10:00:00+07:00")
    assert "welcome (welcome -> welcome):\n  not sent welcome: unsubscribed\n" in one.stdout
    two = program.run("explain", "M2", at="2026-11-23T22:00:00+07:00")
    assert ("welcome (welcome -> welcome):\n  DUE welcome: joined on 2026-11-23 21:30 +07; scheduled for "
            "2026-11-24 08:00 +07 (quiet hours until 08:00 local (Asia/Ho_Chi_Minh))\n") in two.stdout
    assert ("milestones (milestone -> milestone):\n  in the flow's window, 2026-11-13 22:00 +07 to 2026-11-23 22:00 "
            "+07: no points threshold (1,000, 5,000) crossed (0 points at its start, 0 at its end); "
            "no membership anniversary (joined on 2026-11-23)\n") in two.stdout
    assert ("tier_upgrade (tier_upgrade -> tier_upgrade):\n  no upward tier change in the flow's window, "
            "2026-11-13 22:00 +07 to 2026-11-23 22:00 +07 (current tier member)\n") in two.stdout


INSTANT = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d(?::\d\d)?(?P<zone>[+-]\d\d:\d\d| [A-Z]{2,5}\b| [+-]\d\d\b)?")


def test_explain_shows_every_instant_on_the_members_clock_with_its_zone(program):
    """A member in New York, the program in Ho Chi Minh City, and the command pinned to one
    instant: the header gives that instant on the member's clock and in UTC; every other instant
    (the reason, the quiet-hours schedule, the recorded send) is on the member's clock, EST."""
    program.load("members", [flow_member("NY1", "America/New_York", joined_at="2026-11-23T09:00:00-05:00"),
                             flow_member("NY2", "America/New_York", joined_at="2026-11-23T21:30:00-05:00")],
                 at="2026-11-24T03:00:00Z")
    assert program.run("run", "--once", "--flow", "welcome", at="2026-11-23T15:00:00Z").exit_code == 0
    result = program.run("explain", "NY1", at="2026-11-24T03:00:00Z")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(
        "NY1 <ny1@example.com>: tier member, 0 points, subscribed; at 2026-11-23 22:00 EST (2026-11-24 03:00 UTC); "
        "times on the member's clock (America/New_York)\n")
    assert ("welcome (welcome -> welcome):\n  recorded welcome: sent (2026-11-23 10:00 EST): joined on "
            "2026-11-23 09:00 EST\n") in result.stdout
    assert ("milestones (milestone -> milestone):\n  in the flow's window, 2026-11-13 22:00 EST to "
            "2026-11-23 22:00 EST: no points threshold") in result.stdout
    due = program.run("explain", "NY2", at="2026-11-24T03:00:00Z")
    assert ("welcome (welcome -> welcome):\n  DUE welcome: joined on 2026-11-23 21:30 EST; scheduled for "
            "2026-11-24 08:00 EST (quiet hours until 08:00 local (America/New_York))\n") in due.stdout
    for text in (result.stdout, due.stdout):
        found = list(INSTANT.finditer(text))
        assert found and all(m.group("zone") in (" EST", " UTC") for m in found), [m.group(0) for m in found]
        assert " local," not in text and " local:" not in text and "+07" not in text


# -- a past instant is replayed as it was -------------------------------------------------------

def test_a_dry_run_at_a_past_instant_ignores_sends_recorded_later(program):
    program.load("members", [flow_member("M1", joined_at="2026-06-01T09:00:00+07:00")],
                 at="2026-06-01T09:00:00+07:00")
    assert program.run("run", "--once", "--flow", "welcome", at="2026-06-01T10:00:00+07:00").exit_code == 0
    assert program.sends() == [("welcome", "welcome", "sent")]
    before = program.dry("2026-06-01T09:30:00+07:00", "welcome")
    assert [(d["decision"], d["occurrence"]) for d in before] == [("send", "welcome")]
    table = program.run("run", "--dry-run", "--flow", "welcome", at="2026-06-01T09:30:00+07:00")
    row = next(line for line in table.stdout.splitlines() if line.startswith("welcome "))
    assert [cell.strip() for cell in row.split("│")] == ["welcome", "", "1", "0", "0", "0", "0"]
    after = program.dry("2026-06-01T11:00:00+07:00", "welcome")
    assert after == []
    explained = program.run("explain", "M1", at="2026-06-01T09:30:00+07:00")
    assert "welcome (welcome -> welcome):\n  DUE welcome: joined on 2026-06-01 09:00 +07" in explained.stdout
    assert "recorded welcome" not in explained.stdout
    later = program.run("explain", "M1", at="2026-06-01T11:00:00+07:00")
    assert "welcome (welcome -> welcome):\n  recorded welcome: sent (2026-06-01 10:00 +07)" in later.stdout


def test_a_past_segment_entry_is_not_counted_before_it_was_recorded(program):
    program.load("members", [flow_member("M1", joined_at="2025-01-01T10:00:00+07:00",
                                         last_purchase_at="2026-01-01T10:00:00+07:00")],
                 at="2026-01-01T11:00:00+07:00")
    assert program.run("run", "--once", "--flow", "winback", at="2026-11-01T10:00:00+07:00").exit_code == 0
    assert program.sends() == [("winback", "segment:lapsed:1", "sent")]
    june = program.dry("2026-06-01T10:00:00+07:00", "winback")
    assert [(d["decision"], d["occurrence"]) for d in june] == [("send", "segment:lapsed:1")]

"""Tiers that must be kept, birthdays, rewards within reach and monthly statements, at their
edges (grace boundaries, 29 February, DST, once a year, not again until below), on SQLite and
PostgreSQL, through the CLI with the clock pinned."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from loyalty_mail.models import members_table, tier_changes_table

from .flow_program import REPO, Program, member

CONFIG = """\
program:
  name: Test Rewards
  currency: VND
  default_locale: vi
  locales: [vi, en]
  default_timezone: Asia/Ho_Chi_Minh
  points_per_currency_unit: 0.001
  sender_email: rewards@test.example
tiers:
  levels:
    - {name: member, threshold: 0, perks: [Birthday voucher]}
    - {name: silver, threshold: 1000, perks: [5% off]}
    - {name: gold, threshold: 5000, perks: [10% off]}
    - {name: platinum, threshold: 20000, perks: [15% off]}
  qualification: {period: 12 months, measure: points_earned, grace: 30 days, downgrade: DOWNGRADE}
rewards:
  - {name: voucher, cost: 2000, label: {en: A voucher, vi: Phiếu mua hàng}}
  - {name: coffee, cost: 500, label: {en: A coffee, vi: Cà phê}}
tracking:
  base_url: https://t.test.example
  secret: ${LOYALTY_MAIL_SECRET:-}
sending:
  directory: outbox
  quiet_hours: {start: "21:00", end: "08:00"}
  frequency_cap: null
flows:
  - {name: at_risk, trigger: tier_at_risk, before: 30 days, template: tier_at_risk}
  - {name: downgrade, trigger: tier_downgrade, template: tier_downgrade}
  - {name: birthday, trigger: birthday, template: birthday, lateness: 1 day}
  - {name: birthday_early, trigger: birthday, days_before: 3, template: birthday, lateness: 1 day}
  - {name: reward, trigger: reward_available, template: reward_available, lateness: 7 days}
  - {name: statement, trigger: statement, schedule: "0 9 1 * *", template: statement}
  - {name: keep_push, trigger: reengagement, segment: short_of_keeping, template: tier_at_risk,
     reentry: {max: 1}}
"""


def make(tmp_path: Path, database_url: str, downgrade: str = "one_level") -> Program:
    directory = tmp_path / "lifecycle"
    directory.mkdir()
    (directory / "config.yaml").write_text(CONFIG.replace("DOWNGRADE", downgrade), encoding="utf-8")
    shutil.copytree(REPO / "templates", directory / "templates")
    (directory / "segments").mkdir()
    (directory / "segments" / "short_of_keeping.yaml").write_text(
        "name: short_of_keeping\ndescription: still short of keeping the tier\nneeded_to_keep_tier: {gte: 500}\n")
    (directory / "segments" / "review_soon.yaml").write_text(
        "name: review_soon\ndescription: tier review before 2026-02-01\ntier_review_at: {before: 2026-02-01}\n")
    (directory / "segments" / "two_rewards.yaml").write_text(
        "name: two_rewards\ndescription: can afford both rewards\naffordable_rewards: {gte: 2}\n")
    return Program(directory, database_url)


@pytest.fixture
def life(tmp_path: Path, database_url: str) -> Program:
    return make(tmp_path, database_url)


def earn(member_id: str, points: int, at: str, event_id: str, kind: str = "points_earned") -> dict:
    return {"member_id": member_id, "type": kind, "points": points, "occurred_at": at, "event_id": event_id}


def review(program: Program, at: str, *extra: str) -> dict:
    result = program.run("tiers", "review", "--format", "json", *extra, at=at)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def state(program: Program, member_id: str) -> tuple:
    engine = sa.create_engine(program.url.replace("postgresql://", "postgresql+psycopg://"))
    m, t = members_table, tier_changes_table
    with engine.connect() as conn:
        row = conn.execute(sa.select(m.c.id, m.c.tier, m.c.tier_period_start, m.c.tier_review_at)
                           .where(m.c.member_id == member_id)).one()
        history = conn.execute(sa.select(t.c.from_tier, t.c.to_tier).where(t.c.member_ref == row.id)
                               .order_by(t.c.changed_at, t.c.id)).all()
    engine.dispose()
    return row.tier, row.tier_review_at, [tuple(h) for h in history]


def decisions(plan: list[dict], flow: str) -> dict[tuple[str, str], dict]:
    return {(d["member_id"], d["occurrence"]): d for d in plan if d["flow"] == flow}


def silver_member(program: Program, member_id: str = "M1") -> None:
    """Joins on 10 January 2025 and earns 1,200 points on 15 January 2025 at 12:00 local (05:00 UTC)."""
    program.load("members", [member(member_id, joined_at="2025-01-10T10:00:00+07:00")], at="2025-01-10T10:00:00+07:00")
    program.load("events", [earn(member_id, 1200, "2025-01-15T12:00:00+07:00", f"{member_id}-e1")],
                 at="2025-01-15T12:00:00+07:00")


# -- the tier review ---------------------------------------------------------------------------

def test_imports_keep_the_tier_and_the_review_moves_members_up(life):
    silver_member(life)
    assert state(life, "M1")[0] == "member"  # with qualification the import never moves a member
    dry = review(life, "2025-01-15T12:30:00+07:00", "--dry-run")
    assert [(d["member_id"], d["kind"], d["to_tier"]) for d in dry["decisions"]] == [("M1", "up", "silver")]
    assert state(life, "M1")[0] == "member"  # the dry run changed nothing
    table = life.run("tiers", "review", "--dry-run", at="2025-01-15T12:30:00+07:00")
    assert table.stdout.endswith("\n1 up, 0 down, 0 kept at a review, 0 periods started\n"), table.stdout
    done = review(life, "2025-01-15T12:30:00+07:00")
    assert "1,200 points earned in the 12 months" in done["decisions"][0]["reason"]
    tier, review_at, history = state(life, "M1")
    assert tier == "silver" and history == [("member", "silver")]
    assert review_at.isoformat().startswith("2026-01-15T05:30")  # a calendar year after the move
    assert review(life, "2025-01-15T12:30:00+07:00")["decisions"] == []  # idempotent


def test_explain_moves_a_member_up_only_where_the_run_does(life):
    """A tick moves up only the members with a qualifying event within `sending.lookback`; older
    qualifications wait for `tiers review`. `explain` applies the review as the run does, so it
    announces the upgrade email exactly when the dry run and the run send it."""
    path = life.dir / "config.yaml"
    path.write_text(path.read_text() + "  - {name: up, trigger: tier_upgrade, template: tier_upgrade}\n")
    silver_member(life)   # 1,200 points earned on 15 January 2025
    at = "2025-01-25T10:00:00+07:00"   # ten days later: beyond the 7 days of sending.lookback
    assert [d for d in life.dry(at) if d["flow"] == "up"] == []
    explained = life.run("explain", "M1", at=at)
    assert "DUE" not in explained.stdout.split("\nup (tier_upgrade")[1], explained.stdout
    assert "no upward tier change in the flow's window" in explained.stdout
    review(life, at)   # as the README says: after importing a history, review once
    assert [d["decision"] for d in life.dry(at) if d["flow"] == "up"] == ["send"]
    assert "DUE tier:" in life.run("explain", "M1", at=at).stdout.split("\nup (tier_upgrade")[1]


@pytest.mark.parametrize(("at", "tier"), [
    ("2026-02-14T05:29:59Z", "silver"),   # review 2026-01-15 05:30 UTC + 30 days' grace: not yet
    ("2026-02-14T05:30:00Z", "member"),   # the grace has ended: one level down
])
def test_the_downgrade_waits_for_the_end_of_the_grace(life, at, tier):
    silver_member(life)
    review(life, "2025-01-15T12:30:00+07:00")
    decided = review(life, at)
    assert state(life, "M1")[0] == tier
    if tier == "member":
        [down] = decided["decisions"]
        assert down["kind"] == "down" and "not re-qualified: 0 of 1,000 points earned" in down["reason"]
        assert state(life, "M1")[1] is None  # no review at the lowest tier
        assert review(life, at)["decisions"] == []  # idempotent: one move, one history row
        assert state(life, "M1")[2] == [("member", "silver"), ("silver", "member")]


def test_activity_during_the_grace_keeps_the_tier_and_starts_a_new_period(life):
    silver_member(life)
    review(life, "2025-01-15T12:30:00+07:00")
    life.load("events", [earn("M1", 1000, "2026-02-10T10:00:00+07:00", "M1-grace")], at="2026-02-10T10:00:00+07:00")
    decided = review(life, "2026-02-14T05:30:00Z")
    assert [(d["kind"], d["to_tier"]) for d in decided["decisions"]] == [("kept", "silver")]
    tier, review_at, _ = state(life, "M1")
    assert tier == "silver" and review_at.isoformat().startswith("2027-01-15T05:30")


@pytest.mark.parametrize(("downgrade", "lands_on"), [("one_level", "gold"), ("to_qualified", "silver")])
def test_downgrade_one_level_or_to_the_qualified_level(tmp_path, database_url, downgrade, lands_on):
    program = make(tmp_path, database_url, downgrade)
    program.load("members", [member("P1", joined_at="2025-01-01T10:00:00+07:00")], at="2025-01-01T10:00:00+07:00")
    program.load("events", [earn("P1", 21000, "2025-01-02T10:00:00+07:00", "p1"),
                            earn("P1", 1500, "2025-06-01T10:00:00+07:00", "p2")], at="2025-06-01T10:00:00+07:00")
    review(program, "2025-01-02T10:00:00+07:00")
    assert state(program, "P1")[0] == "platinum"
    review(program, "2026-03-01T00:00:00+07:00")
    assert state(program, "P1")[0] == lands_on


def test_missed_reviews_are_applied_in_turn(life):
    silver_member(life)
    review(life, "2025-01-15T12:30:00+07:00")
    life.load("events", [earn("M1", 6000, "2025-03-01T10:00:00+07:00", "M1-gold")], at="2025-03-01T10:00:00+07:00")
    review(life, "2025-03-01T10:00:00+07:00")
    assert state(life, "M1")[0] == "gold"
    review(life, "2028-01-01T00:00:00+07:00")  # years later: gold -> silver -> member, a year apart
    assert state(life, "M1")[2] == [("member", "silver"), ("silver", "gold"), ("gold", "silver"), ("silver", "member")]


# -- tier_at_risk and tier_downgrade -------------------------------------------------------------

def test_tier_at_risk_is_due_30_days_before_the_review_with_what_is_needed(life):
    silver_member(life)
    silver_member(life, "M2")
    review(life, "2025-01-15T12:30:00+07:00")
    life.load("events", [earn("M2", 1500, "2025-06-01T10:00:00+07:00", "M2-keep")], at="2025-06-01T10:00:00+07:00")
    # review 2026-01-15 05:30 UTC: the reminder is due 2025-12-16 05:30 UTC (12:30 local)
    assert decisions(life.dry("2025-12-16T05:29:00Z", "at_risk"), "at_risk") == {}
    plan = decisions(life.dry("2025-12-16T05:30:00Z", "at_risk"), "at_risk")
    assert list(plan) == [("M1", "tier_review:silver:2026-01-15")]  # M2 has already re-qualified
    assert "1,000 points still needed" in plan[("M1", "tier_review:silver:2026-01-15")]["reason"]
    out = life.dir / "preview"
    assert life.run("run", "--dry-run", "--flow", "at_risk", "--out", str(out), at="2025-12-16T05:30:00Z").exit_code == 0
    [html] = list((out / "at_risk").glob("*.html"))
    text = html.read_text(encoding="utf-8")
    assert "1.000 điểm" in text and "15 tháng 1, 2026" in text  # the member's number and date format


def test_tier_downgrade_says_what_is_kept_and_how_to_come_back(life):
    silver_member(life)
    review(life, "2025-01-15T12:30:00+07:00")
    life.load("events", [earn("M1", 300, "2025-12-01T10:00:00+07:00", "M1-some")], at="2025-12-01T10:00:00+07:00")
    plan = decisions(life.dry("2026-02-14T05:30:00Z", "downgrade"), "downgrade")  # the dry run applies the review
    [(key, decided)] = plan.items()
    assert decided["decision"] == "send" and "moved down from silver to member" in decided["reason"]
    assert state(life, "M1")[0] == "silver"  # and rolls it back
    assert life.run("run", "--once", "--flow", "downgrade", at="2026-02-14T05:30:00Z").exit_code == 0
    assert state(life, "M1")[0] == "member"
    # the dry run's move was rolled back; on PostgreSQL its tier-change id stays used, so the
    # real move's key may be another tier:<id>
    [(flow, occurrence, sent_state)] = [s for s in life.sends() if s[0] == "downgrade"]
    assert occurrence.startswith("tier:") and key[1].startswith("tier:") and sent_state == "sent"
    [eml] = list((life.dir / "outbox").glob("*.eml"))
    from .test_flows import decoded_bodies
    body = decoded_bodies(eml.read_bytes())
    assert "sang Member" in body and "700 điểm" in body  # 1,000 for silver less the 300 earned this year


def test_a_points_ladder_without_qualification_downgrades_on_redemption_and_the_flow_sends(tmp_path, database_url):
    program = make(tmp_path, database_url)
    config = program.dir / "config.yaml"
    text = config.read_text().replace("  qualification: {period: 12 months, measure: points_earned, grace: 30 days, "
                                      "downgrade: one_level}\n", "")
    config.write_text(text.replace("  - {name: at_risk, trigger: tier_at_risk, before: 30 days, template: tier_at_risk}\n", ""))
    program.load("members", [member("R1", joined_at="2026-01-01T10:00:00+07:00")], at="2026-01-01T10:00:00+07:00")
    program.load("events", [earn("R1", 1200, "2026-01-02T10:00:00+07:00", "r1"),
                            earn("R1", 500, "2026-01-03T10:00:00+07:00", "r2", kind="points_redeemed")],
                 at="2026-01-03T10:00:00+07:00")
    plan = decisions(program.dry("2026-01-03T11:00:00+07:00", "downgrade"), "downgrade")
    assert [d["decision"] for d in plan.values()] == ["send"]


# -- birthdays -------------------------------------------------------------------------------------

def test_birthday_of_29_february_once_a_year(life):
    life.load("members", [member("B1", birthday="2000-02-29", joined_at="2020-01-01T00:00:00+07:00")],
              at="2025-01-01T00:00:00+07:00")
    assert ("B1", "birthday:2026") not in decisions(life.dry("2026-02-27T23:59:00+07:00", "birthday"), "birthday")
    plan = decisions(life.dry("2026-02-28T00:00:00+07:00", "birthday"), "birthday")
    assert "birthday on 2026-02-28" in plan[("B1", "birthday:2026")]["reason"]
    assert life.run("run", "--once", "--flow", "birthday", at="2026-02-28T09:00:00+07:00").exit_code == 0
    later = life.dry("2026-02-28T15:00:00+07:00", "birthday")
    assert decisions(later, "birthday") == {}  # once that year: the ledger holds birthday:2026
    leap = decisions(life.dry("2028-02-29T00:00:00+07:00", "birthday"), "birthday")
    assert leap[("B1", "birthday:2028")]["decision"] == "send"
    early = decisions(life.dry("2026-02-25T00:00:00+07:00", "birthday_early"), "birthday_early")
    assert list(early) == [("B1", "birthday:2026")]


@pytest.mark.parametrize(("birthday", "just_before", "due"), [
    # New York springs forward that night: its midnight is still EST (UTC-5)
    ("1990-03-08", "2026-03-08T04:59:00Z", "2026-03-08T05:00:00Z"),
    # and falls back that night: its midnight is still EDT (UTC-4)
    ("1990-11-01", "2026-11-01T03:59:00Z", "2026-11-01T04:00:00Z"),
])
def test_birthday_at_local_midnight_across_dst(life, birthday, just_before, due):
    life.load("members", [member("NY", "America/New_York", birthday=birthday, locale="en")],
              at="2026-01-01T00:00:00Z")
    assert decisions(life.dry(just_before, "birthday"), "birthday") == {}
    assert list(decisions(life.dry(due, "birthday"), "birthday")) == [("NY", "birthday:2026")]


# -- rewards ---------------------------------------------------------------------------------------

def test_reward_available_once_until_the_balance_falls_below_and_comes_back(life):
    life.load("members", [member("W1", joined_at="2026-03-01T10:00:00+07:00")], at="2026-03-01T10:00:00+07:00")
    life.load("events", [
        earn("W1", 600, "2026-03-02T10:00:00+07:00", "w1"),                          # 600: coffee now
        earn("W1", 100, "2026-03-03T10:00:00+07:00", "w2"),                          # 700: nothing new
        earn("W1", 300, "2026-03-04T10:00:00+07:00", "w3", kind="points_redeemed"),  # 400: below
        earn("W1", 200, "2026-03-05T10:00:00+07:00", "w4"),                          # 600: coffee again
        earn("W1", 1500, "2026-03-06T10:00:00+07:00", "w5"),                         # 2,100: voucher
    ], at="2026-03-06T10:00:00+07:00")
    plan = [d for d in life.dry("2026-03-06T11:00:00+07:00", "reward") if d["flow"] == "reward"]
    assert [d["decision"] for d in plan] == ["send"] * 3
    reasons = [d["reason"] for d in plan]
    assert "600 points" in reasons[0] and "afford coffee" in reasons[0]
    assert "600 points" in reasons[1] and "2,100 points" in reasons[2] and "afford voucher" in reasons[2]
    assert life.run("segments", "members", "two_rewards", "--format", "json",
                    at="2026-03-06T11:00:00+07:00").stdout.count('"W1"') == 1


def test_the_next_reward_and_what_is_missing(life):
    life.load("members", [member("W2", joined_at="2026-03-01T10:00:00+07:00", locale="en")],
              at="2026-03-01T10:00:00+07:00")
    life.load("events", [earn("W2", 800, "2026-03-02T10:00:00+07:00", "x1")], at="2026-03-02T10:00:00+07:00")
    out = life.dir / "preview"
    assert life.run("run", "--dry-run", "--flow", "reward", "--out", str(out), at="2026-03-02T11:00:00+07:00").exit_code == 0
    [html] = list((out / "reward").glob("*.html"))
    text = html.read_text(encoding="utf-8")
    assert "A coffee" in text and "A voucher, only 1,200 points away" in text


# -- statements ------------------------------------------------------------------------------------

def test_statement_counts_the_month_and_skips_members_with_nothing(life):
    life.load("members", [member("S1", joined_at="2026-01-01T10:00:00+07:00"),
                          member("S2", joined_at="2026-01-01T10:00:00+07:00")], at="2026-01-01T10:00:00+07:00")
    life.load("events", [
        earn("S1", 900, "2026-10-31T23:59:00+07:00", "s0"),                        # October: not counted
        earn("S1", 700, "2026-11-01T00:00:00+07:00", "s1"),
        earn("S1", 200, "2026-11-20T10:00:00+07:00", "s2", kind="points_redeemed"),
        earn("S1", 50, "2026-12-01T00:00:00+07:00", "s3"),                         # December: not counted
    ], at="2026-12-01T00:00:00+07:00")
    plan = decisions(life.dry("2026-12-01T09:00:00+07:00", "statement"), "statement")
    assert plan[("S1", "statement:2026-11")]["decision"] == "send"
    assert plan[("S2", "statement:2026-11")]["decision"] == "skip"
    assert plan[("S2", "statement:2026-11")]["reason"] == "no activity in the period and no balance"
    explained = life.run("explain", "S2", at="2026-12-01T09:00:00+07:00")
    assert "no activity in the period and no balance" in explained.stdout
    out = life.dir / "preview"
    assert life.run("run", "--dry-run", "--flow", "statement", "--out", str(out), at="2026-12-01T09:00:00+07:00").exit_code == 0
    [html] = list((out / "statement").glob("*.html"))
    text = html.read_text(encoding="utf-8")
    assert "+700" in text and "200" in text and "Tháng 11/2026" in text


def test_statement_balance_is_the_balance_at_its_planning_not_one_events_after_it_made(life):
    """A statement planned at an instant (`--at`, or a tick) shows the balance then, computed back
    from today's as milestones and rewards are: events after that instant (a history imported
    ahead of a replay, a point event dated later) neither add to it nor keep a member with nothing
    then from being skipped."""
    life.load("members", [member("S1", joined_at="2026-01-01T10:00:00+07:00"),
                          member("S2", joined_at="2026-01-01T10:00:00+07:00")], at="2026-01-01T10:00:00+07:00")
    life.load("events", [
        earn("S1", 700, "2026-11-10T10:00:00+07:00", "b1"),
        earn("S1", 300, "2026-12-05T10:00:00+07:00", "b2"),     # after the statement's planning
        earn("S2", 500, "2026-12-10T10:00:00+07:00", "b3"),     # S2's only points: later still
    ], at="2026-12-10T11:00:00+07:00")
    plan = decisions(life.dry("2026-12-01T09:00:00+07:00", "statement"), "statement")
    assert plan[("S1", "statement:2026-11")]["reason"] == "statement for 2026-11: 1 event(s), balance 700 points"
    assert plan[("S2", "statement:2026-11")]["decision"] == "skip"
    assert plan[("S2", "statement:2026-11")]["reason"] == "no activity in the period and no balance"
    out = life.dir / "balance-preview"
    assert life.run("run", "--dry-run", "--flow", "statement", "--out", str(out),
                    at="2026-12-01T09:00:00+07:00").exit_code == 0
    [html] = list((out / "statement").glob("*.html"))
    text = html.read_text(encoding="utf-8")
    assert ">700<" in text and "1.000" not in text
    assert "Còn 300 điểm nữa để lên hạng Silver" in text   # silver at 1,000: from the 700 held then


def test_statement_way_to_the_next_tier_is_the_period_measure_the_review_moves_up_on(life):
    """With tiers kept by points earned in the period, a balance of 1,500 is not 'silver now': the
    review moves up on the 300 earned in the 12 months to the statement, so silver is 700 away."""
    silver_member(life, "S1")                                          # 1,200 earned on 2025-01-15
    review(life, "2025-01-16T10:00:00+07:00")                          # silver until the review
    life.load("events", [earn("S1", 300, "2026-11-10T10:00:00+07:00", "q1")], at="2026-11-10T10:00:00+07:00")
    out = life.dir / "measure-preview"
    assert life.run("run", "--dry-run", "--flow", "statement", "--out", str(out),
                    at="2026-12-01T09:00:00+07:00").exit_code == 0
    [html] = list((out / "statement").glob("*.html"))
    text = html.read_text(encoding="utf-8")
    assert ">1.500<" in text                                           # the balance is still shown
    assert "Còn 700 điểm nữa để lên hạng Silver" in text


# -- segment fields --------------------------------------------------------------------------------

def test_segment_fields_of_the_review_and_their_explanation(life):
    silver_member(life)
    silver_member(life, "M2")
    review(life, "2025-01-15T12:30:00+07:00")
    life.load("events", [earn("M2", 800, "2025-06-01T10:00:00+07:00", "M2-part")], at="2025-06-01T10:00:00+07:00")
    members = json.loads(life.run("segments", "members", "short_of_keeping", "--format", "json",
                                  at="2025-07-01T10:00:00+07:00").stdout)
    assert [m["member_id"] for m in members] == ["M1"]  # M2 needs only 200 more
    soon = json.loads(life.run("segments", "members", "review_soon", "--format", "json",
                               at="2025-07-01T10:00:00+07:00").stdout)
    assert sorted(m["member_id"] for m in soon) == ["M1", "M2"]
    explained = life.run("explain", "M2", at="2025-07-01T10:00:00+07:00")
    assert "needed_to_keep_tier is 200" in explained.stdout


# -- configuration mistakes ------------------------------------------------------------------------

@pytest.mark.parametrize(("change", "message"), [
    (("measure: points_earned", "measure: spend"),
     "config.yaml:15:18: tiers.qualification: measure 'spend' does not match basis 'points'"),
    (("period: 12 months", "period: 36 hours"),
     "tiers.qualification.period: expected whole days, weeks, months or years (e.g. '12 months'), found '36 hours'"),
    (("trigger: birthday, template: birthday, lateness", "trigger: birthday, days_before: 31, template: birthday, lateness"),
     "flows[2].days_before: Input should be less than or equal to 30"),
    (("{name: coffee, cost: 500,", "{name: coffee, cost: true,"), "rewards[1].cost: Input should be a valid integer"),
    (("{name: coffee, cost: 500,", '{name: coffee, cost: "500",'), "rewards[1].cost: Input should be a valid integer"),
    (("trigger: birthday, days_before: 3,", "trigger: birthday, days_before: yes,"),
     "flows[3].days_before: Input should be a valid integer"),
    (("{name: reward, trigger: reward_available,", "{name: reward, trigger: reward_available, before: 2 days,"),
     "flow 'reward': `before:` belongs to points_expiring and tier_at_risk flows"),
    (('schedule: "0 9 1 * *"', 'schedule: "0 9 15 * *"'),
     "config.yaml:32:53: flows[5].schedule: flow 'statement': schedule '0 9 15 * *' runs first on 2026-01-15 09:00 "
     "for the statement of December, more than its lateness (2 days) after it was due at 2026-01-01 00:00: no "
     "statement would go out; run it within the lateness, e.g. \"0 9 1 * *\""),
    (('schedule: "0 9 1 * *"', 'schedule: "0 9 29 * *"'), "runs first on 2026-01-29 09:00 for the statement of December"),
    (('schedule: "0 9 1 * *"', 'schedule: "0 9 1 1 *"'),
     "schedule '0 9 1 1 *' runs first on 2027-01-01 09:00 for the statement of January"),
    (("period: 12 months, measure: points_earned, grace: 30 days", "period: 28 days, measure: points_earned, grace: 7 days"),
     "config.yaml:27:52: flows[0].before: flow 'at_risk': a reminder 30 days before the tier review is not shorter "
     "than tiers.qualification.period (28 days): it would fall when the member reaches the tier or before; give one "
     "shorter than the period"),
])
def test_configuration_mistakes_name_the_line_and_what_is_allowed(life, change, message):
    config = life.dir / "config.yaml"
    config.write_text(config.read_text().replace(*change))
    result = life.run("check")
    assert result.exit_code == 1 and message in result.stderr, result.stderr


@pytest.mark.parametrize("schedule", ["0 9 1 * *", "0 9 * * *", "30 23 1 * *", "0 9 2 * *", "0 0 1 * *"])
def test_statement_schedules_within_the_lateness_of_the_month_are_taken(life, schedule):
    config = life.dir / "config.yaml"
    config.write_text(config.read_text().replace('schedule: "0 9 1 * *"', f'schedule: "{schedule}"'))
    result = life.run("check")
    assert result.exit_code == 0, result.output


def test_tier_at_risk_needs_qualification_and_tiers_review_says_how_to_turn_it_on(life):
    config = life.dir / "config.yaml"
    config.write_text(config.read_text().replace(
        "  qualification: {period: 12 months, measure: points_earned, grace: 30 days, downgrade: one_level}\n", ""))
    result = life.run("check")
    assert result.exit_code == 1
    assert "flow 'at_risk': a tier_at_risk flow needs tiers.qualification" in result.stderr
    config.write_text(config.read_text().replace(
        "  - {name: at_risk, trigger: tier_at_risk, before: 30 days, template: tier_at_risk}\n", ""))
    refused = life.run("tiers", "review")
    assert refused.exit_code == 1 and "tiers.qualification is not set in config.yaml" in refused.stderr


@pytest.mark.parametrize(("start", "period", "end"), [
    ("2024-02-29T05:00:00+00:00", (12, "month"), "2025-02-28T05:00:00+00:00"),   # 29 February: 28 February
    ("2028-02-29T05:00:00+00:00", (4, "year"), "2032-02-29T05:00:00+00:00"),
    ("2026-01-31T05:00:00+00:00", (1, "month"), "2026-02-28T05:00:00+00:00"),
    ("2026-03-01T00:00:00+00:00", (30, "day"), "2026-03-31T00:00:00+00:00"),
])
def test_review_periods_are_calendar_months_and_years(start, period, end):
    from datetime import datetime

    from loyalty_mail.durations import Duration
    from loyalty_mail.tier_review import period_after, period_before
    begin, finish = datetime.fromisoformat(start), datetime.fromisoformat(end)
    assert period_after(begin, Duration(*period)) == finish
    if begin.day <= 28:
        assert period_before(finish, Duration(*period)) == begin


def test_explain_names_the_next_statement_run_between_statements(life):
    life.load("members", [member("S3", joined_at="2026-01-01T10:00:00+07:00")], at="2026-01-01T10:00:00+07:00")
    explained = life.run("explain", "S3", at="2026-12-10T12:00:00+07:00").stdout
    assert "the statement for 2026-11 was due 2026-12-01 00:00 +07" in explained
    assert "next run of its schedule ('0 9 1 * *') is 2027-01-01 09:00 +07 (statement for 2026-12)" in explained


def test_a_statement_flow_needs_a_schedule(life):
    config = life.dir / "config.yaml"
    config.write_text(config.read_text().replace(', schedule: "0 9 1 * *"', ""))
    result = life.run("check")
    assert result.exit_code == 1 and "flow 'statement': a statement flow needs `schedule:`" in result.stderr


def test_turning_qualification_on_reviews_at_the_next_anniversary_not_at_once(life):
    config = life.dir / "config.yaml"
    with_qualification = config.read_text()
    config.write_text(with_qualification.replace(
        "  qualification: {period: 12 months, measure: points_earned, grace: 30 days, downgrade: one_level}\n", "")
        .replace("  - {name: at_risk, trigger: tier_at_risk, before: 30 days, template: tier_at_risk}\n", ""))
    silver_member(life)  # without qualification the import moves M1 to silver on 15 January 2025
    assert state(life, "M1")[0] == "silver"
    config.write_text(with_qualification)
    decided = review(life, "2026-06-01T00:00:00+07:00")
    assert decided["decisions"] == [] and decided["periods_started"] == 1
    tier, review_at, _ = state(life, "M1")
    assert tier == "silver" and review_at.isoformat().startswith("2027-01-15T05:00")


def test_a_members_import_starts_new_members_at_their_tier_and_then_keeps_it(life):
    life.load("members", [member("I1", joined_at="2026-01-01T10:00:00+07:00", points=1500)],
              at="2026-01-01T10:00:00+07:00")
    assert state(life, "I1")[0] == "silver"  # moving from another system: the tier the points earn
    life.load("members", [member("I1", points=0)], at="2026-02-01T10:00:00+07:00")
    assert state(life, "I1")[0] == "silver"  # the review moves members, not an import
    review(life, "2026-02-01T10:00:00+07:00")
    tier, review_at, history = state(life, "I1")
    assert tier == "silver" and review_at.isoformat().startswith("2027-01-01T03:00") and history == []


def test_two_reviews_at_once_move_each_member_once_and_both_succeed(database_url: str, tmp_path: Path):
    """`tiers review` by hand while a tick applies the review: the second waits for the first,
    then finds the moves made (one history row per move, no "database is locked"), on both
    databases."""
    import threading
    from datetime import datetime, timezone

    from loyalty_mail import db, tier_review
    from loyalty_mail.config import load_settings
    from loyalty_mail.importing import import_rows

    program = make(tmp_path, database_url)
    settings = load_settings(program.dir, environ={}, database_url=database_url)
    engine = db.create_db_engine(database_url)
    at = datetime(2025, 2, 1, tzinfo=timezone.utc)
    import_rows(engine, settings, "members", enumerate(
        (member(f"C{n}", joined_at="2025-01-01T10:00:00+07:00") for n in range(3)), 1), source="members", now=at)
    import_rows(engine, settings, "events", enumerate(
        (earn(f"C{n}", 1200, "2025-01-15T12:00:00+07:00", f"c-{n}") for n in range(3)), 1), source="events", now=at)
    outcome: dict[str, object] = {}

    def second() -> None:
        try:
            outcome["report"] = tier_review.review_in(engine, settings, at)
        except Exception as exc:  # the failure this test is about: reported, not raised in the thread
            outcome["error"] = exc

    with db.exclusive(engine, db.REVIEW_LOCK) as conn:   # the tick's review, not committed yet
        first = tier_review.apply(conn, settings, at)
        thread = threading.Thread(target=second)
        thread.start()
        thread.join(1.0)
        assert thread.is_alive()   # it waits for the tick's transaction
    thread.join(30)
    assert not thread.is_alive()
    assert "error" not in outcome, outcome.get("error")
    assert [d.kind for d in first.decisions] == ["up"] * 3
    assert outcome["report"].decisions == []   # type: ignore[attr-defined]
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(tier_changes_table)).scalar_one() == 3
    engine.dispose()

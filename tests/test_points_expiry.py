"""Points that expire: lots taken oldest first, expiry at local midnight across DST, a lot earned on
29 February, inactivity, the job's idempotence and dry run, tiers and tier history, config mistakes
at their line, the segment fields with explain, and the points_expiring reminders."""

from __future__ import annotations

import email
import email.policy
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from loyalty_mail.config import load_settings
from loyalty_mail.errors import ConfigError
from loyalty_mail.models import events_table, members_table, point_lots_table, tier_changes_table
from loyalty_mail.segments import context_for
from loyalty_mail.segments.explain import why_not
from loyalty_mail.segments.spec import SegmentCatalog, SegmentParser
from loyalty_mail.tiers import TierLadder
from loyalty_mail.yaml_source import load_yaml_text

from .conftest import TEST_CONFIG, Cli
from .flow_program import Program, member

UTC = timezone.utc


def with_expiry(project: Path, expiry: str) -> None:
    (project / "config.yaml").write_text(TEST_CONFIG.replace(
        "  points_per_currency_unit: 0.001\n", f"  points_per_currency_unit: 0.001\n  points:\n    expiry: {expiry}\n"))


def load(run: Cli, tmp_path: Path, kind: str, rows: list[dict]) -> None:
    path = tmp_path / f"{kind}-{len(list(tmp_path.glob('*.jsonl')))}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    result = run(kind, "import", str(path))
    assert result.exit_code == 0, result.output


def earn(member_id: str, at: str, points: int, event_id: str | None = None) -> dict:
    return {"member_id": member_id, "type": "points_earned", "occurred_at": at, "points": points,
            "event_id": event_id or f"{member_id}-{at}"}


def redeem(member_id: str, at: str, points: int) -> dict:
    return {"member_id": member_id, "type": "points_redeemed", "occurred_at": at, "points": points,
            "event_id": f"{member_id}-r-{at}"}


def lots(engine: sa.Engine, member_id: str) -> list[tuple[datetime, datetime, int, int]]:
    m, lot = members_table, point_lots_table
    with engine.connect() as connection:
        return [tuple(r) for r in connection.execute(
            sa.select(lot.c.earned_at, lot.c.expires_at, lot.c.points, lot.c.remaining)
            .join(m, m.c.id == lot.c.member_ref).where(m.c.member_id == member_id).order_by(lot.c.earned_at))]


def expired(engine: sa.Engine) -> list[tuple[str, datetime, int]]:
    m, e = members_table, events_table
    with engine.connect() as connection:
        return [tuple(r) for r in connection.execute(
            sa.select(m.c.member_id, e.c.occurred_at, e.c.points).join(m, m.c.id == e.c.member_ref)
            .where(e.c.type == "points_expired").order_by(m.c.member_id, e.c.occurred_at, e.c.id))]


def state(engine: sa.Engine, member_id: str) -> tuple[int, str]:
    m = members_table
    with engine.connect() as connection:
        return tuple(connection.execute(sa.select(m.c.points, m.c.tier).where(m.c.member_id == member_id)).one())


def members_in(run: Cli, tmp_path: Path, zone: str, *ids: str) -> None:
    load(run, tmp_path, "members", [{"member_id": i, "email": f"{i.lower()}@example.com", "timezone": zone}
                                    for i in ids])


def test_redemptions_take_the_oldest_lots_first_and_tiers_follow_expiry(run, runtime, project, tmp_path):
    with_expiry(project, "{after: 12 months}")
    members_in(run, tmp_path, "Asia/Ho_Chi_Minh", "A")
    load(run, tmp_path, "events", [earn("A", "2025-01-10T10:00:00+07:00", 1000),
                                   earn("A", "2025-03-10T10:00:00+07:00", 2000),
                                   redeem("A", "2025-04-01T10:00:00+07:00", 1500)])
    engine = runtime.engine()
    # 1,500 redeemed: all of the first lot, then 500 of the second.
    assert lots(engine, "A") == [(datetime(2025, 3, 10, 3, tzinfo=UTC), datetime(2026, 3, 10, 3, tzinfo=UTC), 2000, 1500)]
    nothing = run("points", "expire", "--at", "2026-01-11T00:00:00+07:00")
    assert nothing.exit_code == 0, nothing.output
    assert "expired 0 points of 0 members" in nothing.output and expired(engine) == []
    assert "points expiry at 2026-01-10 17:00 UTC:" in nothing.output   # --at given at +07:00
    assert state(engine, "A") == (1500, "silver")

    result = run("points", "expire", "--at", "2026-03-11T00:00:00+07:00")
    assert result.exit_code == 0, result.output
    assert "expired 1,500 points of 1 member (1 event, 1 tier change)" in result.output
    assert expired(engine) == [("A", datetime(2026, 3, 10, 3, tzinfo=UTC), -1500)]
    assert state(engine, "A") == (0, "member") and lots(engine, "A") == []
    t = tier_changes_table
    with engine.connect() as connection:
        last = connection.execute(sa.select(t.c.from_tier, t.c.to_tier, t.c.changed_at, t.c.reason)
                                  .order_by(t.c.changed_at.desc(), t.c.id.desc()).limit(1)).one()
    assert tuple(last) == ("silver", "member", datetime(2026, 3, 10, 3, tzinfo=UTC), "points expired (-1,500 points)")


def test_the_job_twice_records_nothing_new_and_a_dry_run_records_nothing(run, runtime, project, tmp_path):
    with_expiry(project, "{after: 12 months}")
    members_in(run, tmp_path, "Asia/Ho_Chi_Minh", "A", "B")
    load(run, tmp_path, "events", [earn("A", "2025-01-10T10:00:00+07:00", 700),
                                   earn("B", "2025-02-10T10:00:00+07:00", 1200)])
    engine = runtime.engine()
    dry = run("points", "expire", "--dry-run", "--format", "json", "--at", "2026-03-01T00:00:00Z")
    assert dry.exit_code == 0, dry.output
    shown = json.loads(dry.output)
    assert (shown["dry_run"], shown["members"], shown["events"], shown["points"], shown["tier_changes"]) == (
        True, 2, 2, 1900, 1)
    assert [row["event_id"] for row in shown["expired"]] == [
        "lm-expired/A/20260110T030000.000000Z", "lm-expired/B/20260210T030000.000000Z"]
    assert expired(engine) == [] and state(engine, "B") == (1200, "silver") and len(lots(engine, "B")) == 1

    first = run("points", "expire", "--at", "2026-03-01T00:00:00Z")
    assert "expired 1,900 points of 2 members (2 events, 1 tier change)" in first.output
    again = run("points", "expire", "--at", "2026-03-02T00:00:00Z")
    assert "expired 0 points of 0 members (0 events, 0 tier changes)" in again.output
    assert len(expired(engine)) == 2 and state(engine, "B") == (0, "member")


def test_expiry_at_local_midnight_across_a_dst_change(run, runtime, project, tmp_path):
    """Earned at local midnight in winter (UTC-5), expiring at local midnight in summer (UTC-4):
    04:00 UTC, not 05:00. A wall time the spring-forward gap skips lands just after the gap."""
    with_expiry(project, "{after: 6 months}")
    members_in(run, tmp_path, "America/New_York", "NY", "GAP")
    load(run, tmp_path, "events", [earn("NY", "2026-01-15T00:00:00-05:00", 800),
                                   earn("GAP", "2025-09-08T02:30:00-04:00", 300)])
    engine = runtime.engine()
    assert lots(engine, "NY")[0][1] == datetime(2026, 7, 15, 4, 0, tzinfo=UTC)
    assert lots(engine, "GAP")[0][1] == datetime(2026, 3, 8, 7, 30, tzinfo=UTC)  # 03:30 EDT
    assert "expired 0 points" in run("points", "expire", "--at", "2026-03-08T07:29:59Z").output
    assert "expired 300 points" in run("points", "expire", "--at", "2026-03-08T07:30:00Z").output
    assert "expired 0 points" in run("points", "expire", "--at", "2026-07-15T03:59:59Z").output
    assert "expired 800 points" in run("points", "expire", "--at", "2026-07-15T04:00:00Z").output
    assert expired(engine) == [("GAP", datetime(2026, 3, 8, 7, 30, tzinfo=UTC), -300),
                               ("NY", datetime(2026, 7, 15, 4, 0, tzinfo=UTC), -800)]


def test_a_members_import_that_changes_the_time_zone_derives_the_lots_on_the_new_clock(run, runtime, project,
                                                                                       tmp_path):
    """Earned at midnight in New York (05:00 UTC in winter), 6 months: 04:00 UTC there (EDT), but
    05:00 UTC on the clock of Ho Chi Minh City (12:00 local, no DST) once the member moves, as
    `points rebuild` would make it; a row that leaves the zone blank changes nothing."""
    with_expiry(project, "{after: 6 months}")
    members_in(run, tmp_path, "America/New_York", "NY", "STAY")
    load(run, tmp_path, "events", [earn("NY", "2026-01-15T00:00:00-05:00", 800),
                                   earn("STAY", "2026-01-15T00:00:00-05:00", 100)])
    engine = runtime.engine()
    assert lots(engine, "NY")[0][1] == datetime(2026, 7, 15, 4, 0, tzinfo=UTC)
    load(run, tmp_path, "members", [{"member_id": "NY", "email": "ny@example.com", "timezone": "Asia/Ho_Chi_Minh"},
                                    {"member_id": "STAY", "email": "stay@example.com", "timezone": ""}])
    moved = lots(engine, "NY")
    assert moved == [(datetime(2026, 1, 15, 5, 0, tzinfo=UTC), datetime(2026, 7, 15, 5, 0, tzinfo=UTC), 800, 800)]
    assert lots(engine, "STAY")[0][1] == datetime(2026, 7, 15, 4, 0, tzinfo=UTC)
    assert run("points", "rebuild").exit_code == 0
    assert lots(engine, "NY") == moved
    assert "expired 100 points of 1 member" in run("points", "expire", "--at", "2026-07-15T04:30:00Z").output
    assert expired(engine) == [("STAY", datetime(2026, 7, 15, 4, 0, tzinfo=UTC), -100)]


def test_a_redemption_dated_before_a_recorded_expiry_is_refused_saying_the_balance_then_and_why(
        run, runtime, project, tmp_path):
    """1,000 points earned, expiring on 2026-01-10 and recorded as expired; a redemption dated
    2026-01-05 (when the member held 1,000) imported afterwards is refused: the message gives the
    balance at its date, the balance now, the expiry that took the points, and the row."""
    with_expiry(project, "{after: 12 months}")
    members_in(run, tmp_path, "Asia/Ho_Chi_Minh", "A")
    load(run, tmp_path, "events", [earn("A", "2025-01-10T10:00:00+07:00", 1000),
                                   earn("A", "2025-12-01T10:00:00+07:00", 100)])
    assert "expired 1,000 points" in run("points", "expire", "--at", "2026-01-11T00:00:00+07:00").output
    path = tmp_path / "late.jsonl"
    path.write_text(json.dumps(earn("A", "2026-01-10T09:00:00+07:00", 5, "x")) + "\n"
                    + json.dumps(redeem("A", "2026-01-05T10:00:00+07:00", 600)) + "\n")
    result = run("events", "import", str(path))
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == (
        f"Error: {path}: row 2: points: redeems 600 points dated 2026-01-05 03:00 UTC; member 'A' had 1,100 then "
        "and has 100 now: 1,000 points expired after that date and the expiry is recorded (from 2026-01-10 03:00 "
        "UTC), and a redemption is taken from the balance held now. Credit the points back with a points_earned "
        "event before importing it if the redemption stands")
    assert state(runtime.engine(), "A")[0] == 100


def test_a_lot_earned_on_29_february(run, runtime, project, tmp_path):
    with_expiry(project, "{after: 1 year}")
    members_in(run, tmp_path, "Asia/Ho_Chi_Minh", "LEAP")
    load(run, tmp_path, "events", [earn("LEAP", "2028-02-29T10:00:00+07:00", 500),
                                   earn("LEAP", "2028-02-28T23:30:00+07:00", 200)])
    engine = runtime.engine()
    # 28 February 2029 (no 29th), at 10:00 local: both lots expire on the same date.
    assert [(lot[1], lot[3]) for lot in lots(engine, "LEAP")] == [
        (datetime(2029, 2, 28, 16, 30, tzinfo=UTC), 200), (datetime(2029, 2, 28, 3, 0, tzinfo=UTC), 500)]
    assert "expired 500 points" in run("points", "expire", "--at", "2029-02-28T10:00:00+07:00").output
    assert "expired 200 points" in run("points", "expire", "--at", "2029-03-01T00:00:00+07:00").output


def test_inactivity_expires_everything_after_the_last_activity_and_after_each_gap(run, runtime, project, tmp_path):
    with_expiry(project, "{inactivity: 18 months}")
    members_in(run, tmp_path, "Asia/Ho_Chi_Minh", "I")
    load(run, tmp_path, "events", [earn("I", "2022-01-01T09:00:00+07:00", 400),   # expires after the gap
                                   earn("I", "2024-01-01T09:00:00+07:00", 600),
                                   redeem("I", "2024-03-01T09:00:00+07:00", 500),  # activity: keeps them alive
                                   earn("I", "2024-12-01T09:00:00+07:00", 900)])
    engine = runtime.engine()
    # The redemption took the 400 left of 2022 first (not yet recorded as expired), then 100.
    assert [(lot[1], lot[3]) for lot in lots(engine, "I")] == [
        (datetime(2026, 6, 1, 2, tzinfo=UTC), 500), (datetime(2026, 6, 1, 2, tzinfo=UTC), 900)]
    assert "expired 0 points" in run("points", "expire", "--at", "2026-06-01T08:59:00+07:00").output
    assert "expired 1,400 points" in run("points", "expire", "--at", "2026-06-01T09:00:00+07:00").output
    assert state(runtime.engine(), "I") == (0, "member")
    # A history imported later is replayed with the rest: the 2024 redemption now takes the 50
    # points of 2021 first, so 50 more of the lots that expired on 2026-06-01 are left: a second
    # expiry at that instant, under its own event id.
    load(run, tmp_path, "events", [earn("I", "2021-01-01T09:00:00+07:00", 50, "old")])
    assert "expired 50 points" in run("points", "expire", "--at", "2026-06-02T00:00:00+07:00").output
    assert expired(engine) == [("I", datetime(2026, 6, 1, 2, tzinfo=UTC), -1400),
                               ("I", datetime(2026, 6, 1, 2, tzinfo=UTC), -50)]
    with engine.connect() as connection:
        assert sorted(connection.execute(sa.select(events_table.c.event_id).where(
            events_table.c.type == "points_expired")).scalars()) == [
            "lm-expired/I/20260601T020000.000000Z", "lm-expired/I/20260601T020000.000000Z/2"]
    assert state(engine, "I") == (0, "member") and lots(engine, "I") == []


def test_points_without_expiry_and_rebuild(run, runtime, project, tmp_path):
    members_in(run, tmp_path, "Asia/Ho_Chi_Minh", "A")
    load(run, tmp_path, "events", [earn("A", "2025-01-10T10:00:00+07:00", 1000)])
    refused = run("points", "expire")
    assert refused.exit_code == 1
    assert "points do not expire in this program: set program.points.expiry" in refused.output
    assert lots(runtime.engine(), "A") == []
    with_expiry(project, "{after: 12 months}")
    rebuilt = run("points", "rebuild")
    assert rebuilt.exit_code == 0 and "1 lots with points left, under after: 12 months" in rebuilt.output
    assert lots(runtime.engine(), "A")[0][1] == datetime(2026, 1, 10, 3, tzinfo=UTC)


@pytest.mark.parametrize("expiry, message", [
    ("{after: 12 months, inactivity: 18 months}", "config.yaml:9:13: program.points.expiry: give either after:"),
    ("{after: 0}", "config.yaml:9:21: program.points.expiry.after: expected a duration above 0 such as '12 months'"),
    ("{after: 12 moons}", "config.yaml:9:21: program.points.expiry.after: unknown unit 'moons' in '12 moons'"),
    ("{until: 12 months}", "config.yaml:9:14: unknown key 'until' in program.points.expiry (allowed: after, inactivity)"),
    ("12 months", "config.yaml:9:13: program.points.expiry: expected {after: 12 months}"),
])
def test_expiry_mistakes_name_the_line(project, monkeypatch, expiry, message):
    monkeypatch.chdir(project)
    with_expiry(project, expiry)
    with pytest.raises(ConfigError) as caught:
        load_settings(project, environ={})
    assert message in str(caught.value)


@pytest.mark.parametrize("expiry, flow, message", [
    ("", "before: [30 days]", "flows: flow 'remind': a points_expiring flow needs program.points.expiry"),
    ("    expiry: {after: 12 months}\n", "", "a points_expiring flow needs `before:`"),
    ("    expiry: {after: 12 months}\n", "before: [30 days, 30 days]", "before: lists the same reminder twice"),
    ("    expiry: {after: 12 months}\n", "before: [4 weeks, 28 days]", "before: lists the same reminder twice"),
    ("    expiry: {after: 12 months}\n", "before: [30 days, 13 months]",
     "config.yaml:18:91: flows[0].before[1]: flow 'remind': a reminder 13 months before the expiry is not shorter than "
     "program.points.expiry (after: 12 months): it would fall when the points are earned or before; "
     "give reminders shorter than the expiry (e.g. before: [30 days, 7 days])"),
    ("    expiry: {after: 12 months}\n", "before: [1 year]", "flows[0].before[0]: flow 'remind': a reminder 1 year "),
    ("    expiry: {after: 12 months}\n", "before: 400 days", "flows[0].before: flow 'remind': a reminder 400 days "),
    ("    expiry: {inactivity: 18 months}\n", "before: [2 years]",
     "not shorter than program.points.expiry (inactivity: 18 months): it would fall at the member's last "
     "earning or redeeming event or before"),
    ("    expiry: {after: 2 hours}\n", "before: [1 day]", "a reminder 1 day before the expiry is not shorter"),
])
def test_reminder_flow_mistakes(project, monkeypatch, expiry, flow, message):
    monkeypatch.chdir(project)
    points = f"  points:\n{expiry}" if expiry else ""
    (project / "config.yaml").write_text(
        TEST_CONFIG.replace("  points_per_currency_unit: 0.001\n", "  points_per_currency_unit: 0.001\n" + points)
        + f"flows:\n  - {{name: remind, trigger: points_expiring, template: points_expiring, {flow}}}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(project, environ={})
    assert message in str(caught.value)


@pytest.mark.parametrize("expiry, before", [
    ("after: 12 months", "[11 months, 335 days, 7 days]"),
    ("after: 12 months", "[365 days]"),                 # a year may have 366 days
    ("inactivity: 18 months", "[17 months, 1 year]"),
    ("after: 30 days", "[4 weeks, 29 days, 24 hours]"),
])
def test_reminders_shorter_than_the_expiry_are_taken(project, monkeypatch, expiry, before):
    monkeypatch.chdir(project)
    (project / "config.yaml").write_text(
        TEST_CONFIG.replace("  points_per_currency_unit: 0.001\n",
                            f"  points_per_currency_unit: 0.001\n  points:\n    expiry: {{{expiry}}}\n")
        + f"flows:\n  - {{name: remind, trigger: points_expiring, template: points_expiring, before: {before}}}\n")
    assert [flow.name for flow in load_settings(project, environ={}).flows] == ["remind"]


def test_segment_fields_explain_why_a_member_is_out(run, runtime, project, tmp_path):
    with_expiry(project, "{after: 12 months}")
    members_in(run, tmp_path, "Asia/Ho_Chi_Minh", "A")
    load(run, tmp_path, "events", [earn("A", "2025-12-10T10:00:00+07:00", 200)])
    settings = load_settings(project, environ={})
    ladder = TierLadder.from_settings(settings.tiers)
    engine = runtime.engine()
    at = datetime(2026, 11, 23, 3, tzinfo=UTC)
    ctx = context_for(settings, SegmentCatalog({}), at, engine.dialect.name)

    def explained(text: str) -> str | None:
        segment = SegmentParser(load_yaml_text(text, "segments/s.yaml"), ladder).segment("s")
        assert segment is not None
        with engine.connect() as connection:
            ref = connection.execute(sa.select(members_table.c.id)).scalar_one()
            return why_not(connection, segment, ctx, ref)

    assert explained("points_expiring: {within: 30 days, gte: 500}\n") == (
        "not in segment s: points_expiring is 200 within the next 30 days, the next on 2026-12-10, "
        "the rule needs at least 500 points expiring within the next 30 days")
    assert explained("points_expiring: {within: 30 days}\n") is None
    assert explained("next_points_expiry_at: {within_next: 2 weeks}\n") == (
        "not in segment s: next_points_expiry_at is 2026-12-10T03:00:00+00:00, the rule needs within the next 2 weeks")
    problems = SegmentParser(load_yaml_text("points_expiring: {gte: 5}\n", "segments/s.yaml"), ladder)
    assert problems.segment("s") is None
    assert [str(p) for p in problems.problems] == [
        "segments/s.yaml:1:18: field 'points_expiring' needs within: how far ahead to look, e.g. "
        "{within: 30 days, gte: 500}"]


REMINDER = """\
  - {name: remind, trigger: points_expiring, template: points_expiring, before: [30 days, 7 days],
     priority: 70, lateness: 30 days, frequency_cap: false}
"""


def reminders(program: Program) -> Program:
    path = program.dir / "config.yaml"
    text = path.read_text().replace("  sender_email: rewards@test.example\n",
                                    "  sender_email: rewards@test.example\n  points:\n    expiry: {after: 12 months}\n")
    for trigger in ("welcome", "milestone", "tier_upgrade", "reengagement"):
        text = text.replace(f"trigger: {trigger},", f"trigger: {trigger}, enabled: false,")
    path.write_text(text + REMINDER)
    return program


def test_reminders_once_per_offset_and_date_in_the_members_language(program):
    reminders(program)
    program.load("members", [member("M1"), member("M2", locale="en"), member("M3")], at="2025-12-01T09:00:00+07:00")
    program.load("events", [earn("M1", "2025-12-10T10:00:00+07:00", 1500), earn("M1", "2025-12-10T18:00:00+07:00", 500),
                            earn("M2", "2025-12-10T10:00:00+07:00", 700), earn("M3", "2025-12-10T10:00:00+07:00", 900)],
                 at="2025-12-10T19:00:00+07:00")
    assert program.dry("2026-11-10T09:59:00+07:00") == []
    once = program.run("run", "--once", at="2026-11-10T10:30:00+07:00")
    assert once.exit_code == 0, once.output
    assert sorted(program.sends()) == [("remind", "points_expiring:2026-12-10:30days", "sent")] * 3
    messages = [email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
                for p in (program.dir / "outbox").glob("*.eml")]
    subjects = sorted(str(m["Subject"]) for m in messages)
    assert subjects == ["2.000 điểm của bạn sẽ hết hạn ngày 10 tháng 12, 2026", "700 of your points expire on December 10, 2026",
                        "900 điểm của bạn sẽ hết hạn ngày 10 tháng 12, 2026"]
    # M3 redeems everything: no 7-day reminder for points no longer held.
    program.load("events", [redeem("M3", "2026-11-20T10:00:00+07:00", 900)], at="2026-11-20T10:00:00+07:00")
    assert program.run("run", "--once", at="2026-11-20T10:30:00+07:00").exit_code == 0
    plan = program.dry("2026-12-03T10:30:00+07:00")
    assert sorted((d["member_id"], d["occurrence"], d["decision"]) for d in plan) == [
        ("M1", "points_expiring:2026-12-10:7days", "send"), ("M2", "points_expiring:2026-12-10:7days", "send")]
    assert program.run("run", "--once", at="2026-12-03T10:30:00+07:00").exit_code == 0
    assert program.dry("2026-12-05T10:30:00+07:00") == []
    explained = program.run("explain", "M3", at="2026-12-05T10:30:00+07:00")
    assert "\n  no points that will expire (balance 0)\n" in explained.output, explained.output
    explained = program.run("explain", "M1", at="2026-11-05T10:30:00+07:00")
    assert ("the next points expire on 2026-12-10 10:00 +07; no reminder (30 days, 7 days before) falls in "
            "the flow's window") in explained.output, explained.output
    # At the tick after the expiry the points are recorded as expired, and nothing more is sent.
    after = program.run("run", "--once", at="2026-12-10T18:30:00+07:00")
    assert after.exit_code == 0, after.output
    assert len(program.sends()) == 5
    engine = sa.create_engine(program.url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        assert [(m, p) for m, _, p in expired(engine)] == [("M1", -1500), ("M1", -500), ("M2", -700)]
    finally:
        engine.dispose()


def test_a_late_lot_sends_the_nearest_reminder_and_supersedes_the_other(program):
    reminders(program)
    program.load("members", [member("M1")], at="2025-12-01T09:00:00+07:00")
    program.load("events", [earn("M1", "2025-12-10T10:00:00+07:00", 1500)], at="2026-12-05T10:00:00+07:00")
    plan = program.dry("2026-12-05T10:30:00+07:00")
    by_key = {d["occurrence"]: d for d in plan}
    assert by_key["points_expiring:2026-12-10:7days"]["decision"] == "send"
    assert by_key["points_expiring:2026-12-10:30days"]["decision"] == "skip"
    assert "superseded by points_expiring:2026-12-10:7days" in by_key["points_expiring:2026-12-10:30days"]["reason"]


def test_expiry_is_cut_to_a_balance_set_by_a_members_import(run, runtime, project, tmp_path):
    """Points set directly by a members import are in no lot: an expiry never takes more than the
    balance, and what the lots still hold beyond it never expires twice."""
    with_expiry(project, "{after: 12 months}")
    members_in(run, tmp_path, "Asia/Ho_Chi_Minh", "A", "B")
    load(run, tmp_path, "events", [earn("A", "2025-01-10T10:00:00+07:00", 500),
                                   earn("B", "2025-01-10T10:00:00+07:00", 800)])
    load(run, tmp_path, "members", [{"member_id": "A", "email": "a@example.com", "points": 100}])
    engine = runtime.engine()
    assert "expired 900 points of 2 members" in run("points", "expire", "--at", "2026-02-01T00:00:00Z").output
    assert expired(engine) == [("A", datetime(2026, 1, 10, 3, tzinfo=UTC), -100),
                               ("B", datetime(2026, 1, 10, 3, tzinfo=UTC), -800)]
    assert state(engine, "A") == (0, "member") and lots(engine, "B") == []
    assert [lot[3] for lot in lots(engine, "A")] == [400]  # derived again: 500 earned, 100 expired
    assert "expired 0 points of 0 members" in run("points", "expire", "--at", "2026-02-02T00:00:00Z").output


def test_the_statement_says_what_will_expire_in_the_month_after_it(program):
    """The monthly statement carries the points of lots expiring in the month it is read."""
    reminders(program)
    path = program.dir / "config.yaml"
    path.write_text(path.read_text() + '  - {name: statement, trigger: statement, schedule: "0 9 1 * *", '
                                       "template: statement, lateness: 3 days}\n")
    program.load("members", [member("M1"), member("M2")], at="2025-11-01T09:00:00+07:00")
    program.load("events", [earn("M1", "2025-12-10T10:00:00+07:00", 1500),   # expires 2026-12-10: in December
                            earn("M1", "2026-01-20T10:00:00+07:00", 300),    # expires 2027-01-20: later
                            earn("M2", "2025-11-05T10:00:00+07:00", 400)],   # expired on 2026-11-05
                 at="2026-01-20T11:00:00+07:00")
    result = program.run("run", "--once", at="2026-12-01T09:30:00+07:00")
    assert result.exit_code == 0, result.output
    engine = sa.create_engine(program.url.replace("postgresql://", "postgresql+psycopg://"))
    from loyalty_mail.models import sends_table as s
    with engine.connect() as conn:
        rows = conn.execute(sa.select(members_table.c.member_id, s.c.occurrence)
                            .join(members_table, members_table.c.id == s.c.member_ref)
                            .where(s.c.flow == "statement")).all()
    engine.dispose()
    got = {member_id: (data["expired"], data["expiring"], data["expiring_until"][:10]) for member_id, data in rows}
    assert got == {"M1": (0, 1500, "2027-01-01"), "M2": (400, 0, "2027-01-01")}
    bodies = [email.message_from_bytes(p.read_bytes(), policy=email.policy.default).get_body(("html",)).get_content()
              for p in (program.dir / "outbox").glob("*.eml")]
    statements = [b for b in bodies if "Điểm hết hạn" in b]
    assert len(statements) == 2
    assert sum("1.500 điểm sẽ hết hạn trước" in b for b in statements) == 1   # M1's; M2 has none expiring


def _members_a_and_b(tmp_path: Path, database_url: str) -> tuple[Any, Any, datetime]:
    """A program whose lots expire 12 months after they are earned, with members A and B; its
    settings, engine and the instant they were imported at."""
    from loyalty_mail import db
    from loyalty_mail.importing import import_rows

    project = tmp_path / "program"
    project.mkdir()
    with_expiry(project, "{after: 12 months}")
    settings = load_settings(project, environ={}, database_url=database_url)
    engine = db.create_db_engine(database_url)
    at = datetime(2026, 3, 1, tzinfo=UTC)
    import_rows(engine, settings, "members", enumerate(
        ({"member_id": i, "email": f"{i.lower()}@example.com"} for i in ("A", "B")), 1), source="members", now=at)
    return settings, engine, at


def test_record_expiries_moves_tiers_links_history_skips_recorded_ids_and_rejects_overdrafts(database_url: str,
                                                                                              tmp_path: Path):
    """The job's set-based writer, on both databases: two expiries of one member in one call (the
    second takes the tier down, and the history points at that event), an id already recorded
    skipped, and an expiry above the balance refused with nothing kept."""
    from loyalty_mail.errors import ImportRejected
    from loyalty_mail.importing import import_rows
    from loyalty_mail.importing.events import Expiry, record_expiries

    settings, engine, at = _members_a_and_b(tmp_path, database_url)
    import_rows(engine, settings, "events", enumerate(
        [earn("A", "2025-01-10T10:00:00+07:00", 1200), earn("B", "2025-01-10T10:00:00+07:00", 300),
         earn("B", "2025-01-11T10:00:00+07:00", 5, event_id="taken")], 1), source="events", now=at)
    m, e, t = members_table, events_table, tier_changes_table
    with engine.connect() as connection:
        refs = dict(connection.execute(sa.select(m.c.member_id, m.c.id)).all())
    first, second = datetime(2026, 1, 10, 3, tzinfo=UTC), datetime(2026, 1, 11, 3, tzinfo=UTC)
    with engine.begin() as connection:
        summary = record_expiries(connection, settings, [
            Expiry(1, refs["A"], "x/A/1", first, 100), Expiry(2, refs["A"], "x/A/2", second, 200),
            Expiry(3, refs["B"], "taken", first, 5), Expiry(4, refs["B"], "x/B/1", first, 300)],
            source="points expiry", now=at)
    assert (summary.inserted, summary.skipped, summary.tier_changes, summary.updated) == (3, 1, 1, 2)
    assert state(engine, "A") == (900, "member") and state(engine, "B") == (5, "member")
    with engine.connect() as connection:
        moves = connection.execute(sa.select(t.c.from_tier, t.c.to_tier, t.c.changed_at, t.c.reason, e.c.event_id)
                                   .join(e, e.c.id == t.c.event_ref).where(t.c.member_ref == refs["A"])
                                   .order_by(t.c.changed_at, t.c.id)).all()
    assert [tuple(r) for r in moves][-1] == ("silver", "member", second, "points expired (-200 points)", "x/A/2")
    assert ("A", second, -200) in expired(engine)

    with pytest.raises(ImportRejected) as caught, engine.begin() as connection:
        record_expiries(connection, settings, [Expiry(1, refs["B"], "x/B/2", second, 6)],
                        source="points expiry", now=at)
    assert "points expiry: row 1: points: expires 6 points but member 'B' has 5 at 2026-01-11 03:00 UTC" in str(
        caught.value)
    assert state(engine, "B") == (5, "member") and ("B", second, -6) not in expired(engine)
    engine.dispose()


def test_reminders_fall_on_the_members_own_clock_across_dst_and_month_ends(program):
    """`before:` is calendar time on the member's clock, as the expiry is: a month before 1 March
    05:00 in Tokyo is 1 February 05:00 there (not 29 January, a month before the UTC instant, 28
    February 20:00), and a month before 20 March 00:30 in New York (EDT) is 20 February 00:30 EST,
    not 23:30 the evening before."""
    reminders(program)
    path = program.dir / "config.yaml"
    path.write_text(path.read_text().replace("before: [30 days, 7 days]", "before: [1 month]"))
    program.load("members", [member("TK", "Asia/Tokyo"), member("NY", "America/New_York")],
                 at="2025-02-01T09:00:00+07:00")
    program.load("events", [earn("TK", "2025-03-01T05:00:00+09:00", 800),     # expires 2026-02-28 20:00 UTC
                            earn("NY", "2025-03-20T00:30:00-04:00", 600)],    # expires 2026-03-20 04:30 UTC
                 at="2025-03-20T10:00:00+07:00")

    def due(at: str) -> list[tuple[str, str]]:
        return sorted((d["member_id"], d["occurrence"]) for d in program.dry(at) if d["decision"] == "send")

    assert due("2026-02-01T04:59:00+09:00") == []
    assert due("2026-02-01T05:00:00+09:00") == [("TK", "points_expiring:2026-03-01:1months")]
    plan = program.dry("2026-02-01T05:00:00+09:00")
    assert "800 points expire on 2026-03-01 05:00 JST (1 month before)" in plan[0]["reason"]
    assert due("2026-02-19T23:59:00-05:00") == [("TK", "points_expiring:2026-03-01:1months")]
    assert due("2026-02-20T00:30:00-05:00") == [("NY", "points_expiring:2026-03-20:1months"),
                                                ("TK", "points_expiring:2026-03-01:1months")]


def test_the_dry_run_and_explain_see_the_expiry_that_a_run_records_first(program):
    """`run --once` records the points that have expired before it plans; `run --dry-run` and
    `explain` apply the same expiry in the transaction they roll back, so they announce what the
    run then sends (here the tier downgrade the expiry brings) and record nothing."""
    reminders(program)
    path = program.dir / "config.yaml"
    path.write_text(path.read_text() + "  - {name: down, trigger: tier_downgrade, template: tier_downgrade}\n")
    program.load("members", [member("M1")], at="2025-01-01T09:00:00+07:00")
    program.load("events", [earn("M1", "2025-01-10T10:00:00+07:00", 1500)], at="2025-01-10T11:00:00+07:00")
    at = "2026-01-10T11:00:00+07:00"
    assert [(d["flow"], d["decision"]) for d in program.dry(at)] == [("down", "send")]
    explained = program.run("explain", "M1", at=at)
    assert explained.exit_code == 0, explained.output
    assert "moved down from silver to member on 2026-01-10 10:00 +07; scheduled for" in explained.output
    engine = sa.create_engine(program.url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        assert expired(engine) == [] and state(engine, "M1") == (1500, "silver")  # nothing was kept
        assert program.sends() == []
        once = program.run("run", "--once", at=at)
        assert once.exit_code == 0, once.output
        assert [(flow, state_) for flow, _key, state_ in program.sends()] == [("down", "sent")]
        assert expired(engine) == [("M1", datetime(2026, 1, 10, 3, tzinfo=UTC), -1500)]
    finally:
        engine.dispose()


def test_check_and_the_job_warn_when_the_lots_follow_another_rule(run, runtime, project, tmp_path):
    """Lots are derived when events are imported: after program.points.expiry changes, the lots
    already kept follow the old rule until `points rebuild`. `check` and `points expire` say so
    (the job would take points by the old rule), and stop saying so once they are rebuilt."""
    with_expiry(project, "{after: 12 months}")
    members_in(run, tmp_path, "Asia/Ho_Chi_Minh", "A", "B")
    load(run, tmp_path, "events", [earn("A", "2025-01-10T10:00:00+07:00", 700),
                                   earn("B", "2025-06-10T10:00:00+07:00", 300)])
    runtime.engine()
    advice = "derived under another rule; run `loyalty-mail points rebuild` before points expire again"
    assert advice not in run("points", "expire", "--dry-run", "--at", "2025-07-01T00:00:00Z").stderr
    with_expiry(project, "{inactivity: 18 months}")
    expire = run("points", "expire", "--dry-run", "--at", "2026-03-01T00:00:00Z")
    assert expire.exit_code == 0, expire.output
    assert ("warning: the point lots of 2 of the 2 members checked (A, B) do not follow program.points.expiry "
            f"(inactivity: 18 months): they were {advice}") in expire.stderr
    checked = run("check")
    assert checked.exit_code == 0, checked.output
    assert advice in checked.stderr
    assert run("points", "rebuild").exit_code == 0
    assert advice not in run("check").stderr
    rebuilt = run("points", "expire", "--dry-run", "--at", "2026-03-01T00:00:00Z")
    assert rebuilt.stderr == "" and "would expire 0 points of 0 members" in rebuilt.output
    (project / "config.yaml").write_text(TEST_CONFIG)   # expiry turned off: the lots kept are stale too
    assert "point lots are kept though program.points.expiry is not set" in run("check").stderr
    assert run("points", "rebuild").exit_code == 0 and "point lots are kept" not in run("check").stderr


def test_two_expiry_jobs_at_once_record_each_expiry_once_and_both_succeed(database_url: str, tmp_path: Path):
    """`points expire` by hand while the daemon's tick runs the job: the second waits for the
    first, then finds nothing left to expire (no duplicate event id, no error), on both databases."""
    import threading

    from loyalty_mail import db
    from loyalty_mail.importing import import_rows
    from loyalty_mail.points.expiry import expire_points, record_due

    settings, engine, at = _members_a_and_b(tmp_path, database_url)
    import_rows(engine, settings, "events", enumerate(
        [earn("A", "2025-01-10T10:00:00+07:00", 700), earn("B", "2025-02-10T10:00:00+07:00", 300)], 1),
        source="events", now=at)
    outcome: dict[str, object] = {}

    def second() -> None:
        try:
            outcome["report"] = expire_points(engine, settings, at)
        except Exception as exc:  # the failure this test is about: reported, not raised in the thread
            outcome["error"] = exc

    with db.writer(engine).connect() as connection:
        transaction = connection.begin()
        first = record_due(connection, settings, at)
        thread = threading.Thread(target=second)
        thread.start()
        thread.join(1.0)
        assert thread.is_alive()   # it waits for the first job's transaction
        transaction.commit()
    thread.join(30)
    assert not thread.is_alive()
    assert "error" not in outcome, outcome.get("error")
    assert (first.events, outcome["report"].events) == (2, 0)   # type: ignore[attr-defined]
    assert sorted((m, p) for m, _, p in expired(engine)) == [("A", -700), ("B", -300)]
    engine.dispose()

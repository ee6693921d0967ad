"""Flows: the planner at the edges (time pinned with freezegun), the ledger, the CLI, the daemon."""

from __future__ import annotations

import email
import email.policy
import json
import logging
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from loyalty_mail.cli import cli
from loyalty_mail.flows import in_holdout
from loyalty_mail.models import members_table, sends_table

from .flow_program import SECRET, member


def decoded_bodies(raw: bytes) -> str:
    """The text and HTML parts of a message, decoded (both may be base64 on the wire)."""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    return "".join(part.get_content() for part in message.walk() if part.get_content_maintype() == "text")

def decisions(plan: list[dict], flow: str | None = None) -> dict[tuple[str, str], dict]:
    return {(d["member_id"], d["occurrence"]): d for d in plan if flow is None or d["flow"] == flow}


# -- edges in time ---------------------------------------------------------------------------

@pytest.mark.parametrize(("joined_local", "deferred_until"), [
    ("2026-11-23T20:59:00+07:00", None),
    ("2026-11-23T21:00:00+07:00", "2026-11-24T08:00:00+07:00"),
])
def test_welcome_at_the_edge_of_quiet_hours(program, joined_local, deferred_until):
    program.load("members", [member("M1", joined_at=joined_local)], at=joined_local)
    plan = program.dry(joined_local, "welcome")
    [send] = [d for d in plan if d["decision"] == "send"]
    assert send["occurrence"] == "welcome" and send["member_id"] == "M1"
    expected = deferred_until or joined_local
    assert datetime.fromisoformat(send["scheduled_for"]) == datetime.fromisoformat(expected)
    assert (send["deferred"] is None) == (deferred_until is None)
    if deferred_until:
        assert send["deferred"] == "quiet hours until 08:00 local (Asia/Ho_Chi_Minh)"


def test_quiet_hours_that_would_hold_an_email_past_the_flows_lateness_skip_it_as_too_late(program):
    """A welcome with a lateness of 6 hours, due at 21:30 local: quiet hours would hold it until
    08:00, 10.5 hours later, so it is skipped as too late (recorded, and said by the dry run and
    explain); one due at 02:00 (6 hours before their end) still waits for 08:00."""
    config = program.dir / "config.yaml"
    config.write_text(config.read_text().replace("priority: 100, lateness: 2 days", "priority: 100, lateness: 6 hours"))
    program.load("members", [member("LATE", joined_at="2026-11-23T21:30:00+07:00"),
                             member("WAIT", joined_at="2026-11-24T02:00:00+07:00")], at="2026-11-24T02:00:00+07:00")
    plan = decisions(program.dry("2026-11-24T02:00:00+07:00", "welcome"))
    late, wait = plan[("LATE", "welcome")], plan[("WAIT", "welcome")]
    reason = ("too late: due 2026-11-23 21:30 +07, and quiet hours hold it until 2026-11-24 08:00 +07, "
              "more than 6 hours after (the flow's lateness)")
    assert (late["decision"], late["reason"], late["recorded_as"]) == ("skip", reason, "skipped")
    assert wait["decision"] == "send" and wait["deferred"] == "quiet hours until 08:00 local (Asia/Ho_Chi_Minh)"
    assert reason in program.run("explain", "LATE", at="2026-11-24T02:00:00+07:00").stdout
    assert program.run("run", "--once", at="2026-11-24T02:00:00+07:00").exit_code == 0
    engine = sa.create_engine(program.url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        recorded = {(r.member_id, r.state): r.reason for r in conn.execute(
            sa.select(members_table.c.member_id, sends_table.c.state, sends_table.c.reason)
            .join(members_table, members_table.c.id == sends_table.c.member_ref))}
    engine.dispose()
    assert recorded.get(("LATE", "skipped")) == reason and ("WAIT", "planned") in recorded


def test_one_purchase_crossing_two_thresholds_sends_only_the_highest(program):
    program.load("members", [member("M1", joined_at="2025-01-01T10:00:00+07:00")], at="2025-01-01T10:00:00+07:00")
    program.load("events", [{"member_id": "M1", "type": "purchase", "occurred_at": "2026-11-20T10:00:00+07:00",
                             "amount": 6_000_000, "currency": "VND", "event_id": "p1"}], at="2026-11-20T10:00:00+07:00")
    plan = decisions(program.dry("2026-11-20T11:00:00+07:00", "milestones"))
    assert plan[("M1", "points:5000")]["decision"] == "send"
    assert plan[("M1", "points:5000")]["reason"] == "crossed 5,000 points on 2026-11-20 10:00 +07"
    assert plan[("M1", "points:1000")]["decision"] == "skip"
    assert "superseded by points:5000" in plan[("M1", "points:1000")]["reason"]


def test_two_upgrades_in_one_day_give_one_email_and_the_cap_picks_the_higher_priority(program):
    program.load("members", [member("M1", joined_at="2025-01-01T10:00:00+07:00")], at="2025-01-01T10:00:00+07:00")
    program.load("events", [
        {"member_id": "M1", "type": "points_earned", "points": 1500, "occurred_at": "2026-11-20T09:00:00+07:00", "event_id": "e1"},
        {"member_id": "M1", "type": "points_earned", "points": 4000, "occurred_at": "2026-11-20T15:00:00+07:00", "event_id": "e2"},
    ], at="2026-11-20T15:00:00+07:00")
    plan = program.dry("2026-11-20T16:00:00+07:00")
    sends = [d for d in plan if d["decision"] == "send"]
    assert [(d["flow"], d["member_id"]) for d in sends] == [("tier_upgrade", "M1")]
    upgrades = [d for d in plan if d["flow"] == "tier_upgrade"]
    assert sorted(d["decision"] for d in upgrades) == ["send", "skip"]
    assert any("superseded" in d["reason"] for d in upgrades if d["decision"] == "skip")
    milestone = [d for d in plan if d["flow"] == "milestones"]
    assert milestone and all(d["decision"] == "skip" for d in milestone)
    assert any(d["reason"].startswith("frequency cap: 0 marketing emails") is False and
               d["reason"].startswith("frequency cap") for d in milestone)
    # The email names where the member started and where they are now.
    out = program.dir / "review"
    assert program.run("run", "--dry-run", "--flow", "tier_upgrade", "--out", str(out),
                       at="2026-11-20T16:00:00+07:00").exit_code == 0
    [html] = list(out.glob("tier_upgrade/*.html"))
    assert "Thành viên" in html.read_text() or "Member" in html.read_text() or "member" in html.read_text()


def test_anniversary_of_29_february(program):
    program.load("members", [member("M1", joined_at="2024-02-29T12:00:00+07:00")], at="2024-02-29T12:00:00+07:00")
    plan = decisions(program.dry("2026-02-28T09:00:00+07:00", "milestones"))
    assert plan[("M1", "anniversary:2026")]["decision"] == "send"
    assert "2-year membership anniversary on 2026-02-28" in plan[("M1", "anniversary:2026")]["reason"]
    assert ("M1", "anniversary:2026") not in decisions(program.dry("2026-02-27T09:00:00+07:00", "milestones"))
    leap = decisions(program.dry("2028-02-29T09:00:00+07:00", "milestones"))
    assert leap[("M1", "anniversary:2028")]["decision"] == "send"


def test_quiet_hours_across_a_dst_change(program):
    # New York springs forward at 02:00 on 8 March 2026: quiet hours end at 08:00 EDT = 12:00 UTC.
    program.load("members", [member("NY", "America/New_York", joined_at="2026-03-08T06:30:00Z")], at="2026-03-08T06:30:00Z")
    [send] = [d for d in program.dry("2026-03-08T06:30:00Z", "welcome") if d["decision"] == "send"]
    assert datetime.fromisoformat(send["scheduled_for"]) == datetime(2026, 3, 8, 12, 0, tzinfo=timezone.utc)


def test_members_in_utc_plus_7_and_utc_minus_5_at_the_same_instant(program):
    at = "2026-11-23T14:30:00Z"   # 21:30 in Ho Chi Minh City, 09:30 in New York
    program.load("members", [member("HCM", joined_at=at), member("NY", "America/New_York", joined_at=at)], at=at)
    plan = decisions(program.dry(at, "welcome"))
    hcm, ny = plan[("HCM", "welcome")], plan[("NY", "welcome")]
    assert datetime.fromisoformat(hcm["scheduled_for"]) == datetime(2026, 11, 24, 1, 0, tzinfo=timezone.utc)
    assert datetime.fromisoformat(ny["scheduled_for"]) == datetime(2026, 11, 23, 14, 30, tzinfo=timezone.utc)
    assert hcm["deferred"] and not ny["deferred"]


def test_reentry_after_the_cooldown_and_not_before(program):
    program.load("members", [member("M1", joined_at="2025-01-01T10:00:00+07:00",
                                    last_purchase_at="2026-01-01T10:00:00+07:00")], at="2026-01-01T10:00:00+07:00")
    first = "2026-06-01T10:00:00+07:00"
    assert program.run("run", "--once", "--flow", "winback", at=first).exit_code == 0
    assert program.sends() == [("winback", "segment:lapsed:1", "sent")]
    day = timedelta(days=1)
    start = datetime.fromisoformat(first)
    for days, expected in ((10, None), (29, None), (31, "segment:lapsed:2"), (70, None)):
        at = (start + days * day).isoformat()
        plan = [d for d in program.dry(at, "winback") if d["decision"] == "send"]
        assert [d["occurrence"] for d in plan] == ([expected] if expected else []), days
        if expected:
            assert program.run("run", "--once", "--flow", "winback", at=at).exit_code == 0
    assert program.sends() == [("winback", "segment:lapsed:1", "sent"), ("winback", "segment:lapsed:2", "sent")]


def test_holdout_is_deterministic_and_near_its_percentage():
    ids = [f"SV{n:06d}" for n in range(20000)]
    held = [i for i in ids if in_holdout("winback", i, 10)]
    assert 0.09 < len(held) / len(ids) < 0.11
    assert held == [i for i in ids if in_holdout("winback", i, 10)]
    assert held != [i for i in ids if in_holdout("other_flow", i, 10)]
    assert not any(in_holdout("winback", i, 0) for i in ids[:1000])


# -- the ledger: never twice ------------------------------------------------------------------

def test_run_once_twice_at_the_same_instant_sends_nothing_twice(program):
    at = "2026-11-23T10:00:00+07:00"
    program.load("members", [member(f"M{n}", joined_at="2026-11-23T09:00:00+07:00") for n in range(5)]
                 + [member("UNSUB", joined_at="2026-11-23T09:00:00+07:00", subscribed=False)], at=at)
    assert program.run("run", "--dry-run", at=at).exit_code == 0
    assert program.sends() == []                                   # the dry run recorded nothing
    first = program.run("run", "--once", "--format", "json", at=at)
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert report["delivered"] == 5 and report["failed"] == 0
    assert report["recorded"] == {"planned": 5, "suppressed": 1, "inserted": 6}   # rows new to the ledger
    outbox = sorted((program.dir / "outbox").glob("*.eml"))
    assert len(outbox) == 5
    second = program.run("run", "--once", at=at)
    assert "delivered 0, failed 0" in second.stdout
    assert sorted((program.dir / "outbox").glob("*.eml")) == outbox
    states = program.sends()
    assert states.count(("welcome", "welcome", "sent")) == 5
    assert ("welcome", "welcome", "suppressed") in states


def test_dry_run_json_and_preview_folder(program, tmp_path):
    at = "2026-11-23T10:00:00+07:00"
    program.load("members", [member("M1", joined_at="2026-11-23T09:00:00+07:00")], at=at)
    plan = program.dry(at)
    [send] = [d for d in plan if d["decision"] == "send"]
    assert {"flow", "member_id", "email", "template", "occurrence", "scheduled_for", "reason"} <= set(send)
    out = tmp_path / "review"
    written = program.run("run", "--dry-run", "--out", str(out), at=at)
    assert written.exit_code == 0 and f"wrote 1 email to {out}\n" in written.stderr
    eml = (out / "welcome" / "M1-welcome.eml").read_bytes()
    assert "/c/" not in decoded_bodies(eml) and "https://" in decoded_bodies(eml) and b"Subject:" in eml
    assert program.sends() == []


def test_explain_says_why(program):
    program.load("members", [member("M1", joined_at="2026-11-23T09:00:00+07:00", subscribed=False),
                             member("M2", joined_at="2026-10-01T09:00:00+07:00")], at="2026-11-23T10:00:00+07:00")
    one = program.run("explain", "M1", at="2026-11-23T10:00:00+07:00")
    assert one.exit_code == 0
    assert "not sent welcome: unsubscribed" in one.stdout
    two = program.run("explain", "M2", at="2026-11-23T10:00:00+07:00")
    assert ("welcome (welcome -> welcome):\n  joined 2026-10-01 09:00 +07, outside the flow's window, "
            "2026-11-14 10:00 +07 to 2026-11-23 10:00 +07\n") in two.stdout
    missing = program.run("explain", "NOPE")
    assert missing.exit_code == 1 and "no member with id 'NOPE'" in missing.stderr


def test_run_needs_a_mode_and_the_secret(program):
    neither = program.run("run")
    assert neither.exit_code == 1 and "say --dry-run (show what would be sent) or --once" in neither.stderr
    result = CliRunner(env={"LOYALTY_MAIL_SECRET": ""}).invoke(
        cli, ["--project", str(program.dir), "--database", program.url, "run", "--once"])
    assert result.exit_code == 1 and "LOYALTY_MAIL_SECRET" in result.stderr


# -- the daemon, as a real process ------------------------------------------------------------

@pytest.mark.slow
def test_daemon_ticks_sends_and_stops_cleanly_on_sigterm(program):
    now = datetime.now(timezone.utc)
    config = (program.dir / "config.yaml").read_text().replace(
        'quiet_hours: {start: "21:00", end: "08:00"}', "quiet_hours: null")
    (program.dir / "config.yaml").write_text(config)
    program.load("members", [member(f"D{n}", joined_at=(now - timedelta(hours=1)).isoformat())
                             for n in range(30)], at=now.isoformat())
    env = {**os.environ, "LOYALTY_MAIL_SECRET": SECRET}
    command = [sys.executable, "-m", "loyalty_mail", "--project", str(program.dir), "--database",
               program.url, "daemon", "--interval", "0.5"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outbox = program.dir / "outbox"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(outbox.glob("*.eml"))) < 30:
        time.sleep(0.2)
    time.sleep(1.2)  # a few more ticks, which must find nothing new
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "SIGTERM received" in stderr and "daemon stopped after" in stderr
    assert len(list(outbox.glob("*.eml"))) == 30
    assert program.sends().count(("welcome", "welcome", "sent")) == 30
    # A restart ticks again and sends nothing twice.
    restart = subprocess.run(command + ["--max-ticks", "2"], env=env, capture_output=True, text=True, timeout=60)
    assert restart.returncode == 0, restart.stderr
    assert len(list(outbox.glob("*.eml"))) == 30


def test_dispatcher_processes_drain_the_outbox_without_overlap(program):
    config = (program.dir / "config.yaml").read_text().replace(
        "sending:\n  directory: outbox\n", "sending:\n  directory: outbox\n  dispatchers: 3\n  batch_size: 2\n")
    (program.dir / "config.yaml").write_text(config)
    at = "2026-11-23T10:00:00+07:00"
    program.load("members", [member(f"W{n}", joined_at="2026-11-23T09:00:00+07:00") for n in range(7)], at=at)
    result = program.run("run", "--once", at=at)
    assert "delivered 7, failed 0" in result.stdout, result.output
    files = sorted((program.dir / "outbox").glob("*.eml"))
    assert len(files) == 7
    sent_ids = {f.stem for f in files}
    assert program.sends().count(("welcome", "welcome", "sent")) == 7
    assert all("/c/" in decoded_bodies(f.read_bytes()) for f in files) and len(sent_ids) == 7


def test_streamed_planning_in_small_chunks_decides_and_records_like_one_pass(program, monkeypatch, tmp_path):
    """Members are planned a chunk at a time and each chunk is recorded before the next is read.
    With chunks of 4 occurrences among 30 members holding up to 3 occurrences each, every decision
    (including the frequency cap, decided per member) matches planning all at once, and the ledger
    holds exactly those decisions."""
    import sqlalchemy as sa

    from loyalty_mail.flows import Plan, Planner, run_once
    from loyalty_mail.models import members_table, sends_table
    from loyalty_mail.runtime import Runtime
    from loyalty_mail.segments import load_catalog
    from loyalty_mail.transports import DirectoryTransport

    at = "2026-11-20T16:00:00+07:00"
    program.load("members", [member(f"C{n:02d}", joined_at="2026-11-20T13:00:00+07:00" if n % 3 == 0
                                    else "2025-01-01T10:00:00+07:00") for n in range(30)], at=at)
    program.load("events", [{"member_id": f"C{n:02d}", "type": "points_earned", "points": 1500 if n % 2 else 6000,
                             "occurred_at": "2026-11-20T15:00:00+07:00", "event_id": f"e{n}"}
                            for n in range(30) if n % 5], at=at)
    monkeypatch.setenv("LOYALTY_MAIL_SECRET", SECRET)
    now = datetime.fromisoformat(at)
    runtime = Runtime.load(program.dir, database_url=program.url, clock=lambda: now)
    engine = runtime.engine()
    catalog, _ = load_catalog(runtime.settings)

    def decisions(plan: Plan) -> set[tuple[str, str, str, str | None]]:
        return ({(s.occurrence.member_id, s.occurrence.flow.name, s.occurrence.key, "send") for s in plan.sends}
                | {(s.occurrence.member_id, s.occurrence.flow.name, s.occurrence.key, s.record_as)
                   for s in plan.skips})

    small = Planner(runtime.settings, catalog, engine.dialect.name, chunk_size=4)
    whole = decisions(Planner(runtime.settings, catalog, engine.dialect.name, chunk_size=10_000).plan_in(engine, now))
    parts: list[int] = []
    streamed = small.plan_in(engine, now, on_part=lambda part: parts.append(len(part.sends) + len(part.skips)))
    assert decisions(streamed) == whole and len(parts) > 5
    with engine.connect() as conn:   # a caller's connection keeps its options (no streaming left on)
        assert decisions(small.plan(conn, now)) == whole
        assert "stream_results" not in conn.get_execution_options()
    sent = {d[:2] for d in whole if d[3] == "send"}
    assert ("C01", "tier_upgrade") in sent and ("C01", "milestones") not in sent   # the cap, per member
    assert ("C00", "welcome") in sent and len(sent) == 10 + 24                     # 10 welcomes, 24 upgrades

    report = run_once(engine, small, runtime.renderer(), DirectoryTransport(tmp_path / "out"), now)
    with engine.connect() as conn:
        ledger = set(conn.execute(sa.select(members_table.c.member_id, sends_table.c.flow,
                                            sends_table.c.occurrence_key, sends_table.c.state)
                                  .join(members_table, members_table.c.id == sends_table.c.member_ref)).all())
    runtime.close()
    assert {(m, f, k, "sent") for m, f, k, d in whole if d == "send"} == {row for row in ledger if row[3] == "sent"}
    assert {(m, f, k, d) for m, f, k, d in whole if d not in ("send", None)} == {r for r in ledger if r[3] != "sent"}
    assert report.delivered == len(sent) and not report.plan.sends   # the tick kept counts only
    assert report.plan.total("planned") == len(sent)


@pytest.mark.slow
def test_a_flow_with_a_schedule_is_planned_on_its_schedule_only(program):
    """welcome gets `schedule: "0 0 1 1 *"` (midnight on 1 January, program time): the daemon's
    interval ticks do not plan it; run --dry-run and run --once (an operator's explicit run) do."""
    now = datetime.now(timezone.utc)
    config = (program.dir / "config.yaml").read_text().replace(
        "priority: 100, lateness: 2 days,", 'priority: 100, lateness: 2 days, schedule: "0 0 1 1 *",')
    (program.dir / "config.yaml").write_text(config)
    program.load("members", [member("S1", joined_at=(now - timedelta(hours=1)).isoformat(), timezone="UTC")],
                 at=now.isoformat())
    env = {**os.environ, "LOYALTY_MAIL_SECRET": SECRET}
    daemon = subprocess.run([sys.executable, "-m", "loyalty_mail", "--project", str(program.dir), "--database",
                             program.url, "daemon", "--interval", "0.2", "--max-ticks", "3"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert daemon.returncode == 0, daemon.stderr
    assert "flow welcome is planned on its schedule (cron[month='1', day='1', day_of_week='*', hour='0', " \
           "minute='0'])" in daemon.stderr
    assert program.sends() == []
    decisions = program.dry(now.isoformat())
    assert [(d["flow"], d["decision"]) for d in decisions] == [("welcome", "send")]


def test_run_daemon_runs_interval_ticks_and_each_schedule():
    from apscheduler.triggers.date import DateTrigger

    from loyalty_mail.flows.scheduler import flow_schedules, run_daemon

    calls: list[list[str] | None] = []
    deadline = time.monotonic() + 60

    def tick(_stop, flows: list[str] | None) -> None:
        calls.append(flows)
        if (["winback"] in calls and calls.count(None) >= 3) or time.monotonic() > deadline:
            os.kill(os.getpid(), signal.SIGTERM)   # as a process manager stops the daemon

    soon = DateTrigger(datetime.now(timezone.utc) + timedelta(seconds=0.3))
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        ticks = run_daemon(tick, 0.2, schedules={"winback": soon})
    finally:
        signal.signal(signal.SIGTERM, handlers[0])
        signal.signal(signal.SIGINT, handlers[1])
    assert calls.count(["winback"]) == 1 and calls.count(None) >= 3, calls
    assert ticks == len(calls)
    [trigger] = flow_schedules({"winback": "0 10 * * *", "welcome": None}, "Asia/Ho_Chi_Minh").values()
    after = datetime(2026, 11, 23, 0, 0, tzinfo=timezone.utc)
    assert trigger.get_next_fire_time(None, after) == datetime(2026, 11, 23, 3, 0, tzinfo=timezone.utc)


def test_a_bad_schedule_names_the_file_and_line(program):
    config = (program.dir / "config.yaml").read_text().replace(
        "priority: 100, lateness: 2 days,", 'priority: 100, lateness: 2 days, schedule: "every day",')
    (program.dir / "config.yaml").write_text(config)
    result = program.run("check")
    assert result.exit_code == 1
    assert "config.yaml:" in result.stderr and "'every day' is not a crontab schedule" in result.stderr


def test_sigterm_during_a_long_tick_lets_it_finish_and_stops_cleanly(caplog):
    import threading

    from loyalty_mail.flows.scheduler import run_daemon

    finished: list[bool] = []

    def long_tick(should_stop, _flows):
        threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM)).start()  # after a few intervals
        deadline = time.monotonic() + 10
        while not should_stop() and time.monotonic() < deadline:  # the batch in hand
            time.sleep(0.05)
        time.sleep(1.2)  # longer than the interval: the scheduler's next run time passes meanwhile
        finished.append(should_stop())

    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        with caplog.at_level(logging.INFO):
            ticks = run_daemon(long_tick, 0.3)
        restored = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGTERM, handlers[0])
        signal.signal(signal.SIGINT, handlers[1])
    assert restored == handlers  # the caller's handlers are back once the daemon has stopped
    assert (ticks, finished) == (1, [True])
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert "maximum number of running instances" not in caplog.text  # skipped intervals are expected
    assert "daemon stopped after 1 tick(s)" in caplog.text

"""Journeys: multi-step flows over simulated days through the CLI, on both databases. Entering,
waiting, branching on engagement, waiting for an event, timing out, exiting on a purchase mid-wait,
quiet hours and a DST change inside a wait, recording twice (a crash at the ledger boundary), and
an edit while members are in flight."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from loyalty_mail.models import members_table, sends_table, tracking_events_table

from .conftest import CONFIG_ONLY
from .flow_program import SECRET, Program, member
from .journey_program import (JOINED, SERIES, TIMING, buy_and_tick, check, engine_of, event_journey, explain,
                              journey, once, sends, steps)

def test_a_member_goes_through_the_series_and_times_out_waiting_for_a_purchase(program):
    journey(program)
    program.load("members", [member("M1", joined_at=JOINED)], at=JOINED)
    once(program, "2026-11-20T10:05:00+07:00")
    assert sends(program) == [("welcome/welcome", "welcome", "sent")]
    assert steps(program) == [("welcome", "planned"), ("wait_3_days", "waiting")]
    # Nothing is due during the wait; explain and the dry run say where the member is.
    once(program, "2026-11-22T10:00:00+07:00")
    assert len(sends(program)) == 1
    assert ("in welcome_series at step 2 (wait 3 days, until 2026-11-23 10:05 +07)"
            in explain(program, "M1", "2026-11-22T10:00:00+07:00"))
    dry = program.run("run", "--dry-run", at="2026-11-22T10:00:00+07:00")
    assert "welcome_series" in dry.output and "2 (wait 3 days)" in dry.output, dry.output
    # The wait ends: no open, so the else branch; then waiting for a purchase.
    once(program, "2026-11-23T10:10:00+07:00")
    assert sends(program)[1:] == [("welcome/welcome_reminder", "welcome_reminder", "sent")]
    assert steps(program)[2:] == [("branch_" + steps(program)[2][0][7:], "else"),
                                  ("welcome_reminder", "planned"), ("wait_until_purchase", "waiting")]
    assert ("in welcome_series at step 6 (wait_until purchase, times out 2026-11-30 10:10 +07)"
            in explain(program, "M1", "2026-11-25T10:00:00+07:00"))
    once(program, "2026-11-30T10:09:00+07:00")
    assert len(sends(program)) == 2
    once(program, "2026-11-30T10:15:00+07:00")
    assert sends(program)[2:] == [("welcome/first_purchase_nudge", "first_purchase_nudge", "sent")]
    assert steps(program)[-2:] == [("first_purchase_nudge", "planned"), ("$end", "completed")]
    once(program, "2026-12-05T10:15:00+07:00")
    assert len(sends(program)) == 3


def test_an_open_takes_the_then_branch_and_a_purchase_ends_the_wait_early(program):
    journey(program, SERIES.replace("    exit_when: {purchases: {count: {gte: 1}}}\n", "").replace(
        "flow: welcome_series}", "flow: welcome_series, step: welcome}"))
    program.load("members", [member("M1", joined_at=JOINED)], at=JOINED)
    once(program, "2026-11-20T10:05:00+07:00")
    engine = engine_of(program)
    with engine.begin() as conn:
        send_id = conn.execute(sa.select(sends_table.c.send_id)).scalar_one()
        conn.execute(tracking_events_table.insert().values(
            send_id=send_id, kind="open", source="tracker", occurred_at=sa.func.now(), machine=False,
            bot=False, detail={}))
        conn.execute(tracking_events_table.update().values(
            occurred_at=conn.execute(sa.select(sends_table.c.sent_at)).scalar_one()))
    engine.dispose()
    once(program, "2026-11-23T10:10:00+07:00")
    assert [s[0] for s in sends(program)] == ["welcome/welcome", "welcome/welcome_perks"]
    program.load("events", [{"member_id": "M1", "type": "purchase", "occurred_at": "2026-11-24T12:00:00+07:00",
                             "amount": 200000, "currency": "VND", "event_id": "p1"}],
                 at="2026-11-24T12:00:00+07:00")
    once(program, "2026-11-24T12:05:00+07:00")
    assert steps(program)[-1] == ("$end", "completed")
    once(program, "2026-12-05T10:15:00+07:00")
    assert [s[0] for s in sends(program)] == ["welcome/welcome", "welcome/welcome_perks"]


def test_a_purchase_mid_wait_exits_the_journey(program):
    journey(program)
    program.load("members", [member("M1", joined_at=JOINED), member("M2", joined_at=JOINED)], at=JOINED)
    once(program, "2026-11-20T10:05:00+07:00")
    program.load("events", [{"member_id": "M1", "type": "purchase", "occurred_at": "2026-11-21T12:00:00+07:00",
                             "amount": 200000, "currency": "VND", "event_id": "p1"}],
                 at="2026-11-21T12:00:00+07:00")
    once(program, "2026-11-21T12:05:00+07:00")
    assert "in welcome_series" not in explain(program, "M1", "2026-11-22T10:00:00+07:00")
    assert "in welcome_series at step 2" in explain(program, "M2", "2026-11-22T10:00:00+07:00")
    once(program, "2026-11-23T10:10:00+07:00")
    once(program, "2026-12-01T10:10:00+07:00")
    keys = [(k, t) for k, t, _ in sends(program)]
    assert keys.count(("welcome/welcome", "welcome")) == 2
    assert keys.count(("welcome/welcome_reminder", "welcome_reminder")) == 1   # M2 only
    assert ("$exit", "exited") in steps(program)


def test_quiet_hours_and_a_dst_change_inside_waits(program):
    journey(program, TIMING)
    joined = "2026-10-30T10:00:00-04:00"   # New York, EDT; clocks go back on 1 November
    program.load("members", [member("NY", zone="America/New_York", joined_at=joined)], at=joined)
    once(program, "2026-10-30T10:00:00-04:00")
    # Three days later at 10:00 local, now EST: 15:00 UTC, not 14:00.
    plan = program.dry("2026-11-02T14:30:00+00:00")
    assert not [d for d in plan if d["decision"] == "send"]
    assert ("until 2026-11-02 10:00 EST"
            in explain(program, "NY", "2026-11-02T14:30:00+00:00"))
    once(program, "2026-11-02T15:00:00+00:00")
    assert [s[1] for s in sends(program)] == ["welcome", "welcome_reminder"]
    # 12 hours later is 22:00 local, inside quiet hours: planned for 08:00 local (13:00 UTC).
    plan = program.dry("2026-11-03T03:05:00+00:00")
    due = [d for d in plan if d["decision"] == "send"]
    assert [(d["template"], datetime.fromisoformat(d["scheduled_for"])) for d in due] == [
        ("first_purchase_nudge", datetime(2026, 11, 3, 13, 0, tzinfo=timezone.utc))]
    assert due[0]["deferred"] == "quiet hours until 08:00 local (America/New_York)"


def test_recording_a_plan_twice_or_after_a_crash_neither_repeats_nor_skips_a_step(program):
    from loyalty_mail.flows import ledger
    from loyalty_mail.flows.runner import build_planner
    from loyalty_mail.runtime import Runtime

    journey(program, TIMING)
    program.load("members", [member("M1", joined_at=JOINED)], at=JOINED)
    runtime = Runtime.load(program.dir, database_url=program.url)
    engine = runtime.engine()
    planner = build_planner(runtime.settings, engine.dialect.name)
    first = datetime.fromisoformat("2026-11-20T10:05:00+07:00")
    plan = planner.plan_in(engine, first)
    # Two planners (or one restarted after recording, before delivering) record the same plan.
    ledger.record(engine, plan, first)
    ledger.record(engine, plan, first)
    assert [s[0] for s in sends(program)] == ["welcome/welcome"]
    # Re-planned at the same instant from what was recorded: nothing new, nothing lost.
    again = planner.plan_in(engine, first)
    assert not again.sends and not again.steps
    # A crash inside the transaction that records the next step leaves no trace of it.
    later = datetime.fromisoformat("2026-11-23T10:06:00+07:00")
    plan = planner.plan_in(engine, later)
    assert [s.occurrence.key for s in plan.sends] == ["welcome/welcome_reminder"]
    with engine.begin() as conn:
        conn.execute(sends_table.insert(), [{**ledger._row(s.occurrence, "planned", s.reason, s.scheduled_for,
                                                           None, later)} for s in plan.sends])
        conn.rollback()
    assert [s[0] for s in sends(program)] == ["welcome/welcome"]
    ledger.record(engine, planner.plan_in(engine, later), later)
    once(program, "2026-11-23T10:07:00+07:00")
    assert [(s[0], s[2]) for s in sends(program)] == [("welcome/welcome", "sent"),
                                                      ("welcome/welcome_reminder", "sent")]
    engine.dispose()


def test_check_tells_of_an_edit_that_removes_the_step_members_wait_at_and_they_exit(program):
    journey(program)
    program.load("members", [member("M1", joined_at=JOINED), member("M2", joined_at=JOINED)], at=JOINED)
    once(program, "2026-11-20T10:05:00+07:00")
    config = program.dir / "config.yaml"
    config.write_text(config.read_text().replace("      - wait: 3 days\n", "      - wait: 2 days\n"))
    assert ("journey welcome_series: 2 members are at step wait_3_days, which this edit removes: "
            "they will exit") in check(program, exit_code=0, at="2026-11-21T10:00:00+07:00")
    once(program, "2026-11-21T10:05:00+07:00")
    assert steps(program)[-2:] == [("$exit", "exited")] * 2
    once(program, "2026-11-30T10:05:00+07:00")
    assert len(sends(program)) == 2
    # The report's funnel: they left because the step was removed, which comes after the steps now.
    result = program.run("report", "--format", "json", at="2026-11-30T12:00:00+07:00")
    (funnel,) = json.loads(result.stdout)["journeys"]
    assert [(s["number"], s["step"], s["reached"]) for s in funnel["steps"]][:2] == [(1, "welcome", 2),
                                                                                    (2, "wait_2_days", 0)]
    assert funnel["steps"][-1] == {"number": None, "step": "wait_3_days", "what": "(no longer in the journey)",
                                   "reached": 2}
    assert funnel["entered"] == 2 and funnel["exits"]["step_removed"] == 2 and funnel["exits"]["in_progress"] == 0


def test_check_warns_of_members_at_a_step_whose_derived_id_depends_on_its_place(program):
    journey(program, """\
  - name: twice
    trigger: welcome
    steps:
      - send: welcome
      - wait: 1 day
      - send: welcome_reminder
      - wait: 1 day
      - send: welcome_perks
""")
    program.load("members", [member("M1", joined_at=JOINED)], at=JOINED)
    once(program, "2026-11-20T10:05:00+07:00")
    once(program, "2026-11-21T10:05:00+07:00")
    assert ("journey twice: 1 member is at step wait_1_days_2, whose id is derived from its content and its "
            "place among like steps") in check(program, exit_code=0, at="2026-11-21T12:00:00+07:00")


def test_journey_mistakes_come_with_their_line(program):
    journey(program, """\
  - name: broken
    trigger: welcome
    steps:
      - send: welcome
      - wait: soon
      - branch: {if: {tier: {at_least: diamond}}, then: [{send: welcome}]}
      - jump: somewhere
""")
    written = (program.dir / "config.yaml").read_text().splitlines()

    def line(text: str) -> int:
        return next(i for i, row in enumerate(written, 1) if text in row)

    output = check(program, exit_code=1)
    assert f"config.yaml:{line('wait: soon')}:15: flow 'broken': wait: expected a duration" in output
    assert f"config.yaml:{line('diamond')}:40: field 'tier': at_least: unknown tier 'diamond'" in output
    assert (f"config.yaml:{line('jump:')}:9: flow 'broken': a step has exactly one of send, wait, "
            "wait_until, branch (found jump)") in output
    assert "Traceback" not in output


@pytest.mark.parametrize(("steps", "extra", "error"), [
    ("[{id: welcome_2, send: welcome_perks}, {send: welcome}, {send: welcome}]", "",
     "step id 'welcome_2' is both given explicitly and derived from another step"),
    ("[{send: welcome}, {wait: 1 day}, {send: welcome_reminder}]",
     "    variants: [{name: a, template: welcome}, {name: b, template: welcome_perks}]\n",
     "a journey tests each email on its own: put `variants:` (and `winner:`) on the send step"),
    ("[{send: welcome}, {branch: {if: {emails: {action: opened, flow: clashing, step: welcom}}, "
     "then: [{send: welcome_perks}]}}]", "",
     "flow 'clashing': emails: step: 'welcom' is not a step of 'clashing' (did you mean 'welcome'? steps: branch_"),
    ("[{send: welcome}, {branch: {if: {emails: {action: opened, flow: nosuchflow}}, "
     "then: [{send: welcome_perks}]}}]", "",
     "flow 'clashing': emails: flow: no flow 'nosuchflow'"),
])
@CONFIG_ONLY
def test_a_journey_refuses_clashing_ids_variants_and_unknown_email_steps(program, steps, extra, error):
    output = check(program, f"  - name: clashing\n    trigger: welcome\n    steps: {steps}\n{extra}", exit_code=1)
    assert error in output, output


@CONFIG_ONLY
def test_an_unknown_step_in_a_branch_is_refused_at_its_line_and_column(program):
    journey(program, """\
  - name: clashing
    trigger: welcome
    steps:
      - send: welcome
      - branch:
          if: {emails: {action: opened, flow: clashing, step: welcom}}
          then: [{send: welcome_perks}]
      - branch:
          if: {emails: {action: opened, flow: clashin}}
          then: [{send: welcome_reminder}]
""")
    written = (program.dir / "config.yaml").read_text().splitlines()
    step_line = next(i for i, row in enumerate(written, 1) if "step: welcom}" in row)
    flow_line = next(i for i, row in enumerate(written, 1) if "flow: clashin}" in row)
    output = check(program, exit_code=1)
    assert (f"config.yaml:{step_line}:{written[step_line - 1].index('welcom}') + 1}: flow 'clashing': emails: "
            "step: 'welcom' is not a step of 'clashing' (did you mean 'welcome'? steps: branch_") in output
    assert ", welcome, welcome_perks, welcome_reminder; a step without an id: is named after its content" in output
    assert (f"config.yaml:{flow_line}:{written[flow_line - 1].index('clashin}') + 1}: flow 'clashing': emails: "
            "flow: no flow 'clashin' (did you mean 'clashing'? flows: ") in output
    assert "Traceback" not in output


def test_the_series_by_flow_and_step(program):
    journey(program)
    program.load("members", [member("M1", joined_at=JOINED)], at=JOINED)
    once(program, "2026-11-20T10:05:00+07:00")
    once(program, "2026-11-23T10:10:00+07:00")
    result = program.run("report", "--by", "flow,step", "--format", "json", "--since", "2026-11-01",
                         "--until", "2026-12-01", at="2026-11-24T10:00:00+07:00")
    assert result.exit_code == 0, result.output
    rows = {(r["flow"], r["step"]): r for r in json.loads(result.stdout)["rows"]}
    assert rows[("welcome_series", "welcome")]["sent"] == 1
    assert rows[("welcome_series", "welcome_reminder")]["sent"] == 1


QUICK = """\
  - name: quick
    trigger: welcome
    frequency_cap: false
    quiet_hours: false
    steps:
      - send: welcome
      - wait: 2 seconds
      - send: welcome_reminder
      - wait: 2 seconds
      - send: first_purchase_nudge
"""


@pytest.mark.slow
def test_killing_the_planning_daemon_between_steps_neither_repeats_nor_skips_one(program, tmp_path):
    """Two real daemons on one database (SQLite, then PostgreSQL) and a real SMTP server; the one
    planning (holding the file lock, or the advisory lock) is killed with SIGKILL while members are
    between steps; the other takes over and every member gets each of the three emails once."""
    from .test_delivery import SmtpSink, start_sink

    members = 150
    program = journey(program, QUICK)
    sink = SmtpSink()
    controller = start_sink(sink)
    config = (program.dir / "config.yaml").read_text().replace(
        'quiet_hours: {start: "21:00", end: "08:00"}',
        f"quiet_hours: null\n  transport: smtp\n  smtp: {{host: 127.0.0.1, port: {sink.port}, security: none}}\n"
        "  batch_size: 20\n  lease: 3 seconds")
    (program.dir / "config.yaml").write_text(config)
    joined = (datetime.now(timezone.utc) - timedelta(hours=1)).isoformat()
    program.load("members", [{"member_id": f"Q{n:04d}", "email": f"q{n}@example.com", "timezone": "UTC",
                              "joined_at": joined} for n in range(members)], at=None)
    env = {**os.environ, "LOYALTY_MAIL_SECRET": SECRET}
    base = [sys.executable, "-m", "loyalty_mail", "--project", str(program.dir), "--database", program.url]
    logs = [(tmp_path / f"daemon{n}.log").open("w") for n in range(2)]
    daemons = [subprocess.Popen(base + ["daemon", "--interval", "0.5"], env=env, stdout=subprocess.DEVNULL,
                                stderr=logs[n]) for n in range(2)]
    try:
        deadline = time.monotonic() + 60
        while len(sink.messages) < members + 20:    # all welcomes, and some reminders: mid-journey
            assert time.monotonic() < deadline, f"{len(sink.messages)} messages in 60 s"
            time.sleep(0.05)
        for daemon in daemons:       # the planner: the one holding the lock (the first, most likely)
            daemon.send_signal(signal.SIGKILL)
            break
        deadline = time.monotonic() + 120
        while sum(1 for step, _ in steps(program) if step == "$end") < members:
            assert time.monotonic() < deadline, f"not done in 120 s: {len(sink.messages)} messages"
            time.sleep(0.5)
        while {s[2] for s in sends(program)} & {"planned", "sending", "retry"}:
            assert time.monotonic() < deadline, "deliveries still pending after 120 s"
            time.sleep(0.5)
    finally:
        for daemon in daemons:
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
        for daemon in daemons:
            daemon.wait(timeout=60)
        for log in logs:
            log.close()
        controller.stop()
    rows = sends(program)
    assert len(rows) == 3 * members                          # no step skipped (and none twice: unique)
    assert sorted({key for key, _, _ in rows}) == ["welcome/first_purchase_nudge", "welcome/welcome",
                                                   "welcome/welcome_reminder"]
    received = sink.send_ids()
    assert len(received) == len(set(received))               # no email delivered twice
    unknown = [r for r in rows if r[2] == "unknown"]         # in the killed process's hands, if it was delivering
    assert {r[2] for r in rows} <= {"sent", "unknown"} and len(unknown) <= 8
    assert len(received) >= 3 * members - len(unknown)


WINBACK = """\
  - name: comeback
    trigger: reengagement
    segment: lapsed
    frequency_cap: false
    reentry: {max: 2, cooldown: 30 days}
    exit_when: {days_since_last_purchase: {lt: 90}}
    steps:
      - send: reengagement
      - wait: 3 days
      - wait: {until: "10:00"}
      - send: winback_last_chance
"""


def test_a_segment_entry_journey_enters_once_per_entry_and_a_purchase_ends_it(program):
    journey(program, WINBACK)
    bought = "2026-07-01T12:00:00+07:00"
    program.load("members", [member("L1", joined_at="2025-01-01T10:00:00+07:00"),
                             member("L2", joined_at="2025-01-01T10:00:00+07:00")], at=bought)
    program.load("events", [{"member_id": m, "type": "purchase", "occurred_at": bought, "amount": 100000,
                             "currency": "VND", "event_id": f"old-{m}"} for m in ("L1", "L2")], at=bought)
    once(program, "2026-11-20T14:00:00+07:00")
    assert sorted(k for k, _, _ in sends(program)) == ["segment:lapsed:1/reengagement"] * 2
    # L2 buys: exit_when holds, L2 leaves; L1 waits 3 days, then until 10:00 local, then the last chance.
    program.load("events", [{"member_id": "L2", "type": "purchase", "occurred_at": "2026-11-21T09:00:00+07:00",
                             "amount": 100000, "currency": "VND", "event_id": "new-L2"}],
                 at="2026-11-21T09:00:00+07:00")
    once(program, "2026-11-21T09:05:00+07:00")
    assert ("in comeback at step 3 (wait until 10:00, until 2026-11-24 10:00 +07)"
            in explain(program, "L1", "2026-11-23T15:00:00+07:00"))
    once(program, "2026-11-24T09:59:00+07:00")
    assert len(sends(program)) == 2
    once(program, "2026-11-24T10:00:00+07:00")
    assert sorted(k for k, _, _ in sends(program)) == ["segment:lapsed:1/reengagement"] * 2 + [
        "segment:lapsed:1/winback_last_chance"]
    # Still lapsed, but within the cooldown after the journey's last step: no second entry yet.
    once(program, "2026-12-05T10:00:00+07:00")
    assert len(sends(program)) == 3


def test_later_steps_of_an_event_journey_still_see_the_event(program):
    journey(program, event_journey("      - send: points_receipt\n      - wait: 1 day\n"
                                   "      - {id: reminder, send: points_receipt}\n"))
    buy_and_tick(program)
    engine = engine_of(program)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(sends_table.c.occurrence_key, sends_table.c.state, sends_table.c.occurrence)
                            .order_by(sends_table.c.id)).all()
    engine.dispose()
    assert [(r.occurrence_key.split("/")[1], r.state) for r in rows] == [("points_receipt", "sent"), ("reminder", "sent")]
    # The reminder is decided a day later, from journey_steps: the event comes from the first email.
    assert rows[1].occurrence["event"] == rows[0].occurrence["event"]
    assert rows[1].occurrence["event"]["id"] == "big" and rows[1].occurrence["key"].endswith("/reminder")


def _ids(flow: str, percent: int) -> tuple[list[str], str]:
    """Five member ids outside the flow's hold-out group and one inside it."""
    from loyalty_mail.flows.planner import in_holdout

    candidates = [f"M{n}" for n in range(1, 200)]
    held = next(c for c in candidates if in_holdout(flow, c, percent))
    return [c for c in candidates if not in_holdout(flow, c, percent)][:5], held


def _purchase(program: Program, member_id: str, at: str, event_id: str) -> None:
    program.load("events", [{"member_id": member_id, "type": "purchase", "occurred_at": at, "amount": 200000,
                             "currency": "VND", "event_id": event_id}], at=at)


def _funnel_program(program: Program) -> tuple[list[str], str]:
    """The worked example of the funnel, on simulated days (see the test below for the story)."""
    journey(program, SERIES.replace("    priority: 90\n", "    priority: 90\n    holdout: 50\n"))
    (a, b, c, d, e), h = _ids("welcome_series", 50)
    program.load("members", [member(m, joined_at=JOINED) for m in (a, b, c, d, h)], at=JOINED)
    once(program, "2026-11-20T10:05:00+07:00")
    engine = engine_of(program)
    with engine.begin() as conn:   # b opens the welcome email
        s, m = sends_table, members_table
        send_id, sent_at = conn.execute(sa.select(s.c.send_id, s.c.sent_at).join(m, m.c.id == s.c.member_ref)
                                        .where(s.c.occurrence_key == "welcome/welcome", m.c.member_id == b)).one()
        conn.execute(tracking_events_table.insert().values(
            send_id=send_id, kind="open", source="tracker", occurred_at=sent_at, machine=False, bot=False,
            detail={}))
    engine.dispose()
    _purchase(program, a, "2026-11-21T12:00:00+07:00", "pa")
    once(program, "2026-11-21T12:05:00+07:00")
    _purchase(program, h, "2026-11-22T12:00:00+07:00", "ph")
    program.load("members", [member(d, joined_at=JOINED, subscribed=False)], at="2026-11-22T12:00:00+07:00")
    once(program, "2026-11-23T10:10:00+07:00")
    _purchase(program, c, "2026-11-25T12:00:00+07:00", "pc")
    once(program, "2026-11-25T12:05:00+07:00")
    program.load("members", [member(e, joined_at="2026-11-29T10:00:00+07:00")], at="2026-11-29T10:00:00+07:00")
    once(program, "2026-11-29T10:05:00+07:00")
    once(program, "2026-11-30T10:15:00+07:00")
    return [a, b, c, d, e], h


def test_an_entry_email_the_frequency_cap_holds_back_after_a_branch_keeps_the_triggers_data(program):
    """A journey whose first email comes after a branch: the cap holds it back at entry (another
    journey's email took the day). Next day it is sent with the trigger's data (the milestone's
    threshold), not without it: the entry is recorded only once an email carries that data."""
    journey(program, """\
  - name: first
    trigger: milestone
    thresholds: [1000]
    priority: 90
    quiet_hours: false
    steps:
      - send: milestone
  - name: second
    trigger: milestone
    thresholds: [1000]
    priority: 10
    quiet_hours: false
    steps:
      - branch: {if: {points: {gte: 0}}, then: [{id: t, send: milestone}]}
""")
    program.load("members", [member("M1", joined_at="2026-11-20T08:00:00+07:00")], at="2026-11-20T08:00:00+07:00")
    program.load("events", [{"member_id": "M1", "type": "points_earned", "points": 1500, "event_id": "e1",
                             "occurred_at": "2026-11-20T09:00:00+07:00"}], at="2026-11-20T09:00:00+07:00")
    once(program, "2026-11-20T10:05:00+07:00")
    assert [(f, k, s) for f, k, s in program.sends()] == [("first", "points:1000/milestone", "sent")]
    dry = [d for d in program.dry("2026-11-21T10:10:00+07:00", "second") if d["decision"] == "send"]
    assert [d["occurrence"] for d in dry] == ["points:1000/t"]
    result = program.run("run", "--once", at="2026-11-21T10:10:00+07:00")
    assert result.exit_code == 0, result.output
    assert program.sends() == [("first", "points:1000/milestone", "sent"), ("second", "points:1000/t", "sent")]


def test_the_journey_funnel_counts_entries_steps_exits_and_conversions(program):
    """Five members enter, one is held out. a buys on day 1 (exit_when); b opens the welcome email
    (then-branch), waits for a purchase in vain and gets the nudge (completed); c does not open
    (else-branch) and buys while waiting (exit_when); d unsubscribes before the reminder (left);
    e joins on day 9 and is still waiting 3 days. The held-out member buys on day 2."""
    _funnel_program(program)
    result = program.run("report", "--since", "2026-11-01", "--until", "2026-11-30", "--format", "json",
                         at="2026-11-30T12:00:00+07:00")
    assert result.exit_code == 0, result.output
    (funnel,) = json.loads(result.stdout)["journeys"]
    assert funnel["flow"] == "welcome_series"
    assert (funnel["entered"], funnel["converted"], funnel["conversion_rate"]) == (5, 2, 0.4)   # a, c
    assert (funnel["held_out"], funnel["held_out_converted"], funnel["held_out_conversion_rate"]) == (1, 1, 1.0)
    branch = next(s["step"] for s in funnel["steps"] if s["what"] == "branch")
    assert [(s["number"], s["step"], s["what"], s["reached"]) for s in funnel["steps"]] == [
        (1, "welcome", "send welcome", 5),
        (2, "wait_3_days", "wait 3 days", 5),
        (3, branch, "branch", 3),                                    # b, c, d (a left, e waits)
        (4, "welcome_perks", "send welcome_perks", 1),                # b
        (5, "welcome_reminder", "send welcome_reminder", 2),          # c, d (suppressed there)
        (6, "wait_until_purchase", "wait_until purchase", 2),         # b, c
        (7, "first_purchase_nudge", "send first_purchase_nudge", 1),  # b, timed out
    ]
    assert funnel["exits"] == {"exit_when": 2, "suppressed": 1, "step_removed": 0, "completed": 1,
                               "in_progress": 1, "held_out": 1}
    # A period that ends before e joined and before b's timeout: b is still waiting, e not counted.
    earlier = program.run("report", "--since", "2026-11-01", "--until", "2026-11-26", "--format", "json",
                          at="2026-11-30T12:00:00+07:00")
    (funnel,) = json.loads(earlier.stdout)["journeys"]
    assert funnel["entered"] == 4 and funnel["exits"]["in_progress"] == 1 and funnel["exits"]["completed"] == 0
    assert [s["reached"] for s in funnel["steps"]][-1] == 0
    # A period that begins after the others entered: e alone (the others' later steps are not entries).
    last_days = program.run("report", "--since", "2026-11-29", "--until", "2026-11-30", "--format", "json",
                            at="2026-11-30T12:00:00+07:00")
    (funnel,) = json.loads(last_days.stdout)["journeys"]
    assert (funnel["entered"], funnel["held_out"], funnel["converted"]) == (1, 0, 0)
    assert [s["reached"] for s in funnel["steps"]] == [1, 1, 0, 0, 0, 0, 0]
    assert funnel["exits"] == {"exit_when": 0, "suppressed": 0, "step_removed": 0, "completed": 0,
                               "in_progress": 1, "held_out": 0}
    # A period after every entry: no journey had activity, so no funnel and no table section.
    later = program.run("report", "--since", "2026-12-01", "--until", "2026-12-02", at="2026-12-02T12:00:00+07:00")
    assert later.exit_code == 0 and "Journey" not in later.output
    table = program.run("report", "--since", "2026-11-01", "--until", "2026-11-30",
                        at="2026-11-30T12:00:00+07:00", ).output
    assert "Journey welcome_series: 5 entered, 2 converted (40.0%" in table
    assert table.index("Email performance") < table.index("Journey welcome_series")


CHROMIUM = "/usr/bin/chromium"


def test_the_journeys_section_of_the_html_report_in_headless_chromium(sqlite_program, tmp_path):
    """Chromium lays out the Journeys section: the funnel table holds the worked example's figures
    and the bar chart draws one bar per row, as long as its figure, with every label inside it."""
    if not os.path.exists(CHROMIUM):
        pytest.skip("Chromium is not installed at /usr/bin/chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
    _funnel_program(sqlite_program)
    out = tmp_path / "report.html"
    result = sqlite_program.run("report", "--since", "2026-11-01", "--until", "2026-11-30", "--format", "html",
                                "--out", str(out), at="2026-11-30T12:00:00+07:00")
    assert result.exit_code == 0, result.output
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            tab = browser.new_page(viewport={"width": 1200, "height": 900})
            requests: list[str] = []
            tab.on("request", lambda r: requests.append(r.url) if not r.url.startswith("file:") else None)
            tab.goto(out.as_uri())
            heading = tab.locator("h2#journeys")
            assert heading.is_visible() and heading.inner_text() == "Journeys"
            rows = tab.eval_on_selector_all("#journey-welcome_series tr", "rows => rows.map(r => "
                                            "[...r.children].map(c => c.innerText.trim()))")
            assert [(r[0], r[2], r[3]) for r in rows[1:]] == [
                ("", "", "5"), ("1", "send welcome", "5"), ("2", "wait 3 days", "5"), ("3", "branch", "3"),
                ("4", "send welcome_perks", "1"), ("5", "send welcome_reminder", "2"),
                ("6", "wait_until purchase", "2"), ("7", "send first_purchase_nudge", "1"),
                ("", "within the attribution window", "2")]
            assert rows[-1][4] == "40.0%"
            outcomes = dict(tab.eval_on_selector_all("#journey-welcome_series-outcomes tr td:first-child",
                                                     "cells => cells.map(c => [c.innerText, "
                                                     "c.nextElementSibling.innerText])"))
            assert outcomes == {"left: exit_when held": "2", "left: unsubscribed or suppressed": "1",
                                "left: step removed by an edit": "0", "completed ($end)": "1",
                                "still in progress": "1", "held out (never entered)": "1",
                                "held out and converted": "1"}
            chart = tab.locator("figure", has_text="Journey welcome_series: members at each step")
            box = chart.locator("svg").bounding_box()
            assert box is not None and box["width"] > 300 and box["height"] > 100
            bars = chart.locator("svg").evaluate("svg => [...svg.querySelectorAll('rect.bar')].map(r => "
                                                 "[r.getBBox().width, r.querySelector('title').textContent])")
            assert [title for _, title in bars] == [
                "entered: 5", "1 send welcome: 5", "2 wait 3 days: 5", "3 branch: 3", "4 send welcome_perks: 1",
                "5 send welcome_reminder: 2", "6 wait_until purchase: 2", "7 send first_purchase_nudge: 1",
                "converted: 2"]
            widths = [width for width, _ in bars]
            assert widths[0] > 200 and abs(widths[3] / widths[0] - 3 / 5) < 0.01
            assert abs(widths[4] / widths[0] - 1 / 5) < 0.01
            left = chart.locator("svg").evaluate("svg => Math.min(...[...svg.querySelectorAll('text')]"
                                                 ".map(t => t.getBBox().x))")
            assert left >= 0     # no label cut off at the chart's left edge
            assert requests == []
            assert not tab.evaluate("document.documentElement.scrollWidth > window.innerWidth + 1")
        finally:
            browser.close()

"""Members leaving journeys, shown where users look: the dry run lists who would exit and why
(counts per journey and reason, a few members each; one `exit` object per member in JSON), a real
run says how many exited and why, and `explain` says "would exit ... before step N" or "exited
... at step N on ... (reason)". The dry run announces exactly what the following run does."""

from __future__ import annotations

import json

from .flow_program import member
from .journey_program import JOINED, SERIES, TIMING, explain, journey, once, sends, steps

BOUGHT = "2026-11-21T12:00:00+07:00"
LATER = "2026-11-21T12:05:00+07:00"


def _three_in_flight(program):
    journey(program)
    program.load("members", [member(m, joined_at=JOINED) for m in ("M1", "M2", "M3")], at=JOINED)
    once(program, "2026-11-20T10:05:00+07:00")
    program.load("events", [{"member_id": "M1", "type": "purchase", "occurred_at": BOUGHT, "amount": 2500000,
                             "currency": "VND", "event_id": "b1"}], at=BOUGHT)
    config = program.dir / "config.yaml"
    config.write_text(config.read_text().replace("      - wait: 3 days\n", "      - wait: 2 days\n"))


def _table(output: str, title: str) -> list[list[str]]:
    lines = output.splitlines()
    start = lines.index(title) + 3
    rows = []
    for line in lines[start:]:
        if "│" not in line:
            break
        rows.append([cell.strip() for cell in line.split("│")])
    return rows


def test_dry_run_run_and_explain_show_who_exits_and_why(program):
    _three_in_flight(program)
    dry = program.run("run", "--dry-run", at=LATER)
    assert dry.exit_code == 0, dry.output
    assert _table(dry.output, "Journeys: members who would exit") == [
        ["welcome_series", "exit_when matched", "1", "M1"],
        ["welcome_series", "step removed by an edit", "2", "M2, M3"]]
    decisions = [d for d in program.dry(LATER) if d["decision"] == "exit"]
    assert sorted((d["member_id"], d["exit_reason"]) for d in decisions) == [
        ("M1", "exit_when matched"), ("M2", "step removed by an edit"), ("M3", "step removed by an edit")]
    assert ("would exit welcome_series at step wait_3_days (no longer in the journey): "
            "exit_when {purchases: {count: {gte: 1}}} matched") in explain(program, "M1", LATER)
    assert ("would exit welcome_series at step wait_3_days (no longer in the journey): step wait_3_days was "
            "removed by an edit") in explain(program, "M2", LATER)
    # The run does what the dry run said, and says so.
    result = program.run("run", "--once", at=LATER)
    assert result.exit_code == 0, result.output
    assert _table(result.output, "Journeys: members who exited") == _table(
        dry.output, "Journeys: members who would exit")
    assert steps(program)[-3:] == [("$exit", "exited")] * 3
    assert ("exited welcome_series at step wait_3_days on 2026-11-21 12:05 +07 "
            "(exit_when {purchases: {count: {gte: 1}}} matched)") in explain(program, "M1", "2026-11-22T10:00:00+07:00")
    assert "would exit" not in explain(program, "M1", "2026-11-22T10:00:00+07:00")
    as_json = program.run("run", "--once", "--format", "json", at="2026-11-22T10:00:00+07:00")
    assert json.loads(as_json.stdout)["exits"] == []


def test_exit_when_before_a_step_and_leaving_at_a_send(program):
    journey(program, SERIES.replace("      - wait: 3 days\n", "      - wait: 1 day\n"))
    program.load("members", [member("M1", joined_at=JOINED), member("M2", joined_at=JOINED)], at=JOINED)
    once(program, "2026-11-20T10:05:00+07:00")
    program.load("events", [{"member_id": "M1", "type": "purchase", "occurred_at": BOUGHT, "amount": 2500000,
                             "currency": "VND", "event_id": "b1"}], at=BOUGHT)
    program.load("members", [member("M2", joined_at=JOINED, subscribed=False)], at=BOUGHT)
    at = "2026-11-21T12:10:00+07:00"
    assert ("would exit welcome_series before step 3 (branch): exit_when {purchases: {count: {gte: 1}}} matched"
            in explain(program, "M1", at))
    assert ("would exit welcome_series at step 5 (send welcome_reminder): left the journey: unsubscribed"
            in explain(program, "M2", at))    # no open: the else branch
    dry = program.run("run", "--dry-run", at=at)
    assert _table(dry.output, "Journeys: members who would exit") == [
        ["welcome_series", "exit_when matched", "1", "M1"], ["welcome_series", "left: unsubscribed", "1", "M2"]]
    result = program.run("run", "--once", at=at)
    assert _table(result.output, "Journeys: members who exited") == _table(dry.output, "Journeys: members who would exit")
    assert [s for s in sends(program) if s[2] == "suppressed"] == [("welcome/welcome_reminder", "welcome_reminder",
                                                                   "suppressed")]


def _sends_announced(program, at: str) -> list[tuple[str, str]]:
    return sorted((d["occurrence"], d["template"]) for d in program.dry(at) if d["decision"] == "send")


def test_after_reordering_steps_the_dry_run_announces_what_the_run_sends(program):
    """M1 has had the reminder and waits 12 hours; M2 still waits 3 days. Swapping the reminder
    and the nudge puts the reminder M1 had after M1's position: it is not announced, nor sent,
    again; M2 gets the nudge, then the reminder."""
    journey(program, TIMING)
    program.load("members", [member("M1", joined_at=JOINED)], at=JOINED)
    program.load("members", [member("M2", joined_at="2026-11-21T10:00:00+07:00")], at="2026-11-21T10:00:00+07:00")
    once(program, "2026-11-20T10:05:00+07:00")
    once(program, "2026-11-21T10:05:00+07:00")
    once(program, "2026-11-23T10:06:00+07:00")
    assert [(k, s) for k, _, s in sends(program)] == [("welcome/welcome", "sent"), ("welcome/welcome", "sent"),
                                                      ("welcome/welcome_reminder", "sent")]
    config = program.dir / "config.yaml"
    text = config.read_text()
    config.write_text(text.replace("      - send: welcome_reminder\n", "      - send: TMP\n")
                      .replace("      - send: first_purchase_nudge\n", "      - send: welcome_reminder\n")
                      .replace("      - send: TMP\n", "      - send: first_purchase_nudge\n"))
    for at in ("2026-11-23T22:10:00+07:00", "2026-11-24T10:10:00+07:00", "2026-11-24T22:15:00+07:00"):
        announced = _sends_announced(program, at)
        before = len(sends(program))
        once(program, at)
        done = sorted((k, t) for k, t, _ in sends(program)[before:])
        assert announced == done, at
    engine_rows = sends(program)
    assert sorted((k, t) for k, t, _ in engine_rows) == sorted([
        ("welcome/welcome", "welcome"), ("welcome/welcome", "welcome"),
        ("welcome/welcome_reminder", "welcome_reminder"),                                   # M1, once
        ("welcome/first_purchase_nudge", "first_purchase_nudge"), ("welcome/welcome_reminder", "welcome_reminder")])
    assert len(engine_rows) == 5

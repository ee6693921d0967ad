"""A/B variants on a journey's send steps, and a journey's conversions in reports, through the CLI
on both databases: each step assigns on its own and the same way in every run and process, the
ledger records each send's variant, a step's winner takes over at its threshold, reports show the
steps' variants and the steps in the journey's order, and a purchase counts once in a journey."""

from __future__ import annotations

import email
import email.policy
import json
import os
import subprocess
import sys

import pytest
import sqlalchemy as sa

from loyalty_mail.config import VariantSettings
from loyalty_mail.flows.variants import assign
from loyalty_mail.models import members_table, sends_table, variant_winners_table

from .conftest import CONFIG_ONLY
from .flow_program import REPO, SECRET, Program, member
from .journey_program import TIMING, engine_of, journey, once

AB_SERIES = """\
  - name: series
    trigger: welcome
    frequency_cap: false
    quiet_hours: false
    steps:
      - send: welcome
        variants:
          - {name: a, subject: "Variant A for {{ member.first_name }}"}
          - {name: b, template: welcome_perks}
        winner: {metric: conversion_rate, after: 20 sends, confidence: 0.95}
      - wait: 1 day
      - id: reminder
        send: welcome_reminder
        variants: [{name: a, subject: Reminder A}, {name: b, subject: Reminder B, weight: 3}]
"""
FIRST = (VariantSettings(name="a", subject="Variant A for {{ member.first_name }}"),
         VariantSettings(name="b", template="welcome_perks"))
REMINDER = (VariantSettings(name="a", subject="Reminder A"), VariantSettings(name="b", subject="Reminder B", weight=3))
JOINED = "2026-11-20T10:00:00+07:00"


def ids_for(variant: str, count: int, prefix: str) -> list[str]:
    """Member ids whose own draw in the first step's test is `variant`."""
    return [f"{prefix}{n}" for n in range(1000) if assign("series.welcome", f"{prefix}{n}", FIRST).name == variant][:count]


def ledger(program: Program) -> tuple[dict[tuple[str, str], tuple[str | None, str]], list[dict]]:
    """(member id, occurrence key) -> (variant, template) of every send, and the winners recorded."""
    engine = engine_of(program)
    s, m = sends_table, members_table
    with engine.connect() as conn:
        rows = conn.execute(sa.select(m.c.member_id, s.c.occurrence_key, s.c.variant, s.c.template)
                            .join(m, m.c.id == s.c.member_ref)).all()
        winners = [dict(w) for w in conn.execute(sa.select(variant_winners_table)).mappings()]
    engine.dispose()
    return {(r[0], r[1]): (r[2], r[3]) for r in rows}, winners


def dry_in_another_process(program: Program, at: str) -> list[dict]:
    """`run --dry-run --format json --at AT` in a fresh interpreter with another hash seed."""
    env = {**os.environ, "PYTHONHASHSEED": "4242", "PYTHONPATH": str(REPO), "LOYALTY_MAIL_SECRET": SECRET}
    result = subprocess.run([sys.executable, "-m", "loyalty_mail", "--project", str(program.dir), "--database",
                             program.url, "run", "--dry-run", "--format", "json", "--at", at],
                            env=env, capture_output=True, text=True, timeout=120, check=True)
    return json.loads(result.stdout)


def subjects(program: Program) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted((program.dir / "outbox").glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        found.setdefault(str(message["To"]).split("<")[1].split("@")[0].upper(), []).append(str(message["Subject"]))
    return found


def test_each_step_assigns_on_its_own_and_the_same_way_in_another_process(program):
    journey(program, AB_SERIES)
    assert program.run("check").exit_code == 0, program.run("check").output
    ids = [f"M{n}" for n in range(1, 41)]
    program.load("members", [member(i, joined_at=JOINED) for i in ids], at=JOINED)
    first = {d["member_id"]: (d["variant"], d["template"])
             for d in program.dry("2026-11-20T10:05:00+07:00") if d["decision"] == "send"}
    expected = {i: ("a", "welcome") if assign("series.welcome", i, FIRST).name == "a" else ("b", "welcome_perks")
                for i in ids}
    assert first == expected
    again = dry_in_another_process(program, "2026-11-20T10:05:00+07:00")
    assert {d["member_id"]: (d["variant"], d["template"]) for d in again if d["decision"] == "send"} == expected
    once(program, "2026-11-20T10:05:00+07:00")
    once(program, "2026-11-21T10:10:00+07:00")
    sends, _ = ledger(program)
    assert {i: sends[(i, "welcome/welcome")] for i in ids} == expected
    reminder = {i: sends[(i, "welcome/reminder")] for i in ids}
    assert reminder == {i: (assign("series.reminder", i, REMINDER).name, "welcome_reminder") for i in ids}
    # The steps draw apart: the reminder's variant is not the first step's over again.
    assert any(reminder[i][0] != first[i][0] for i in ids) and any(reminder[i][0] == first[i][0] for i in ids)
    mail = subjects(program)
    for i in ids:
        sent = mail[i]
        assert len(sent) == 2 and f"Reminder {reminder[i][0].upper()}" in sent
        assert ("Variant A for Lan" in sent) == (first[i][0] == "a")


def test_a_steps_winner_takes_over_at_its_threshold_and_reports_show_the_steps_variants(program):
    journey(program, AB_SERIES)
    a_ids, b_ids = ids_for("a", 10, "A"), ids_for("b", 9, "B")
    program.load("members", [member(i, joined_at=JOINED) for i in a_ids + b_ids], at=JOINED)
    once(program, "2026-11-20T10:05:00+07:00")
    # Every b member buys before the reminder: the purchase belongs to the first step's email.
    program.load("events", [{"member_id": i, "type": "purchase", "occurred_at": "2026-11-20T18:00:00+07:00",
                             "amount": 10000, "currency": "VND", "event_id": f"p-{i}"} for i in b_ids],
                 at="2026-11-20T18:00:00+07:00")
    late_a = ids_for("a", 12, "A")[10:]
    program.load("members", [member(late_a[0], joined_at="2026-11-21T10:00:00+07:00")], at="2026-11-21T10:00:00+07:00")
    once(program, "2026-11-21T10:10:00+07:00")      # 19 sends of the first step when the rule is checked
    sends, winners = ledger(program)
    assert winners == [] and sends[(late_a[0], "welcome/welcome")] == ("a", "welcome")
    program.load("members", [member(late_a[1], joined_at="2026-11-22T10:00:00+07:00")], at="2026-11-22T10:00:00+07:00")
    # The dry run shows what the run will do: the winner it would record first, recording nothing.
    dry = {d["member_id"]: (d["variant"], d["template"]) for d in program.dry("2026-11-22T10:10:00+07:00")
           if d["decision"] == "send" and d["occurrence"] == "welcome/welcome"}
    assert dry == {late_a[1]: ("b", "welcome_perks")}
    explained = program.run("explain", late_a[1], "--at", "2026-11-22T10:10:00+07:00")
    assert "send welcome; scheduled for 2026-11-22 10:10 +07; variant b (welcome_perks)" in explained.output
    assert ledger(program)[1] == []
    result = program.run("run", "--once", at="2026-11-22T10:10:00+07:00")    # 20: b wins
    assert result.exit_code == 0, result.output
    assert "A/B test series.welcome: variant b wins on conversion_rate; new members get it" in result.output
    sends, winners = ledger(program)
    assert [(w["flow"], w["variant"], w["figures"]["sends"]) for w in winners] == [("series.welcome", "b", 20)]
    assert sends[(late_a[1], "welcome/welcome")] == ("b", "welcome_perks")     # its own draw is a
    assert sends[(a_ids[0], "welcome/welcome")] == ("a", "welcome")            # the ledger never changes
    # The reminder is a test of its own: no winner, members keep their own draw.
    assert {sends[(i, "welcome/reminder")][0] for i in a_ids + b_ids} == {"a", "b"}

    report = program.run("report", "--since", "2026-11-20", "--until", "2026-11-22", "--by", "flow,step,variant",
                         "--format", "json", at="2026-11-23T00:00:00+07:00")
    assert report.exit_code == 0, report.output
    data = json.loads(report.stdout)
    # Steps in the journey's order (welcome before reminder), variants by name within a step.
    assert [(r["flow"], r["step"], r["variant"]) for r in data["rows"]] == [
        ("series", "welcome", "a"), ("series", "welcome", "b"), ("series", "reminder", "a"), ("series", "reminder", "b")]
    tests = {(r["step"], r["variant"]): r for r in data["variants"]["variants"]}
    assert (tests[("welcome", "a")]["sent"], tests[("welcome", "a")]["converted"]) == (11, 0)
    assert (tests[("welcome", "b")]["sent"], tests[("welcome", "b")]["converted"]) == (10, 9)
    assert tests[("welcome", "b")]["winner"] and not tests[("reminder", "b")]["winner"]
    assert sum(r["converted"] for (step, _), r in tests.items() if step == "reminder") == 0
    assert [(r["flow"], r["step"]) for r in data["variants"]["variants"]][:2] == [("series", "welcome")] * 2
    assert [(w["flow"], w["step"], w["variant"]) for w in data["variants"]["winners"]] == [("series", "welcome", "b")]
    table, html = program.variant_report("2026-11-20", "2026-11-22", at="2026-11-23T00:00:00+07:00")
    assert "series step welcome: variant b won on conversion_rate" in table
    assert "series step welcome: variant <b>b</b> won" in html


@pytest.mark.parametrize(("step", "error"), [
    ("{send: welcome, variants: [{name: a, subject: A}]}",
     "flow 'bad': step 'welcome': variants: needs two or more variants (e.g. a and b)"),
    ("{send: welcome, variants: [{name: a, subject: A}, {name: b, colour: red}]}",
     "flow 'bad': step 'welcome': unknown key 'colour' in variants[1] (allowed: name, template, subject, weight)"),
    ("{send: welcome, variants: [{name: a, subject: A}, {name: b, template: nosuch}]}",
     "flow 'bad': no email template 'nosuch' in templates/"),
    ("{send: welcome, winner: {after: 100}}", "flow 'bad': step 'welcome': winner: needs variants: to choose from"),
    ("{send: welcome, variants: [], winner: {after: 100}}",
     "flow 'bad': step 'welcome': winner: needs variants: to choose from (variants: is empty)"),
    ("{send: welcome, variants: [{name: a, subject: A}, {name: b, subject: B}], winner: {metric: opens}}",
     "flow 'bad': step 'welcome': winner.metric: Input should be 'conversion_rate', 'click_rate' or 'open_rate' "
     "(found 'opens')"),
    ("{send: welcome, variants: [{name: a, subject: A}, {name: b, subject: \"Hi {{ member.nosuch }}\"}]}",
     "variant 'b' subject: undefined variable: member has no field 'nosuch'"),
    ("{id: " + "s" * 48 + ", send: welcome, variants: [{name: a, subject: A}, {name: b, subject: B}]}",
     "its A/B test is named '" + "bad" * 6 + "." + "s" * 48 + "', longer than 64 characters; give the step a "
     "shorter id"),
])
@CONFIG_ONLY
def test_a_steps_variants_are_checked_at_their_line(program, step, error):
    name = "bad" * 6 if step.startswith("{id:") else "bad"
    journey(program, f"  - name: {name}\n    trigger: welcome\n    steps:\n      - {step}\n")
    result = program.run("check")
    assert result.exit_code == 1 and error in result.output, result.output
    assert "Traceback" not in result.output
    if "nosuch }}" in step:   # the subject's own line and column
        assert f"config.yaml:{len((program.dir / 'config.yaml').read_text().splitlines())}:" in result.output


def test_a_journey_counts_a_purchase_once_for_the_last_email_before_it(program):
    """Three emails (day 0, day 3, day 3 + 12 h). M1 buys after the third: one conversion, the
    third step's. M2 buys after the first (before the second): the first step's. M3 buys after the
    first and again after the third: one conversion each, each purchase counted once. M4 buys
    eight days after the third email, outside the attribution window: nothing."""
    journey(program, TIMING.replace("    frequency_cap: false\n", "    frequency_cap: false\n    quiet_hours: false\n"))
    members = ["M1", "M2", "M3", "M4"]
    program.load("members", [member(i, joined_at=JOINED) for i in members], at=JOINED)

    def buy(member_id: str, at: str, amount: int, event_id: str) -> None:
        program.load("events", [{"member_id": member_id, "type": "purchase", "occurred_at": at, "amount": amount,
                                 "currency": "VND", "event_id": event_id}], at=at)

    once(program, "2026-11-20T10:05:00+07:00")
    buy("M2", "2026-11-21T12:00:00+07:00", 100000, "p2")
    buy("M3", "2026-11-21T12:00:00+07:00", 30000, "p3a")
    once(program, "2026-11-23T10:10:00+07:00")
    once(program, "2026-11-23T22:15:00+07:00")
    buy("M1", "2026-11-24T12:00:00+07:00", 200000, "p1")
    buy("M3", "2026-11-25T12:00:00+07:00", 50000, "p3b")
    buy("M4", "2026-12-02T12:00:00+07:00", 70000, "p4")

    def rows(by: str) -> list[dict]:
        result = program.run("report", "--since", "2026-11-20", "--until", "2026-11-30", "--by", by,
                             "--format", "json", at="2026-12-05T00:00:00+07:00")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)["rows"]

    (total,) = rows("flow")
    assert (total["flow"], total["sent"], total["converted"], total["revenue"]) == ("timing", 12, 4, 380000.0)
    assert total["revenue_per_email"] == round(380000 / 12, 2)
    by_step = [(r["step"], r["sent"], r["converted"], r["revenue"]) for r in rows("flow,step")]
    assert by_step == [("welcome", 4, 2, 130000.0), ("welcome_reminder", 4, 0, 0.0),
                       ("first_purchase_nudge", 4, 2, 250000.0)]   # the journey's order, not by name
    assert sum(step[3] for step in by_step) == total["revenue"]
    # The journey's funnel counts members: three of four converted within the window after entering.
    funnel = json.loads(program.run("report", "--since", "2026-11-20", "--until", "2026-11-30", "--format", "json",
                                    at="2026-12-05T00:00:00+07:00").stdout)["journeys"][0]
    assert (funnel["entered"], funnel["converted"]) == (4, 3)


def test_steps_an_edit_removed_come_after_the_journeys_steps(program):
    journey(program, TIMING)
    program.load("members", [member("M1", joined_at=JOINED)], at=JOINED)
    once(program, "2026-11-20T10:05:00+07:00")
    once(program, "2026-11-23T10:10:00+07:00")
    path = program.dir / "config.yaml"
    path.write_text(path.read_text().replace("      - send: welcome\n", ""))   # the first step goes
    result = program.run("report", "--since", "2026-11-20", "--until", "2026-11-30", "--by", "flow,step",
                         "--format", "json", at="2026-11-24T00:00:00+07:00")
    assert result.exit_code == 0, result.output
    assert [r["step"] for r in json.loads(result.stdout)["rows"]] == ["welcome_reminder", "welcome"]
    table = program.run("report", "--since", "2026-11-20", "--until", "2026-11-30", "--by", "flow,step",
                        "--format", "csv", at="2026-11-24T00:00:00+07:00")
    assert [line.split(",")[1] for line in table.output.splitlines()[1:]] == ["welcome_reminder", "welcome"]


def test_a_variant_subject_after_a_wait_with_no_email_before_it_is_checked_without_the_trigger(program):
    """A step decided on a later tick has no `event`: `check` refuses a variant's subject that uses
    it, at the subject's line, rather than every send of that variant failing at delivery."""
    journey(program, "  - name: late\n    trigger: welcome\n    steps:\n      - wait: 1 day\n"
                     "      - id: hello\n        send: welcome\n"
                     "        variants: [{name: a, subject: \"Hi {{ event.type }}\"}, {name: b, subject: B}]\n")
    result = program.run("check")
    assert result.exit_code == 1, result.output
    line = len((program.dir / "config.yaml").read_text().splitlines())
    assert f"config.yaml:{line}:" in result.output and "variant 'a' subject: undefined variable: event has no " \
        "field 'type': the trigger's data is not there after a wait" in result.output, result.output
    assert "Traceback" not in result.output
    # Before the wait the trigger's data is there: the same subject is fine.
    path = program.dir / "config.yaml"
    path.write_text(path.read_text().replace("      - wait: 1 day\n", "").replace(
        "variants:", "variants:").rstrip("\n") + "\n      - wait: 1 day\n")
    result = program.run("check")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("subject", ['"{{ member.first_name "', '"{{ member.first_name | nosuch }}"'])
def test_a_variant_subject_that_does_not_parse_is_reported_at_its_line_in_config_yaml(program, subject):
    journey(program, "  - name: bad\n    trigger: welcome\n    steps:\n"
                     f"      - {{send: welcome, variants: [{{name: a, subject: {subject}}}, {{name: b, subject: B}}]}}\n")
    result = program.run("check")
    line = len((program.dir / "config.yaml").read_text().splitlines())
    assert result.exit_code == 1 and f"config.yaml:{line}:55: variant 'a' subject: syntax error: " in result.output, \
        result.output
    assert "Traceback" not in result.output
    dry = program.run("run", "--dry-run", at=JOINED)   # the run commands say the same
    assert dry.exit_code == 1 and f"config.yaml:{line}:55: variant 'a' subject: syntax error: " in dry.output, \
        dry.output


def test_explain_names_the_variant_of_a_due_step_and_of_each_recorded_send(program):
    journey(program, AB_SERIES)
    program.load("members", [member("M1", joined_at=JOINED)], at=JOINED)
    once(program, "2026-11-20T10:05:00+07:00")
    result = program.run("explain", "M1", "--at", "2026-11-21T10:10:00+07:00")
    assert result.exit_code == 0, result.output
    first = assign("series.welcome", "M1", FIRST)
    reminder = assign("series.reminder", "M1", REMINDER)
    assert (f"DUE welcome/reminder: series step 3: send welcome_reminder; scheduled for 2026-11-21 10:10 +07; "
            f"variant {reminder.name} (welcome_reminder)") in result.output, result.output
    assert (f"recorded welcome/welcome: sent (2026-11-20 10:05 +07): series step 1: send welcome; variant "
            f"{first.name} ({first.template or 'welcome'})") in result.output, result.output

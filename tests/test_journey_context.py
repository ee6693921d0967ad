"""What a journey's email sees of its trigger at each step: the trigger's data is read back from
the instance's first email, so an email after a wait with no email before it has none, and
`check` says which expression needs it (file:line:column, journey and step)."""

from __future__ import annotations

import pytest

from loyalty_mail.flows.journey_spec import parse_journey, sends_without_trigger
from loyalty_mail.tiers import TierLadder
from loyalty_mail.config import TierSettings
from loyalty_mail.yaml_source import YamlDocument

from .conftest import CONFIG_ONLY
from .journey_program import buy_and_tick, check, event_journey, sends


def _lost(steps: list) -> list[str]:
    doc = YamlDocument("config.yaml", {"steps": steps})
    parsed, problems = parse_journey("j", steps, None, doc, (), TierLadder.from_settings(TierSettings()))
    assert parsed is not None, problems
    return [s.id for s in sends_without_trigger(parsed)]


OPENED = {"emails": {"action": "opened"}}


@pytest.mark.parametrize(("steps", "lost"), [
    ([{"send": "a"}, {"wait": "1 day"}, {"send": "b"}], []),
    ([{"wait": "1 day"}, {"send": "a"}, {"send": "b"}], ["a", "b"]),
    ([{"wait_until": {"event": "purchase", "timeout": "2 days"}, "on_timeout": [{"send": "a"}]}, {"send": "b"}],
     ["a", "b"]),
    # the else path reaches the wait with no email before it
    ([{"branch": {"if": OPENED, "then": [{"send": "a"}]}}, {"wait": "1 day"}, {"send": "b"}], ["b"]),
    ([{"branch": {"if": OPENED, "then": [{"send": "a"}], "else": [{"send": "c"}]}}, {"wait": "1 day"},
      {"send": "b"}], []),
    # a branch decided at entry, before any wait, still has the trigger's occurrence
    ([{"branch": {"if": OPENED, "then": [{"send": "a"}], "else": [{"wait": "1 day"}, {"send": "c"}]}}],
     ["c"]),
    ([{"send": "a"}, {"wait_until": {"event": "purchase", "timeout": "2 days"}, "on_timeout": [{"send": "b"}]}],
     []),
])
def test_the_sends_that_come_without_the_trigger_data(steps, lost):
    assert _lost(steps) == lost


EVENT_AFTER_WAIT = event_journey("""\
      - send: welcome
      - branch:
          if: {emails: {action: opened, flow: after_purchase}}
          then: [{send: welcome_perks}]
      - wait: 1 day
      - {id: receipt_again, send: points_receipt}
""")


@CONFIG_ONLY
def test_check_names_each_expression_that_needs_the_trigger_after_a_wait(program):
    # `welcome` before the wait keeps the event for later steps: nothing to say.
    check(program, EVENT_AFTER_WAIT, exit_code=0)
    # Without it, the receipt is decided a day later with no event: each use of it is named.
    config = program.dir / "config.yaml"
    config.write_text(config.read_text().replace("      - send: welcome\n", "", 1))
    output = check(program, exit_code=1)
    lines = [line.removeprefix("Error: ") for line in output.splitlines()]
    where = "journey after_purchase step 4 (send points_receipt, id receipt_again)"
    assert (f"templates/points_receipt/en.html:2:31: {where}: undefined variable: event has no field 'points': "
            "the trigger's data is not there after a wait with no email before it (send one before the first "
            "wait, or ask `is defined` / `| default`)") in lines
    text = (program.dir / "templates" / "points_receipt" / "vi.html").read_text().splitlines()
    row = next(n for n, line in enumerate(text, 1) if "event.amount" in line)
    column = text[row - 1].index("event.amount") + len("event.") + 1
    assert any(line.startswith(f"templates/points_receipt/vi.html:{row}:{column}: {where}: undefined variable: "
                               "event has no field 'amount'") for line in lines), output
    assert "welcome_perks" not in output and "Traceback" not in output


@CONFIG_ONLY
def test_a_milestone_journey_that_waits_first_is_told_about_its_threshold(program):
    output = check(program, """\
  - name: milestone_series
    trigger: milestone
    thresholds: [1000]
    steps:
      - wait: 2 days
      - send: milestone
""", exit_code=1)
    assert ("journey milestone_series step 2 (send milestone): undefined variable: occurrence has no field "
            "'threshold'") in output
    assert "occurrence has no field 'kind'" not in output


@CONFIG_ONLY
def test_a_variant_template_after_a_wait_is_checked_too(program):
    output = check(program, event_journey("""\
      - wait: 1 day
      - id: thanks
        send: welcome
        variants: [{name: a, template: welcome}, {name: b, template: points_receipt}]
"""), exit_code=1)
    assert ("templates/points_receipt/en.html:2:31: journey after_purchase step 2 (send welcome, id thanks): "
            "undefined variable: event has no field 'points'") in output


def test_what_a_later_step_renders_with_when_an_email_came_first(program):
    """The data a later step's email gets is the first email's (the check above trusts it)."""
    check(program, event_journey("      - send: welcome\n      - wait: 1 day\n      - send: points_receipt\n"),
          exit_code=0)
    buy_and_tick(program)
    assert [(k.split("/")[1], state) for k, _, state in sends(program)] == [("welcome", "sent"),
                                                                            ("points_receipt", "sent")]

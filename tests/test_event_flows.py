"""Event-triggered flows: once per matching event, the event in the template, every policy, the
`where:` filter in the segment language, config mistakes at their line, and explain."""

from __future__ import annotations

import email
import email.policy
import json

import pytest

from click.testing import CliRunner

from loyalty_mail.cli import cli

from .flow_program import SECRET, Program, member

RECEIPT = """\
  - {name: receipt, trigger: event, event: purchase, where: {amount: {gte: 1000000}},
     template: points_receipt, priority: 40, lateness: 1 day, frequency_cap: false}
"""
JOINED = "2025-01-01T10:00:00+07:00"
BOUGHT = "2026-11-20T10:00:00+07:00"
LATER = "2026-11-20T10:05:00+07:00"


def with_flow(program: Program, flow: str = RECEIPT, *, only: bool = True) -> Program:
    """The flow-test program with `flow` added (and, with `only`, the other flows disabled, so the
    assertions see the event flow alone)."""
    path = program.dir / "config.yaml"
    text = path.read_text()
    if only:
        text = text.replace("trigger: welcome,", "trigger: welcome, enabled: false,").replace(
            "trigger: milestone,", "trigger: milestone, enabled: false,").replace(
            "trigger: tier_upgrade,", "trigger: tier_upgrade, enabled: false,").replace(
            "trigger: reengagement,", "trigger: reengagement, enabled: false,")
    path.write_text(text + flow)
    return program


def purchase(event_id: str, amount: int, member_id: str = "M1", at: str = BOUGHT, **extra: object) -> dict:
    return {"member_id": member_id, "type": "purchase", "occurred_at": at, "amount": amount,
            "currency": "VND", "event_id": event_id, **extra}


def decisions(plan: list[dict]) -> dict[tuple[str, str], dict]:
    return {(d["member_id"], d["occurrence"]): d for d in plan}


def event_keys(program: Program) -> dict[str, int]:
    """event_id -> its row id, the occurrence key's number."""
    import sqlalchemy as sa

    from loyalty_mail.models import events_table
    engine = sa.create_engine(program.url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        rows = conn.execute(sa.select(events_table.c.event_id, events_table.c.id)).all()
    engine.dispose()
    return {event_id: ref for event_id, ref in rows}


def test_once_per_matching_event_and_a_reimport_sends_nothing_again(program):
    with_flow(program)
    program.load("members", [member("M1", joined_at=JOINED), member("M2", joined_at=JOINED)], at=JOINED)
    events = [purchase("big", 2_000_000), purchase("small", 500_000), purchase("edge", 1_000_000, at=LATER),
              purchase("other", 3_000_000, member_id="M2"),
              {"member_id": "M1", "type": "points_earned", "points": 5000, "occurred_at": BOUGHT, "event_id": "bonus"}]
    program.load("events", events, at=LATER)
    ids = event_keys(program)
    plan = decisions(program.dry("2026-11-20T10:10:00+07:00"))
    assert set(plan) == {("M1", f"event:{ids['big']}"), ("M1", f"event:{ids['edge']}"),
                         ("M2", f"event:{ids['other']}")}
    assert all(d["decision"] == "send" and d["flow"] == "receipt" for d in plan.values())
    assert plan[("M1", f"event:{ids['big']}")]["reason"] == "purchase event big on 2026-11-20 10:00 +07"

    once = program.run("run", "--once", at="2026-11-20T10:10:00+07:00")
    assert once.exit_code == 0, once.output
    assert sorted(program.sends()) == sorted(("receipt", f"event:{ids[e]}", "sent") for e in ("big", "edge", "other"))

    # The same file again: its event_ids are known, nothing is applied or sent twice.
    program.load("events", events, at="2026-11-20T10:20:00+07:00")
    assert event_keys(program) == ids
    again = program.run("run", "--once", at="2026-11-20T10:30:00+07:00")
    assert again.exit_code == 0, again.output
    assert len(program.sends()) == 3
    assert decisions(program.dry("2026-11-20T10:40:00+07:00")) == {}


def test_the_email_carries_the_event(program):
    with_flow(program)
    program.load("members", [member("M1", joined_at=JOINED, locale="en")], at=JOINED)
    program.load("events", [purchase("big", 2_500_000, properties={"store": "Q1", "items": [
        {"sku": "TEA", "quantity": 2}, {"sku": "CAKE", "quantity": 1}]})], at=LATER)
    once = program.run("run", "--once", at="2026-11-20T10:10:00+07:00")
    assert once.exit_code == 0, once.output
    [sent] = list((program.dir / "outbox").glob("*.eml"))
    message = email.message_from_bytes(sent.read_bytes(), policy=email.policy.default)
    assert message["Subject"] == "You earned 2,500 points, Lan"  # 2,500,000 VND at 0.001 points each
    html = message.get_body(("html",)).get_content()
    assert "+2,500 points" in html and "2 items in this order" in html
    assert "2,500,000" in html


@pytest.mark.parametrize(("flow_policy", "at", "expected"), [
    ("delay: 1 hour", "2026-11-20T10:30:00+07:00", ("skip", "not due until 2026-11-20 11:00 +07 (delay 1 hour)")),
    ("delay: 1 hour", "2026-11-20T11:00:00+07:00", ("send", None)),
    ("lateness: 1 hour", "2026-11-20T11:30:00+07:00",
     ("skip", "too late: due 2026-11-20 10:00 +07, more than 1 hour ago (the flow's lateness)")),
    ("holdout: 100", "2026-11-20T10:30:00+07:00", ("skip", "held out (100% hold-out group)")),
    ("quiet_hours: true", "2026-11-20T22:00:00+07:00", ("send", "quiet hours until 08:00 local (Asia/Ho_Chi_Minh)")),
])
def test_every_policy_applies(program, flow_policy, at, expected):
    flow = ("  - {name: receipt, trigger: event, event: purchase, template: points_receipt, "
            f"frequency_cap: false, {flow_policy}}}\n")
    with_flow(program, flow)
    program.load("members", [member("M1", joined_at=JOINED)], at=JOINED)
    program.load("events", [purchase("big", 2_000_000)], at=LATER)
    [decision] = program.dry(at)
    assert (decision["decision"], decision["reason"] if decision["decision"] == "skip" else decision["deferred"]) \
        == expected


def test_the_frequency_cap_and_reentry_limits_apply(program):
    capped = ("  - {name: receipt, trigger: event, event: purchase, template: points_receipt}\n"
              "  - {name: vip_receipt, trigger: event, event: purchase, template: points_receipt,"
              " reentry: {max: 1, cooldown: 30 days}, frequency_cap: false}\n")
    with_flow(program, capped)  # the program's cap: one marketing email a day
    program.load("members", [member("M1", joined_at=JOINED)], at=JOINED)
    program.load("events", [purchase("p1", 2_000_000), purchase("p2", 2_000_000, at=LATER)], at=LATER)
    ids = event_keys(program)
    plan = program.dry("2026-11-20T10:30:00+07:00")
    by_flow = {(d["flow"], d["occurrence"]): (d["decision"], d["reason"]) for d in plan}
    assert by_flow[("receipt", f"event:{ids['p1']}")][0] == "send"
    assert by_flow[("receipt", f"event:{ids['p2']}")] == (
        "skip", "frequency cap: 1 marketing emails within 1 day (max 1)")
    # reentry max 1: the first event only, and never another once it was sent
    assert [k for (f, k), (d, _) in by_flow.items() if f == "vip_receipt"] == [f"event:{ids['p1']}"]
    assert program.run("run", "--once", at="2026-11-20T10:30:00+07:00").exit_code == 0
    program.load("events", [purchase("p3", 2_000_000, at="2026-12-04T10:00:00+07:00")],
                 at="2026-12-04T10:00:00+07:00")
    later = program.dry("2026-12-04T10:30:00+07:00")
    assert [(d["flow"], d["occurrence"]) for d in later] == [("receipt", f"event:{event_keys(program)['p3']}")]
    explained = program.run("explain", "M1", at="2026-12-04T10:30:00+07:00")
    assert "already sent 1 time(s): the flow's reentry max is 1" in explained.output


def test_explain_says_why_an_event_flow_has_no_occurrence(program):
    with_flow(program)
    program.load("members", [member("M1", joined_at=JOINED), member("M2", joined_at=JOINED)], at=JOINED)
    program.load("events", [purchase("small", 500_000)], at=LATER)
    one = program.run("explain", "M1", at="2026-11-20T10:30:00+07:00")
    assert one.exit_code == 0, one.output
    assert "1 purchase event(s) in the flow's window" in one.output
    assert "none meeting the flow's where: conditions" in one.output
    two = program.run("explain", "M2", at="2026-11-20T10:30:00+07:00")
    assert "no purchase event in the flow's window, 2026-11-" in two.output


def test_where_filters_on_properties_with_the_segment_operators(program):
    flow = ("  - {name: receipt, trigger: event, event: purchase, template: points_receipt, frequency_cap: false,\n"
            "     where: {store: {in: [Q1, Q3]}, channel: {ne: online}, amount: {between: [1000000, 5000000]}}}\n")
    with_flow(program, flow)
    program.load("members", [member("M1", joined_at=JOINED)], at=JOINED)
    program.load("events", [
        purchase("q1", 2_000_000, properties={"store": "Q1", "channel": "till"}),
        purchase("q2", 2_000_000, properties={"store": "Q2", "channel": "till"}),
        purchase("web", 2_000_000, properties={"store": "Q3", "channel": "online"}),
        purchase("nostore", 2_000_000),
        purchase("huge", 9_000_000, properties={"store": "Q1", "channel": "till"}),
    ], at=LATER)
    ids = event_keys(program)
    assert [d["occurrence"] for d in program.dry("2026-11-20T10:30:00+07:00")] == [f"event:{ids['q1']}"]


def problems(tmp_path, flows: str) -> list[str]:
    """What `loyalty-mail check` says about a config.yaml with these flows."""
    (tmp_path / "config.yaml").write_text("flows:\n" + flows)
    result = CliRunner(env={"LOYALTY_MAIL_SECRET": SECRET}).invoke(cli, ["--project", str(tmp_path), "check"])
    assert result.exit_code == 1, result.output
    return result.stderr.removeprefix("Error: ").splitlines()


def test_event_flow_mistakes_name_the_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    found = problems(tmp_path, """\
  - name: receipt
    trigger: event
    template: points_receipt
  - name: big
    trigger: event
    event: purchase
    template: points_receipt
    where:
      amount: {greater: 5}
  - name: welcome
    trigger: welcome
    template: welcome
    event: purchase
""")
    assert found[0].startswith("config.yaml:2:5: flows[0]: flow 'receipt': an event flow needs `event:`")
    assert found[1].startswith("config.yaml:10:16: unknown operator 'greater' for event property 'amount'")
    assert found[2].startswith("config.yaml:11:5: flows[2]: flow 'welcome': `event:` and `where:` belong "
                               "to event flows")
    assert len(found) == 3


def test_the_example_program_has_the_points_receipt(tmp_path):
    from loyalty_mail.config import load_settings

    from .conftest import REPO
    settings = load_settings(REPO, environ={"LOYALTY_MAIL_SECRET": SECRET})
    [flow] = [f for f in settings.flows if f.trigger == "event"]
    assert (flow.name, flow.event, flow.where) == ("points_receipt", "purchase", {"amount": {"gte": 1000000}})
    assert {p.name for p in (REPO / "templates" / "points_receipt").iterdir()} == {"en.html", "vi.html"}
    json.dumps(flow.where)

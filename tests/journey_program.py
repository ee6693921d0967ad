"""Journeys written into the flow-test program (tests/flow_program.py), and what the journey tests
read back: the sends and journey_steps rows, a tick, `explain`, and `check`'s answer."""

from __future__ import annotations

import sqlalchemy as sa

from loyalty_mail.models import journey_steps_table, sends_table

from .flow_program import Program, member

SERIES = """\
  - name: welcome_series
    trigger: welcome
    priority: 90
    frequency_cap: false
    exit_when: {purchases: {count: {gte: 1}}}
    steps:
      - send: welcome
      - wait: 3 days
      - branch:
          if: {emails: {action: opened, flow: welcome_series}}
          then: [{send: welcome_perks}]
          else: [{send: welcome_reminder}]
      - wait_until: {event: purchase, timeout: 7 days}
        on_timeout: [{send: first_purchase_nudge}]
"""
TIMING = """\
  - name: timing
    trigger: welcome
    frequency_cap: false
    steps:
      - send: welcome
      - wait: 3 days
      - send: welcome_reminder
      - wait: 12 hours
      - send: first_purchase_nudge
"""
JOINED = "2026-11-20T10:00:00+07:00"


def journey(program: Program, flows: str = SERIES) -> Program:
    path = program.dir / "config.yaml"
    text = path.read_text()
    for trigger in ("welcome", "milestone", "tier_upgrade", "reengagement"):
        text = text.replace(f"trigger: {trigger},", f"trigger: {trigger}, enabled: false,")
    path.write_text(text + flows)
    return program


def engine_of(program: Program) -> sa.Engine:
    return sa.create_engine(program.url.replace("postgresql://", "postgresql+psycopg://"))


def sends(program: Program) -> list[tuple[str, str, str]]:
    engine = engine_of(program)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(sends_table.c.occurrence_key, sends_table.c.template, sends_table.c.state)
                            .order_by(sends_table.c.id)).all()
    engine.dispose()
    return [tuple(r) for r in rows]


def steps(program: Program) -> list[tuple[str, str]]:
    engine = engine_of(program)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(journey_steps_table.c.step, journey_steps_table.c.outcome)
                            .order_by(journey_steps_table.c.id)).all()
    engine.dispose()
    return [tuple(r) for r in rows]


def once(program: Program, at: str) -> None:
    result = program.run("run", "--once", at=at)
    assert result.exit_code in (0, 4), result.output


def explain(program: Program, member_id: str, at: str) -> str:
    result = program.run("explain", member_id, "--at", at)
    assert result.exit_code == 0, result.output
    return result.output


def event_journey(steps: str, name: str = "after_purchase") -> str:
    """A journey entered on each purchase, with `steps` (indented as under `steps:`)."""
    return (f"  - name: {name}\n    trigger: event\n    event: purchase\n    frequency_cap: false\n"
            f"    steps:\n{steps}")


def check(program: Program, flows: str | None = None, *, exit_code: int, at: str | None = None) -> str:
    """`check`'s output (after writing `flows`, when given), which must end with `exit_code`."""
    if flows is not None:
        journey(program, flows)
    result = program.run("check", at=at)
    assert result.exit_code == exit_code, result.output
    return result.output


def buy_and_tick(program: Program) -> None:
    """Member E1 buys (event `big`, 2,500,000 VND) on 21 November at 12:00; a tick five minutes
    later, and another a day after that."""
    program.load("members", [member("E1", joined_at=JOINED)], at=JOINED)
    program.load("events", [{"member_id": "E1", "type": "purchase", "occurred_at": "2026-11-21T12:00:00+07:00",
                             "amount": 2500000, "currency": "VND", "event_id": "big"}],
                 at="2026-11-21T12:00:00+07:00")
    once(program, "2026-11-21T12:05:00+07:00")
    once(program, "2026-11-22T12:10:00+07:00")

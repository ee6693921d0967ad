"""New data is planned within seconds, not at the next tick: the imports queue the members they
touch (with NOTIFY on PostgreSQL), and a real daemon with a one-hour tick wakes on it and hands
the email to a real SMTP server, once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa

from loyalty_mail import touched
from loyalty_mail.models import touched_members_table

from .flow_program import SECRET, Program, member
from .test_delivery import SmtpSink, configure, start_sink

RECEIPT = """\
  - {name: receipt, trigger: event, event: purchase, where: {amount: {gte: 1000000}},
     template: points_receipt, lateness: 1 day, frequency_cap: false}
"""
WAIT_S = 20


def engine_of(program: Program) -> sa.Engine:
    return sa.create_engine(program.url.replace("postgresql://", "postgresql+psycopg://"))


def queued(program: Program) -> list[int]:
    engine = engine_of(program)
    with engine.connect() as conn:
        refs = conn.execute(sa.select(touched_members_table.c.member_ref).order_by(touched_members_table.c.id)
                            ).scalars().all()
    engine.dispose()
    return list(refs)


def test_imports_queue_the_members_they_touch_and_take_empties_the_queue(program):
    at = "2026-11-20T10:00:00+07:00"
    program.load("members", [member("M1"), member("M2"), member("M3")], at=at)
    assert sorted(queued(program)) == [1, 2, 3]
    engine = engine_of(program)
    assert touched.take(engine) == [1, 2, 3]
    assert queued(program) == []
    program.load("events", [{"member_id": m, "type": "purchase", "amount": 10_000, "currency": "VND",
                             "occurred_at": at, "event_id": f"{m}-{n}"} for m in ("M2", "M3") for n in range(3)],
                 at=at)
    assert sorted(queued(program)) == [2, 3]                       # each touched member once
    program.load("events", [{"member_id": "M2", "type": "purchase", "amount": 10_000, "currency": "VND",
                             "occurred_at": at, "event_id": "M2-0"}], at=at)
    assert sorted(queued(program)) == [2, 3]                       # a repeated event touches nothing
    mark = touched.latest(engine)
    program.load("members", [member("M1", first_name="Mai")], at=at)
    touched.forget(engine, mark)                                   # a tick that covered the older ones
    assert queued(program) == [1]
    engine.dispose()


def test_a_bulk_import_queues_nobody_and_is_left_to_the_tick(program, monkeypatch):
    monkeypatch.setattr(touched, "QUEUE_AT_MOST", 2)
    program.load("members", [member("M1"), member("M2"), member("M3")], at="2026-11-20T10:00:00+07:00")
    assert queued(program) == []


def test_the_sqlite_waiter_sees_a_queued_member(sqlite_program):
    program = sqlite_program
    engine = engine_of(program)
    waiter = touched.waiter_for(engine, 0.05)
    started = time.monotonic()
    assert waiter.wait(0.3) is False and time.monotonic() - started >= 0.3
    program.load("members", [member("M1")], at="2026-11-20T10:00:00+07:00")
    assert waiter.wait(0.3) is True
    assert waiter.wait(0.1) is False          # not taken yet (a standby daemon): no new entry
    assert touched.take(engine) == [1]
    program.load("members", [member("M2")], at="2026-11-20T10:00:00+07:00")
    assert waiter.wait(0.3) is True           # ids are never reused, even after the queue emptied
    engine.dispose()


def _log_has(path: Path, text: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace"):
            return True
        time.sleep(0.05)
    return False


def _arrived(sink: SmtpSink, count: int, seconds: float) -> float | None:
    """Seconds until `count` messages were at the server, or None after `seconds`."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if len(sink.messages) >= count:
            return time.monotonic() - started
        time.sleep(0.02)
    return None


def test_a_daemon_with_a_one_hour_tick_sends_within_seconds_of_an_import(program, tmp_path):
    sink = SmtpSink()
    controller = start_sink(sink)
    log = tmp_path / "daemon.log"
    process = None
    try:
        configure(program, f"  transport: smtp\n  smtp: {{host: 127.0.0.1, port: {sink.port}, security: none}}\n")
        config = (program.dir / "config.yaml").read_text().replace(
            'quiet_hours: {start: "21:00", end: "08:00"}', "quiet_hours: null")
        (program.dir / "config.yaml").write_text(config + RECEIPT)
        now = datetime.now(timezone.utc)
        program.load("members", [member("OLD", locale="en", points=25_000,  # platinum: no upgrade, no milestone
                                        joined_at=(now - timedelta(days=400)).isoformat())], at=now.isoformat())
        env = {**os.environ, "LOYALTY_MAIL_SECRET": SECRET, "PYTHONPATH": str(Path(__file__).parents[1])}
        command = [sys.executable, "-m", "loyalty_mail", "--project", str(program.dir), "--database",
                   program.url, "daemon", "--interval", "3600"]
        with log.open("w") as out:
            process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        assert _log_has(log, "tick at ", 60), log.read_text()      # the first tick is over
        assert sink.messages == []

        # A purchase: the points receipt, long before the next tick.
        bought = datetime.now(timezone.utc)
        program.load("events", [{"member_id": "OLD", "type": "purchase", "amount": 2_000_000, "currency": "VND",
                                 "occurred_at": bought.isoformat(), "event_id": "till-1"}], at=bought.isoformat())
        waited = _arrived(sink, 1, WAIT_S)
        assert waited is not None, (f"no email within {WAIT_S} s; arrived: {[m['Subject'] for m in sink.messages]}\n"
                                    + log.read_text())
        assert sink.messages[0]["Subject"] == "You earned 2,000 points, Lan"

        # A signup: the welcome.
        joined = datetime.now(timezone.utc)
        program.load("members", [member("NEW", joined_at=joined.isoformat())], at=joined.isoformat())
        assert _arrived(sink, 2, WAIT_S) is not None, (
            f"no welcome within {WAIT_S} s; arrived: {[m['Subject'] for m in sink.messages]}\n" + log.read_text())
        assert "new@example.com" in sink.messages[1]["To"]

        # The same event again (a retried request): nothing more.
        program.load("events", [{"member_id": "OLD", "type": "purchase", "amount": 2_000_000, "currency": "VND",
                                 "occurred_at": bought.isoformat(), "event_id": "till-1"}],
                     at=datetime.now(timezone.utc).isoformat())
        time.sleep(2)
        assert len(sink.messages) == 2
        assert len(set(sink.send_ids())) == 2
    finally:
        if process is not None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        controller.stop()
    assert process.returncode == 0, log.read_text()
    assert "daemon stopped after 1 tick(s)" in log.read_text()

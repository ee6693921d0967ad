"""Hand-over: each window of sends is stamped just before the transport gets it, so a dispatcher
that dies leaves only the window in flight in doubt (`unknown`); the rest of its claim is queued
again when its lease expires. Ledger functions on real databases, and kill -9 of a real process."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from loyalty_mail.flows import build_planner, ledger
from loyalty_mail.flows.planner import Plan
from loyalty_mail.models import sends_table
from loyalty_mail.runtime import Runtime

from .flow_program import SECRET, Program, member
from .test_delivery import SmtpSink, configure, start_sink, states

NOW = datetime(2026, 11, 23, 3, 0, tzinfo=timezone.utc)
LEASE = timedelta(minutes=1)


def _recorded(program: Program, count: int, monkeypatch: pytest.MonkeyPatch, at: datetime = NOW) -> sa.Engine:
    """`count` welcome sends planned and recorded at `at`, none delivered."""
    program.load("members", [member(f"H{n:03d}", joined_at=(at - timedelta(hours=1)).isoformat())
                             for n in range(count)], at=at.isoformat())
    monkeypatch.setenv("LOYALTY_MAIL_SECRET", SECRET)
    runtime = Runtime.load(program.dir, database_url=program.url)
    engine = runtime.engine()
    planner = build_planner(runtime.settings, engine.dialect.name)
    planner.plan_in(engine, at, plan=Plan(at, keep=False), on_part=lambda part: ledger.record(engine, part, at))
    return engine


def _rows(engine: sa.Engine) -> dict[int, sa.Row]:
    s = sends_table
    with engine.connect() as conn:
        return {r.id: r for r in conn.execute(sa.select(s.c.id, s.c.state, s.c.attempts, s.c.last_error,
                                                        s.c.claimed_at, s.c.handed_over_at))}


def _claims(claimed: list[dict]) -> list[tuple[int, int]]:
    return [(c["send"]["id"], c["send"]["attempts"]) for c in claimed]


def test_an_expired_lease_queues_what_was_never_handed_over_and_leaves_the_rest_in_doubt(program, monkeypatch):
    engine = _recorded(program, 10, monkeypatch)
    claimed = ledger.claim_due(engine, NOW, 10)
    assert len(claimed) == 10
    window = _claims(claimed)[:4]
    assert ledger.hand_over(engine, window, NOW) == {ref for ref, _ in window}
    # The dispatcher dies here. Within the lease nothing changes; past it, the window is in doubt.
    assert ledger.expire_leases(engine, NOW + LEASE, LEASE, max_attempts=5) == 0
    assert ledger.expire_leases(engine, NOW + LEASE + timedelta(seconds=1), LEASE, max_attempts=5) == 4
    rows = _rows(engine)
    handed = {ref for ref, _ in window}
    assert {rows[ref].state for ref in handed} == {"unknown"}
    assert all("not re-sent automatically" in rows[ref].last_error for ref in handed)
    others = set(rows) - handed
    assert {rows[ref].state for ref in others} == {"retry"}
    assert all(rows[ref].claimed_at is None and rows[ref].handed_over_at is None for ref in others)
    assert all("queued again" in rows[ref].last_error for ref in others)
    # The next dispatcher takes the queued sends, never the ones in doubt.
    again = ledger.claim_due(engine, NOW + LEASE, 100)
    assert {c["send"]["id"] for c in again} == others
    engine.dispose()


def test_a_dispatcher_that_lost_its_lease_hands_nothing_over(program, monkeypatch):
    """A dispatcher stalled past its lease (its sends queued again, then claimed by another) must
    not hand them to the transport when it wakes: the stamp only takes sends its claim holds."""
    engine = _recorded(program, 4, monkeypatch)
    stalled = _claims(ledger.claim_due(engine, NOW, 4))
    ledger.expire_leases(engine, NOW + 2 * LEASE, LEASE)
    assert ledger.hand_over(engine, stalled, NOW + 2 * LEASE) == set()       # queued again: not its own
    rival = _claims(ledger.claim_due(engine, NOW + 2 * LEASE, 4))
    assert {ref for ref, _ in rival} == {ref for ref, _ in stalled}
    assert ledger.hand_over(engine, stalled, NOW + 2 * LEASE) == set()       # claimed by the rival
    assert ledger.hand_over(engine, rival, NOW + 2 * LEASE) == {ref for ref, _ in rival}
    engine.dispose()


def test_a_send_that_keeps_stopping_its_dispatcher_fails_after_max_attempts(program, monkeypatch):
    engine = _recorded(program, 1, monkeypatch)
    at = NOW
    for attempt in (1, 2):
        assert len(ledger.claim_due(engine, at, 1)) == 1
        at += 2 * LEASE
        ledger.expire_leases(engine, at, LEASE, max_attempts=2)
        (row,) = _rows(engine).values()
        assert row.attempts == attempt
    assert row.state == "failed" and "gave up after 2 attempts" in row.last_error
    engine.dispose()


def test_a_retried_send_is_stamped_afresh_by_each_claim(program, monkeypatch):
    engine = _recorded(program, 1, monkeypatch)
    claims = _claims(ledger.claim_due(engine, NOW, 1))
    ledger.hand_over(engine, claims, NOW)
    ledger.finish(engine, [ledger.Outcome(claims[0][0], "retry", "SMTP 451", retry_at=NOW)], NOW)
    ledger.claim_due(engine, NOW, 1)
    (row,) = _rows(engine).values()
    assert row.state == "sending" and row.handed_over_at is None   # not yet handed over this time
    ledger.expire_leases(engine, NOW + 2 * LEASE, LEASE, max_attempts=5)
    assert _rows(engine)[row.id].state == "retry"
    engine.dispose()


# -- kill -9 of a real dispatcher ---------------------------------------------------------------

MEMBERS = 200
BATCH = 100
CONCURRENCY = 4


def _wait(condition, seconds: float, what: str, seen) -> None:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {seconds:g} s for {what}; saw {seen()}")
        time.sleep(0.01)


def _by_state(program: Program) -> dict[str, int]:
    counts: dict[str, int] = {}
    for values in states(program).values():
        counts[values[0]] = counts.get(values[0], 0) + 1
    return counts


@pytest.mark.slow
def test_kill_9_of_a_worker_leaves_only_the_window_in_flight_unknown(sqlite_program, monkeypatch):
    """A worker (a real process) is killed with SIGKILL a third of the way through a batch of 100
    it claimed from a slow relay; once the lease has passed, another worker queues again what the
    first never handed over and delivers it."""
    program = sqlite_program
    sink = SmtpSink(delay=0.05)   # a slow relay: the kill lands with most of the batch still to go
    controller = start_sink(sink)
    try:
        configure(program, f"  transport: smtp\n  smtp: {{host: 127.0.0.1, port: {sink.port}, security: none}}\n"
                           f"  batch_size: {BATCH}\n  concurrency: {CONCURRENCY}\n  lease: 2 seconds\n")
        config = (program.dir / "config.yaml").read_text().replace(
            'quiet_hours: {start: "21:00", end: "08:00"}', "quiet_hours: null")
        (program.dir / "config.yaml").write_text(config)
        _recorded(program, MEMBERS, monkeypatch, at=datetime.now(timezone.utc)).dispose()
        assert _by_state(program) == {"planned": MEMBERS}
        env = {**os.environ, "LOYALTY_MAIL_SECRET": SECRET}
        command = [sys.executable, "-m", "loyalty_mail", "--project", str(program.dir), "--database",
                   program.url, "worker", "--interval", "1"]
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _wait(lambda: len(sink.messages) >= 30 or process.poll() is not None, 120,
                  "30 messages at the sink", lambda: (len(sink.messages), process.poll()))
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
        assert process.returncode == -signal.SIGKILL, process.stderr.read() if process.stderr else ""
        # Killed mid-batch: part of its claim was never handed over.
        s = sends_table
        engine = sa.create_engine(program.url)
        with engine.connect() as conn:
            waiting = conn.execute(sa.select(sa.func.count()).where(
                s.c.state == "sending", s.c.handed_over_at.is_(None))).scalar_one()
        engine.dispose()
        assert waiting > 0, _by_state(program)
        time.sleep(2.5)   # past the lease
        again = subprocess.run(command + ["--max-ticks", "1"], env=env, capture_output=True, text=True,
                               timeout=120)
        assert again.returncode == 0, again.stderr
        ledger_rows = states(program)   # member -> (state, attempts, last_error, scheduled_for, send_id, ...)
        received = sink.send_ids()
        assert len(received) == len(set(received)), "a member got the email twice"
        by_state = _by_state(program)
        assert set(by_state) <= {"sent", "unknown"} and sum(by_state.values()) == MEMBERS, by_state
        assert by_state.get("unknown", 0) <= CONCURRENCY, by_state
        sent = {v[4] for v in ledger_rows.values() if v[0] == "sent"}
        unknown = {v[4] for v in ledger_rows.values() if v[0] == "unknown"}
        assert sent <= set(received)                              # every "sent" really arrived, once
        assert set(received) <= sent | unknown
        assert {v[4] for v in ledger_rows.values()} - set(received) <= unknown   # only those in doubt missing
        assert all("not re-sent automatically" in v[2] for v in ledger_rows.values() if v[0] == "unknown")
    finally:
        controller.stop()


def test_a_send_handed_back_by_a_stopping_dispatcher_keeps_its_attempts(program, monkeypatch, tmp_path):
    """SIGTERM mid-batch: the sends not yet rendered are queued again, and their claim is not a
    delivery attempt; a send stopped more often than `sending.max_attempts` is still delivered."""
    from loyalty_mail.flows.delivery import TickReport, deliver_due
    from loyalty_mail.transports import DirectoryTransport

    engine = _recorded(program, 6, monkeypatch)
    runtime = Runtime.load(program.dir, database_url=program.url)
    sending = runtime.settings.sending
    renderer, transport = runtime.renderer(), DirectoryTransport(tmp_path / "outbox")
    def stop_after(renders: int):  # noqa: ANN202 - should_stop: asked before the batch, then per render
        asked = itertools.count()
        return lambda: next(asked) > renders

    report = TickReport(NOW, Plan(NOW))
    deliver_due(engine, renderer, transport, NOW, report, sending, stop_after(2))
    rows = _rows(engine)
    assert sorted(r.state for r in rows.values()) == ["retry"] * 4 + ["sent"] * 2
    assert {r.attempts for r in rows.values() if r.state == "sent"} == {1}
    assert {r.attempts for r in rows.values() if r.state == "retry"} == {0}
    assert all("stopped before rendering" in r.last_error for r in rows.values() if r.state == "retry")
    assert report.retrying == 4 and report.delivered == 2
    # Stopped before its first render again and again, more often than max_attempts: never failed.
    for _ in range(sending.max_attempts + 1):
        deliver_due(engine, renderer, transport, NOW, TickReport(NOW, Plan(NOW)), sending, stop_after(0))
    assert sorted((r.state, r.attempts) for r in _rows(engine).values()) == [("retry", 0)] * 4 + [("sent", 1)] * 2
    report = TickReport(NOW, Plan(NOW))
    deliver_due(engine, renderer, transport, NOW, report, sending)
    assert report.delivered == 4
    assert sorted((r.state, r.attempts) for r in _rows(engine).values()) == [("sent", 1)] * 6
    runtime.close()
    engine.dispose()

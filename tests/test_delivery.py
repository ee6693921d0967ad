"""Delivery: SMTP against a real aiosmtpd server, SendGrid through the official client against a
local stand-in that validates every body with SendGrid's schema, retries, suppression, crashes."""

from __future__ import annotations

import email
import email.policy
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jsonschema
import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from click.testing import CliRunner

from loyalty_mail.cli import cli
from loyalty_mail.models import sends_table

from .conftest import FIXTURES
from .flow_program import SECRET, Program, member

SCHEMA = json.loads((FIXTURES / "sendgrid" / "mail_send_schema.patched.json").read_text())
AT = "2026-11-23T10:00:00+07:00"
JOINED = "2026-11-23T09:00:00+07:00"


# -- real servers -----------------------------------------------------------------------------

class SmtpSink:
    """aiosmtpd handler: keeps every message; refuses recipients by local part (`bounce`: 550,
    `later`: 451); `delay` slows each DATA down; `hold_at=N` keeps the answer to the Nth message
    until `release` is set (to catch a dispatcher mid-batch: `held` is set when it arrives)."""

    def __init__(self, delay: float = 0.0, hold_at: int | None = None) -> None:
        self.messages: list[EmailMessage] = []
        self.sessions: set[int] = set()
        self.delay = delay
        self.in_data = self.peak_in_data = 0  # messages being accepted at once
        self.hold_at = hold_at
        self.held, self.release = threading.Event(), threading.Event()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        local = address.split("@")[0]
        if local == "bounce":
            return "550 5.1.1 no such user"
        if local == "later":
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        import asyncio
        self.in_data += 1
        self.peak_in_data = max(self.peak_in_data, self.in_data)
        if self.delay:  # slept in a thread: a test may have frozen the clock asyncio.sleep reads
            await asyncio.get_running_loop().run_in_executor(None, time.sleep, self.delay)
        self.in_data -= 1
        self.sessions.add(id(session))
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        if len(self.messages) == self.hold_at:
            self.held.set()
            await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 60)
        return "250 Message accepted"

    def send_ids(self) -> list[str]:
        return [m["X-Loyalty-Mail-Send-Id"] for m in self.messages]


def free_port() -> int:
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_sink(sink: SmtpSink) -> Controller:
    sink.port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=sink.port)
    controller.start()
    return controller


@pytest.fixture
def smtp_sink():
    sink = SmtpSink()
    controller = start_sink(sink)
    yield sink
    controller.stop()


class SendGridStandIn(BaseHTTPRequestHandler):
    """POST /v3/mail/send: 401 without the key, 400 for a body SendGrid's schema rejects, else
    the status named by the recipient's local part (`s429`, `s500`, `s413`...), default 202.
    HTTP/1.1 with kept-alive connections, as SendGrid's API; `connections` counts them."""

    protocol_version = "HTTP/1.1"
    requests: list[dict] = []
    connections: list[int] = []

    def setup(self):
        super().setup()
        type(self).connections.append(1)

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path != "/v3/mail/send":
            return self._answer(404, {"errors": [{"message": "not found"}]})
        if self.headers.get("Authorization") != "Bearer SG.test-key":
            return self._answer(401, {"errors": [{"message": "The provided authorization grant is invalid"}]})
        payload = json.loads(body)
        try:
            jsonschema.validate(payload, SCHEMA)
        except jsonschema.ValidationError as exc:
            return self._answer(400, {"errors": [{"message": f"schema: {exc.message}"}]})
        type(self).requests.append(payload)
        local = payload["personalizations"][0]["to"][0]["email"].split("@")[0]
        status = int(local[1:]) if local.startswith("s") and local[1:].isdigit() else 202
        headers = {"Retry-After": "120"} if status == 429 else {}
        if status == 202:
            return self._answer(202, None, {"X-Message-Id": f"sg-{len(type(self).requests)}"})
        return self._answer(status, {"errors": [{"message": f"answer {status} on demand"}]}, headers)

    def _answer(self, status, body, headers=None):
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def sendgrid_api():
    SendGridStandIn.requests, SendGridStandIn.connections = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), SendGridStandIn)
    server.daemon_threads = True  # a kept-alive connection's thread must not hold up shutdown
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", SendGridStandIn.requests
    server.shutdown()


def configure(program: Program, sending: str) -> None:
    config = (program.dir / "config.yaml").read_text().replace(
        "sending:\n  directory: outbox\n", f"sending:\n  directory: outbox\n{sending}")
    (program.dir / "config.yaml").write_text(config)


def states(program: Program) -> dict[str, tuple]:
    engine = sa.create_engine(program.url.replace("postgresql://", "postgresql+psycopg://"))
    from loyalty_mail.models import members_table as m
    s = sends_table
    with engine.connect() as conn:
        rows = conn.execute(sa.select(m.c.member_id, s.c.state, s.c.attempts, s.c.last_error, s.c.scheduled_for,
                                      s.c.send_id, s.c.provider_id).join(m, m.c.id == s.c.member_ref)).all()
    engine.dispose()
    return {r[0]: tuple(r[1:]) for r in rows}


# -- SMTP ---------------------------------------------------------------------------------------

def test_smtp_delivers_over_one_connection_and_sorts_4xx_from_5xx(program, smtp_sink):
    configure(program, f"  transport: smtp\n  smtp: {{host: 127.0.0.1, port: {smtp_sink.port}, security: none}}\n"
                       "  max_attempts: 2\n  retry_base: 10 minutes\n  concurrency: 1\n")
    people = [member(f"M{n}", joined_at=JOINED) for n in range(6)]
    people += [dict(member("BOUNCE", joined_at=JOINED), email="bounce@example.com"),
               dict(member("LATER", joined_at=JOINED), email="later@example.com")]
    program.load("members", people, at=AT)
    result = program.run("run", "--once", at=AT)
    assert result.exit_code == 1, result.output            # one permanent failure: exit 1, batch went on
    assert "delivered 6, failed 1, to retry 1" in result.stdout
    assert sorted(smtp_sink.send_ids()) == sorted(states(program)[f"M{n}"][4] for n in range(6))
    assert len(smtp_sink.sessions) == 1                     # one connection for the whole batch
    seen = states(program)
    assert seen["BOUNCE"][0] == "failed" and "SMTP 550" in seen["BOUNCE"][2]
    assert seen["LATER"][0] == "retry" and "SMTP 451" in seen["LATER"][2]
    first_retry = seen["LATER"][3]
    assert datetime.fromisoformat(AT) + timedelta(minutes=5) <= first_retry <= datetime.fromisoformat(AT) + timedelta(minutes=10)
    # Not due yet: nothing happens. Due: the second attempt is the last (max_attempts 2).
    program.run("run", "--once", at=AT)
    assert states(program)["LATER"][1] == 1
    later = (first_retry + timedelta(seconds=1)).isoformat()
    program.run("run", "--once", at=later)
    assert states(program)["LATER"][0] == "failed" and "gave up after 2 attempts" in states(program)["LATER"][2]
    message = smtp_sink.messages[0]
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message.get_content_type() == "multipart/alternative"


def test_smtp_spreads_a_batch_over_concurrent_reused_connections(program, smtp_sink):
    smtp_sink.delay = 0.2  # the relay takes its time over each message, as real ones queue to disk
    configure(program, f"  transport: smtp\n  smtp: {{host: 127.0.0.1, port: {smtp_sink.port}, security: none}}\n"
                       "  concurrency: 3\n")
    program.load("members", [member(f"M{n}", joined_at=JOINED) for n in range(12)], at=AT)
    result = program.run("run", "--once", at=AT)
    assert result.exit_code == 0, result.output
    assert "delivered 12" in result.stdout
    assert sorted(smtp_sink.send_ids()) == sorted(states(program)[f"M{n}"][4] for n in range(12))
    assert len(smtp_sink.sessions) == 3                     # three connections, each carrying four
    assert smtp_sink.peak_in_data == 3                      # ... at the same time, never more


def test_unsubscribe_between_planning_and_sending_wins(program, smtp_sink):
    configure(program, f"  transport: smtp\n  smtp: {{host: 127.0.0.1, port: {smtp_sink.port}, security: none}}\n")
    program.load("members", [member("M1", joined_at="2026-11-23T21:30:00+07:00")], at="2026-11-23T21:30:00+07:00")
    # Planned at 21:30 local, deferred by quiet hours to 08:00; the member unsubscribes at 23:00.
    program.run("run", "--once", at="2026-11-23T21:30:00+07:00")
    assert states(program)["M1"][0] == "planned"
    program.load("members", [member("M1", subscribed=False)], at="2026-11-23T23:00:00+07:00")
    program.run("run", "--once", at="2026-11-24T08:05:00+07:00")
    assert states(program)["M1"][0] == "suppressed" and smtp_sink.messages == []


def test_suppression_list_cli_and_planner(program, smtp_sink):
    configure(program, f"  transport: smtp\n  smtp: {{host: 127.0.0.1, port: {smtp_sink.port}, security: none}}\n")
    program.load("members", [member("M1", joined_at=JOINED), member("M2", joined_at=JOINED)], at=AT)
    added = program.run("suppress", "add", "M1@Example.com", "--reason", "hard_bounce", at=AT)
    assert added.exit_code == 0 and "suppressed 1 address(es)" in added.stdout
    assert "1 already were" in program.run("suppress", "add", "m1@example.com", at=AT).stdout
    listed = json.loads(program.run("suppress", "list", "--format", "json").stdout)
    assert [(r["email"], r["reason"]) for r in listed] == [("m1@example.com", "hard_bounce")]
    program.run("run", "--once", at=AT)
    assert states(program)["M1"][0] == "suppressed" and states(program)["M2"][0] == "sent"
    assert len(smtp_sink.messages) == 1
    assert program.run("suppress", "remove", "m1@example.com").exit_code == 0
    gone = program.run("suppress", "remove", "m1@example.com")
    assert gone.exit_code == 1 and "not on the suppression list" in gone.stderr
    bad = program.run("suppress", "add", "not-an-address")
    assert bad.exit_code == 1 and "is not an email address" in bad.stderr


def test_send_test_is_marked_untracked_and_unrecorded(program, smtp_sink):
    configure(program, f"  transport: smtp\n  smtp: {{host: 127.0.0.1, port: {smtp_sink.port}, security: none}}\n")
    result = program.run("send-test", "welcome", "--to", "me@example.com", "--locale", "en")
    assert result.exit_code == 0, result.output
    [message] = smtp_sink.messages
    assert message["X-Loyalty-Mail-Test"] == "yes" and message["To"] == "Lan Trần <me@example.com>"
    html = message.get_body(("html",)).get_content()
    assert "/c/" not in html and "/o/" not in html
    assert states(program) == {}


def test_send_test_refuses_two_addresses_and_an_unknown_locale(program, smtp_sink):
    configure(program, f"  transport: smtp\n  smtp: {{host: 127.0.0.1, port: {smtp_sink.port}, security: none}}\n")
    two = program.run("send-test", "welcome", "--to", "me@example.com,evil@example.com")
    assert two.exit_code == 1 and "'me@example.com,evil@example.com' is not an email address" in two.stderr
    locale = program.run("send-test", "welcome", "--to", "me@example.com", "--locale", "xx")
    assert locale.exit_code == 1 and "locale 'xx' is not one of the program's locales" in locale.stderr
    assert smtp_sink.messages == []


def test_outbox_status_and_operator_retry(program, smtp_sink):
    configure(program, f"  transport: smtp\n  smtp: {{host: 127.0.0.1, port: {smtp_sink.port}, security: none}}\n")
    program.load("members", [dict(member("B", joined_at=JOINED), email="bounce@example.com"),
                             member("OK", joined_at=JOINED)], at=AT)
    program.run("run", "--once", at=AT)
    status = json.loads(program.run("outbox", "status", "--format", "json", at=AT).stdout)
    assert {"flow": "welcome", "state": "failed", "count": 1} in status["counts"]
    assert {"flow": "welcome", "state": "sent", "count": 1} in status["counts"]
    [failure] = status["recent_failures"]
    assert failure["member_id"] == "B" and "SMTP 550" in failure["last_error"]
    table = program.run("outbox", "status", at=AT)
    assert "Recent failures" in table.stdout
    assert "queued 1 failed send(s) again" in program.run("outbox", "retry", at=AT).stdout
    assert states(program)["B"][0] == "retry"


# -- SendGrid -------------------------------------------------------------------------------------

def test_sendgrid_requests_validate_and_answers_map_to_states(program, sendgrid_api, monkeypatch):
    host, requests = sendgrid_api
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.test-key")
    configure(program, f"  transport: sendgrid\n  sendgrid: {{api_key: '${{SENDGRID_API_KEY}}', host: '{host}'}}\n")
    people = [member("OK1", joined_at=JOINED), member("OK2", joined_at=JOINED)]
    people += [dict(member(f"S{code}", joined_at=JOINED), email=f"s{code}@example.com")
               for code in (400, 413, 429, 500, 503)]
    program.load("members", people, at=AT)
    result = CliRunner(env={"LOYALTY_MAIL_SECRET": SECRET, "SENDGRID_API_KEY": "SG.test-key"}).invoke(
        cli, ["--project", str(program.dir), "--database", program.url, "run", "--once", "--at", AT])
    assert "delivered 2, failed 2, to retry 3" in result.stdout, result.output
    seen = states(program)
    assert seen["OK1"][0] == "sent" and seen["OK1"][5].startswith("sg-")
    assert seen["S400"][0] == "failed" and "SendGrid HTTP 400: answer 400 on demand" in seen["S400"][2]
    assert seen["S413"][0] == "failed"
    assert seen["S429"][0] == "retry"
    assert seen["S429"][3] >= datetime.fromisoformat(AT) + timedelta(seconds=120)   # Retry-After honoured
    assert seen["S500"][0] == "retry" and seen["S503"][0] == "retry"
    assert len(requests) == 7                                   # every body passed SendGrid's schema
    assert len(SendGridStandIn.connections) <= 4                # kept alive: one per worker at most
    ok = next(r for r in requests if r["personalizations"][0]["to"][0]["email"] == "ok1@example.com")
    assert ok["custom_args"] == {"send_id": seen["OK1"][4]}
    assert ok["categories"] == ["welcome"]
    assert ok["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert ok["tracking_settings"]["click_tracking"]["enable"] is False
    assert [c["type"] for c in ok["content"]] == ["text/plain", "text/html"]


class ClosesIdleConnections(ThreadingHTTPServer):
    """A server that closes its kept-alive connections when told (`close_idle()`), as a server
    does with connections idle past its timeout; `closed` counts the connections it has closed."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.accepted: list[socket.socket] = []
        self.closed: list[int] = []

    def process_request(self, request, client_address) -> None:
        self.accepted.append(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:
        super().shutdown_request(request)
        self.closed.append(1)

    def close_idle(self) -> None:
        for connection in self.accepted:
            try:
                connection.shutdown(socket.SHUT_RDWR)   # its handler reads end-of-file and finishes
            except OSError:
                pass                                    # already closed


def test_sendgrid_connections_are_reused_and_one_closed_while_idle_is_replaced():
    from loyalty_mail.config import SendGridSettings
    from loyalty_mail.message import Address, RenderedEmail
    from loyalty_mail.transports.sendgrid_api import SendGridTransport

    SendGridStandIn.requests, SendGridStandIn.connections = [], []
    server = ClosesIdleConnections(("127.0.0.1", 0), SendGridStandIn)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = f"http://127.0.0.1:{server.server_address[1]}"
    transport = SendGridTransport(SendGridSettings(api_key="SG.test-key", host=host), concurrency=2)
    batch = [RenderedEmail(send_id=f"s{n}", sender=Address("hello@senvang.example", "Sen Vàng"),
                           to=Address(f"m{n}@example.com", "Lan"), subject="Chào", html="<p>Chào</p>",
                           text="Chào\n") for n in range(10)]
    try:
        first = transport.send(batch)
        opened = len(SendGridStandIn.connections)
        server.close_idle()
        deadline = time.monotonic() + 30
        while len(server.closed) < opened:
            assert time.monotonic() < deadline, f"{len(server.closed)} of {opened} idle connections closed in 30 s"
            time.sleep(0.05)
        second = transport.send(batch)
    finally:
        transport.close()
        server.shutdown()
    assert [r.outcome for r in first + second] == ["sent"] * 20
    assert len(SendGridStandIn.requests) == 20                      # none lost, none sent twice
    assert 1 <= opened <= 2                                         # two per batch at most, not 10
    assert opened < len(SendGridStandIn.connections) <= opened + 2  # the closed ones were replaced


def test_sendgrid_bad_key_fails_each_message_with_the_reason(program, sendgrid_api, monkeypatch):
    host, _ = sendgrid_api
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.wrong")
    configure(program, f"  transport: sendgrid\n  sendgrid: {{api_key: '${{SENDGRID_API_KEY}}', host: '{host}'}}\n")
    program.load("members", [member("M1", joined_at=JOINED)], at=AT)
    program.run("run", "--once", at=AT)
    assert states(program)["M1"][0] == "failed" and "HTTP 401" in states(program)["M1"][2]


def test_a_provider_that_keeps_failing_pauses_dispatch(program, sendgrid_api, monkeypatch):
    host, requests = sendgrid_api
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.test-key")
    configure(program, f"  transport: sendgrid\n  sendgrid: {{api_key: '${{SENDGRID_API_KEY}}', host: '{host}'}}\n"
                       "  pause_after: 3\n  batch_size: 3\n  concurrency: 1\n")
    program.load("members", [dict(member(f"M{n}", joined_at=JOINED), email=f"s500@example{n}.com")
                             for n in range(9)], at=AT)
    result = program.run("run", "--once", at=AT)
    assert "pausing dispatch until the next tick: 3 transient failures in a row" in result.stderr
    assert len(requests) == 3
    assert sorted(s[0] for s in states(program).values()) == ["planned"] * 6 + ["retry"] * 3


# -- crash safety ------------------------------------------------------------------------------

@pytest.mark.slow
def test_kill_9_mid_batch_loses_nothing_and_sends_nothing_twice(sqlite_program):
    program = sqlite_program
    sink = SmtpSink(hold_at=110)   # mid-batch (batches of 25): the 110th message waits for its answer
    controller = start_sink(sink)
    port = sink.port
    try:
        configure(program, f"  transport: smtp\n  smtp: {{host: 127.0.0.1, port: {port}, security: none}}\n"
                           "  batch_size: 25\n  lease: 1 second\n")
        config = (program.dir / "config.yaml").read_text().replace(
            'quiet_hours: {start: "21:00", end: "08:00"}', "quiet_hours: null")
        (program.dir / "config.yaml").write_text(config)
        now = datetime.now(timezone.utc)
        program.load("members", [member(f"K{n:03d}", joined_at=(now - timedelta(hours=1)).isoformat())
                                 for n in range(300)], at=now.isoformat())
        env = {**os.environ, "LOYALTY_MAIL_SECRET": SECRET}
        command = [sys.executable, "-m", "loyalty_mail", "--project", str(program.dir), "--database",
                   program.url, "run", "--once"]
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        arrived = sink.held.wait(timeout=120)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        sink.release.set()
        killed_at = len(sink.messages)
        assert arrived, f"{killed_at} of 110 messages arrived in 120 s"
        assert 110 <= killed_at < 300
        time.sleep(1.5)   # past the lease
        again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stderr
        received = sink.send_ids()
        assert len(received) == len(set(received))                  # nothing delivered twice
        ledger = states(program)
        by_state: dict[str, int] = {}
        for values in ledger.values():
            by_state[values[0]] = by_state.get(values[0], 0) + 1
        assert set(by_state) <= {"sent", "unknown"} and sum(by_state.values()) == 300
        assert 0 < by_state.get("unknown", 0) <= 25                 # at most the batch in hand
        sent_ids = {v[4] for v in ledger.values() if v[0] == "sent"}
        assert sent_ids <= set(received)                            # every "sent" really arrived
        unknown = [v for v in ledger.values() if v[0] == "unknown"]
        assert all("not re-sent automatically" in v[2] for v in unknown)
        assert len(received) >= by_state["sent"]
    finally:
        controller.stop()



def test_a_tick_that_delivers_longer_than_the_lease_is_not_taken_for_dead(sqlite_program, monkeypatch):
    """One tick drains 100 sends in batches of 10 while its clock runs 20 s per reading, far past
    the 1-minute lease; before every hand-over a rival dispatcher expires leases, as its own tick
    would. Claims carry the clock's time of each batch, so no live batch is taken for abandoned."""
    from loyalty_mail.flows import build_planner, run_once
    from loyalty_mail.flows import ledger
    from loyalty_mail.runtime import Runtime
    from loyalty_mail.transports import DirectoryTransport

    program = sqlite_program
    configure(program, "  batch_size: 10\n  lease: 1 minute\n")
    config = (program.dir / "config.yaml").read_text().replace(
        'quiet_hours: {start: "21:00", end: "08:00"}', "quiet_hours: null")
    (program.dir / "config.yaml").write_text(config)
    start = datetime(2026, 11, 23, 3, 0, tzinfo=timezone.utc)
    program.load("members", [member(f"L{n:03d}", joined_at=(start - timedelta(hours=1)).isoformat())
                             for n in range(100)], at=start.isoformat())
    monkeypatch.setenv("LOYALTY_MAIL_SECRET", SECRET)
    readings = iter(start + timedelta(seconds=20 * n) for n in range(10_000))
    latest = [start]

    def clock() -> datetime:
        latest[0] = next(readings)
        return latest[0]

    runtime = Runtime.load(program.dir, database_url=program.url, clock=clock)
    engine = runtime.engine()
    expired: list[int] = []

    class BesideARival(DirectoryTransport):
        def send(self, batch):
            expired.append(ledger.expire_leases(engine, latest[0], runtime.settings.sending.lease))
            return super().send(batch)

    planner = build_planner(runtime.settings, engine.dialect.name)
    report = run_once(engine, planner, runtime.renderer(), BesideARival(program.dir / "outbox"), start,
                      clock=clock)
    runtime.close()
    assert latest[0] - start > timedelta(minutes=5)      # the tick outlived the lease many times over
    assert len(expired) == 30 and sum(expired) == 0 and report.unknown == 0  # windows of 4, 4, 2
    assert report.delivered == 100
    assert sorted(v[0] for v in states(program).values()) == ["sent"] * 100

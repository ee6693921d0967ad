"""The bounce mailbox: real delivery status notifications and feedback-loop complaints
(tests/fixtures/bounces/, from sisimai's public set of bounce emails) put into a real IMAP server
(pymap, pure Python, on loopback) and read by `loyalty-mail bounces poll` as a user runs it.

The samples are about mail their senders sent, so before a sample goes into the mailbox the
Message-ID of the original message it encloses is replaced by the Message-ID of one of the emails
the test sent (or our send-id header is added to it); everything else is as published.
"""

from __future__ import annotations

import email
import imaplib
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from loyalty_mail.models import suppressions_table, tracking_events_table
from loyalty_mail.tracking.bounce_reports import Unreadable, read_report

from .conftest import FIXTURES
from .flow_program import SECRET, Program, member

SAMPLES = FIXTURES / "bounces"
USER, PASSWORD, FOLDER = "bounces@test.example", "imap-test-password-5d1e", "Bounces"
NOW = datetime(2026, 11, 23, 3, 0, tzinfo=timezone.utc)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ImapServer:
    """pymap's in-memory IMAP server in its own process, on a loopback port."""

    def __init__(self, cert: Path | None = None, key: Path | None = None) -> None:
        self.port, self.cert = free_port(), cert
        tls = ["--cert", str(cert), "--key", str(key)] if cert and key else ["--no-tls"]
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from pymap.main import main; main()", "--host", "127.0.0.1",
             "--port", str(self.port), *tls, "--no-service", "admin", "dict", "--demo-data",
             "--demo-user", USER, "--demo-password", PASSWORD],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"pymap did not start: {self.process.stderr.read().decode()[-2000:]}")
                time.sleep(0.1)
        with self.session() as imap:
            imap.create(FOLDER)

    def session(self) -> imaplib.IMAP4:
        imap = imaplib.IMAP4("127.0.0.1", self.port, timeout=10)
        if self.cert:
            imap.starttls(ssl.create_default_context(cafile=str(self.cert)))
        imap.login(USER, PASSWORD)
        return imap

    def deliver(self, raw: bytes) -> None:
        with self.session() as imap:
            status, _ = imap.append(FOLDER, None, None, raw)
            assert status == "OK"

    def unseen_count(self) -> int:
        with self.session() as imap:
            imap.select(FOLDER, readonly=True)
            _, answer = imap.uid("SEARCH", "UNSEEN")
            return len(answer[0].split())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def imap() -> Iterator[ImapServer]:
    server = ImapServer()
    yield server
    server.stop()


def configure(program: Program, imap: ImapServer, monkeypatch: pytest.MonkeyPatch, limit: int = 3,
              tls: str = "false") -> None:
    monkeypatch.setenv("BOUNCES_IMAP_PASSWORD", PASSWORD)
    config = program.dir / "config.yaml"
    config.write_text(config.read_text().replace("sending:\n", f"""sending:
  bounces:
    imap: 127.0.0.1
    port: {imap.port}
    tls: {tls}
    user: {USER}
    password: ${{BOUNCES_IMAP_PASSWORD}}
    folder: {FOLDER}
    soft_bounce_limit: {limit}
    soft_bounce_window: 30 days
""", 1))


def sent(program: Program) -> dict[str, email.message.Message]:
    """The emails in the outbox, by recipient."""
    messages = [email.message_from_bytes(p.read_bytes()) for p in (program.dir / "outbox").glob("*.eml")]
    return {str(m["To"]).rsplit("<", 1)[-1].strip(">").lower(): m for m in messages}


def addressed(sample: str, about: email.message.Message, *, by_header: bool = False) -> bytes:
    """The published sample, its enclosed original made ours: its Message-ID replaced by that of
    `about` (or, `by_header`, our send-id header added beside it)."""
    raw = (SAMPLES / sample).read_bytes()
    report = email.message_from_bytes(raw)
    [original_id] = [i for p in report.walk() for i in _enclosed_ids(p)]
    assert raw.count(original_id.encode()) == 1, "the original's Message-ID appears once in the sample"
    ours = (f"{original_id}\nX-Loyalty-Mail-Send-Id: {about['X-Loyalty-Mail-Send-Id']}" if by_header
            else str(about["Message-ID"]))
    return raw.replace(original_id.encode(), ours.encode())


def _enclosed_ids(part: email.message.Message) -> list[str]:
    if part.get_content_type() == "message/rfc822":
        return [str(m["Message-ID"]) for m in part.get_payload() if m["Message-ID"]]
    if part.get_content_type() == "text/rfc822-headers":
        return [str(email.message_from_string(part.get_payload())["Message-ID"])]
    return []


def poll(program: Program, *args: str, at: str = "2026-11-23T10:00:00+07:00") -> dict:
    result = program.run("bounces", "poll", "--format", "json", *args, at=at)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def table(program: Program, table: sa.Table) -> list[dict]:
    engine = sa.create_engine(program.url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(sa.select(table).order_by(table.c.id)).mappings()]
    engine.dispose()
    return rows


def send_welcomes(program: Program, *ids: str) -> dict[str, email.message.Message]:
    at = "2026-11-23T10:00:00+07:00"
    program.load("members", [member(i, joined_at="2026-11-23T09:00:00+07:00") for i in ids], at=at)
    assert program.run("run", "--once", "--flow", "welcome", at=at).exit_code == 0
    return sent(program)


def test_one_poll_records_bounces_and_complaints_and_leaves_the_rest(program, imap, monkeypatch):
    configure(program, imap, monkeypatch)
    ours = send_welcomes(program, "M1", "M2", "M3", "M4")
    broken = addressed("lhost-postfix-14.eml", ours["m4@example.com"]).replace(b"Status: 5.1.1", b"Status: bounced")
    mailbox = [
        broken,                                                               # uid 1: unreadable
        addressed("lhost-postfix-14.eml", ours["m1@example.com"]),            # hard bounce, 5.1.1
        addressed("arf-14.eml", ours["m2@example.com"]),                      # complaint (abuse)
        addressed("lhost-sendmail-29.eml", ours["m3@example.com"]),           # delayed, 4.5.0
        (SAMPLES / "rfc3464-01.eml").read_bytes(),                            # a bounce of someone else's mail
        (SAMPLES / "is-not-bounce-01.eml").read_bytes(),                      # not a report at all
    ]
    for raw in mailbox:
        imap.deliver(raw)

    first = poll(program)
    by_outcome = [(m["outcome"], m["kind"], m["email"], m["suppressed"]) for m in first["messages"]]
    assert by_outcome == [
        ("unreadable", None, None, False),
        ("recorded", "bounce", "m1@example.com", True),
        ("recorded", "spam_complaint", "m2@example.com", True),
        ("recorded", "deferred", "m3@example.com", False),
        ("unmatched", "bounce", None, False),
        ("unreadable", None, None, False),
    ]
    reasons = [m["reason"] for m in first["messages"]]
    assert reasons[0] == "Status 'bounced' is not an RFC 3463 code such as 5.1.1"
    assert reasons[3] == "1 of 3 soft bounces"
    assert reasons[4] == ("the report holds neither an X-Loyalty-Mail-Send-Id nor a Message-ID of ours "
                          "(the original message or its headers are not enclosed)")
    assert reasons[5] == "not a delivery status or feedback report (Content-Type text/plain)"
    assert (first["hard_bounces"], first["soft_bounces"], first["complaints"], first["suppressed"],
            first["left_alone"]) == (1, 1, 1, 2, 3)

    events = [(e["send_id"], e["kind"], e["source"]) for e in table(program, tracking_events_table)]
    send_id = {to: str(m["X-Loyalty-Mail-Send-Id"]) for to, m in ours.items()}
    assert events == [(send_id["m1@example.com"], "bounce", "mailbox"),
                      (send_id["m2@example.com"], "spam_complaint", "mailbox"),
                      (send_id["m3@example.com"], "deferred", "mailbox")]
    suppressed = {s["email"]: (s["reason"], s["detail"]) for s in table(program, suppressions_table)}
    assert suppressed == {"m1@example.com": ("hard_bounce", "bounce mailbox bounce"),
                          "m2@example.com": ("spam_complaint", "bounce mailbox spam_complaint")}
    # the three left alone are set aside: pymap keeps no keywords, so they are flagged \Seen
    assert imap.unseen_count() == 0

    again = poll(program)
    assert again["messages"] == []
    assert len(table(program, tracking_events_table)) == 3 and len(table(program, suppressions_table)) == 2

    report = json.loads(program.run("report", "--since", "2026-11-01", "--until", "2026-11-24", "--by", "none",
                                    "--format", "json", at="2026-11-23T12:00:00+07:00").stdout)
    [row] = report["rows"]
    assert (row["sent"], row["bounced"], row["delivered"], row["spam"]) == (4, 1, 3, 1)


def test_a_report_stored_before_a_crash_is_not_counted_again(program, imap, monkeypatch):
    """The event is committed before the message is flagged: a poll that dies between the two
    leaves the message unseen, and the next poll flags it without recording it twice."""
    configure(program, imap, monkeypatch)
    ours = send_welcomes(program, "M1")
    raw = addressed("lhost-postfix-14.eml", ours["m1@example.com"])
    imap.deliver(raw)
    imap.deliver(raw)   # the same report twice: the second one is the re-read after a crash
    outcomes = [m["outcome"] for m in poll(program)["messages"]]
    assert outcomes == ["recorded", "already"]
    assert len(table(program, tracking_events_table)) == 1
    assert imap.unseen_count() == 0


def test_soft_bounces_suppress_at_the_limit_counting_each_send_once(program, imap, monkeypatch):
    configure(program, imap, monkeypatch, limit=2)
    program.load("members", [member("M1", joined_at="2026-11-20T09:00:00+07:00")], at="2026-11-20T10:00:00+07:00")
    assert program.run("run", "--once", at="2026-11-20T10:00:00+07:00").exit_code == 0
    welcome = sent(program)["m1@example.com"]
    imap.deliver(addressed("lhost-sendmail-29.eml", welcome))                   # delayed
    imap.deliver(addressed("rfc3464-07.eml", welcome, by_header=True))          # delayed again, same send
    first = poll(program, at="2026-11-20T18:00:00+07:00")["messages"]
    assert [(m["outcome"], m["reason"], m["suppressed"]) for m in first] == [
        ("recorded", "1 of 2 soft bounces", False), ("recorded", "1 of 2 soft bounces", False)]

    program.load("events", [{"member_id": "M1", "type": "points_earned", "points": 1500, "event_id": "e1",
                             "occurred_at": "2026-11-21T09:00:00+07:00"}], at="2026-11-21T10:00:00+07:00")
    (program.dir / "outbox" / f"{welcome['X-Loyalty-Mail-Send-Id']}.eml").unlink()
    assert program.run("run", "--once", at="2026-11-21T10:00:00+07:00").exit_code == 0
    second = sent(program)["m1@example.com"]
    assert second["X-Loyalty-Mail-Send-Id"] != welcome["X-Loyalty-Mail-Send-Id"]
    imap.deliver(addressed("lhost-sendmail-29.eml", second).replace(b"t8CMLrXO030573@", b"t8CMLrXO030574@"))
    [third] = poll(program, at="2026-11-21T18:00:00+07:00")["messages"]
    assert (third["outcome"], third["reason"], third["suppressed"]) == ("recorded", "2 of 2 soft bounces", True)
    [entry] = table(program, suppressions_table)
    assert (entry["email"], entry["reason"]) == ("m1@example.com", "soft_bounce")
    assert entry["detail"] == "2 sends soft-bounced within 30 days (limit 2)"


def test_dry_run_records_and_flags_nothing(program, imap, monkeypatch):
    configure(program, imap, monkeypatch)
    ours = send_welcomes(program, "M1")
    imap.deliver(addressed("lhost-postfix-14.eml", ours["m1@example.com"]))
    dry = program.run("bounces", "poll", "--dry-run", at="2026-11-23T10:00:00+07:00")
    assert dry.exit_code == 0, dry.output
    assert "1 hard bounce(s), 0 soft bounce(s), 0 complaint(s) would be recorded, 1 address(es) would be " \
           "suppressed" in dry.output
    assert table(program, tracking_events_table) == [] and table(program, suppressions_table) == []
    assert imap.unseen_count() == 1
    assert poll(program)["hard_bounces"] == 1


def test_a_wrong_password_or_an_unset_one_is_a_clear_error_that_never_shows_it(program, imap, monkeypatch):
    configure(program, imap, monkeypatch)
    monkeypatch.setenv("BOUNCES_IMAP_PASSWORD", "not-the-password-7f3a")
    wrong = program.run("bounces", "poll")
    assert wrong.exit_code == 1
    assert f"the bounce mailbox imap://{USER}@127.0.0.1:{imap.port}/{FOLDER} refused the login: " \
           "[AUTHENTICATIONFAILED] Invalid authentication credentials. (check" in wrong.output
    assert "not-the-password-7f3a" not in wrong.output
    monkeypatch.delenv("BOUNCES_IMAP_PASSWORD")
    unset = program.run("bounces", "poll")
    assert unset.exit_code == 1
    assert "sending.bounces.password: environment variable BOUNCES_IMAP_PASSWORD is not set" in unset.output


def test_a_password_written_in_the_config_is_refused(program, imap, monkeypatch):
    configure(program, imap, monkeypatch)
    config = program.dir / "config.yaml"
    config.write_text(config.read_text().replace("${BOUNCES_IMAP_PASSWORD}", PASSWORD))
    result = program.run("bounces", "poll")
    assert result.exit_code == 1
    assert "sending.bounces.password: a secret is written in config.yaml (not shown)" in result.output
    assert PASSWORD not in result.output


def test_without_a_mailbox_the_command_says_what_to_configure(program):
    result = program.run("bounces", "poll")
    assert result.exit_code == 1
    assert "no bounce mailbox is configured: add `sending.bounces`" in result.output


def test_the_samples_read_as_published():
    """What each unmodified sample says, read by the parser alone."""
    hard = read_report((SAMPLES / "lhost-postfix-14.eml").read_bytes(), NOW)
    assert (hard.kind, hard.status, hard.suppress_as) == ("bounce", "5.1.1", "hard_bounce")
    assert hard.key == "mailbox:<20150213024813.E068820C1A@2jo.example.jp>"
    assert hard.detail["diagnostic"] == 'X-Postfix; unknown user: "kijitora"'
    assert hard.occurred_at == datetime(2015, 2, 13, 2, 48, 13, tzinfo=timezone.utc)
    delayed = read_report((SAMPLES / "rfc3464-07.eml").read_bytes(), NOW)
    assert (delayed.kind, delayed.status, delayed.suppress_as) == ("deferred", "4.4.0", None)
    complaint = read_report((SAMPLES / "arf-14.eml").read_bytes(), NOW)
    assert (complaint.kind, complaint.detail["feedback_type"]) == ("spam_complaint", "abuse")
    gave_up = (SAMPLES / "lhost-sendmail-29.eml").read_bytes().replace(b"Action: delayed", b"Action: failed")
    assert read_report(gave_up, NOW).kind == "soft_bounce"
    with pytest.raises(Unreadable, match="Feedback-Type 'not-spam' is not a complaint"):
        read_report((SAMPLES / "arf-14.eml").read_bytes().replace(b"Feedback-Type: abuse", b"Feedback-Type: not-spam"),
                    NOW)
    with pytest.raises(Unreadable, match=r"no recipient failed or was delayed \(Action: delivered\)"):
        read_report((SAMPLES / "lhost-postfix-14.eml").read_bytes().replace(b"Action: failed", b"Action: delivered"),
                    NOW)
    with pytest.raises(Unreadable, match="not a delivery status or feedback report"):
        read_report(b"\x00\xff garbage \r\n\r\n", NOW)


def test_every_sample_is_documented():
    readme = (SAMPLES / "README.md").read_text()
    assert [p.name for p in sorted(SAMPLES.glob("*.eml")) if f"`{p.name}`" not in readme] == []


@pytest.mark.slow
def test_the_daemon_reads_the_mailbox_each_tick_and_goes_on_when_it_cannot(program, imap, monkeypatch):
    configure(program, imap, monkeypatch)
    ours = send_welcomes(program, "M1")
    imap.deliver(addressed("lhost-postfix-14.eml", ours["m1@example.com"]))
    env = {**os.environ, "LOYALTY_MAIL_SECRET": SECRET}
    command = [sys.executable, "-m", "loyalty_mail", "--project", str(program.dir), "--database", program.url,
               "daemon", "--interval", "0.2", "--max-ticks", "1", "--no-wake"]
    config = program.dir / "config.yaml"
    working = config.read_text()
    config.write_text(working.replace(f"port: {imap.port}", f"port: {free_port()}"))
    away = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert away.returncode == 0, away.stderr
    assert "bounce mailbox not read this tick: cannot reach the bounce mailbox" in away.stderr
    assert table(program, tracking_events_table) == []

    config.write_text(working)
    daemon = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert daemon.returncode == 0, daemon.stderr
    assert "bounce mailbox: read 1, hard_bounces 1" in daemon.stderr
    assert PASSWORD not in daemon.stderr
    assert [(s["email"], s["reason"]) for s in table(program, suppressions_table)] == [("m1@example.com", "hard_bounce")]
    assert imap.unseen_count() == 0


class EnvelopeSink:
    """aiosmtpd handler keeping each message's envelope sender and recipients."""

    def __init__(self) -> None:
        self.envelopes: list[tuple[str, list[str]]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 Message accepted"


def test_with_verp_a_bounce_without_the_original_is_matched_by_the_address_it_came_to(program, imap,
                                                                                      monkeypatch):
    from aiosmtpd.controller import Controller

    configure(program, imap, monkeypatch)
    sink, port = EnvelopeSink(), free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        config = program.dir / "config.yaml"
        config.write_text(config.read_text().replace("sending:\n", f"""sending:
  transport: smtp
  smtp: {{host: 127.0.0.1, port: {port}, security: none, return_path: bounces@test.example, verp: true}}
""", 1))
        at = "2026-11-23T10:00:00+07:00"
        program.load("members", [member("M1", joined_at="2026-11-23T09:00:00+07:00")], at=at)
        assert program.run("run", "--once", "--flow", "welcome", at=at).exit_code == 0
    finally:
        controller.stop()
    [(mail_from, rcpt_tos)] = sink.envelopes
    assert rcpt_tos == ["m1@example.com"]
    assert mail_from.startswith("bounces+") and mail_from.endswith("@test.example")
    # Postfix's DSN for a message it did not enclose (its message/rfc822 part is empty), as it
    # arrives at our VERP address instead of the sample's.
    raw = (SAMPLES / "lhost-postfix-01.eml").read_bytes().replace(b"shironeko@mx.example.jp", mail_from.encode())
    assert read_report((SAMPLES / "lhost-postfix-01.eml").read_bytes(), NOW).send_ids == ()
    imap.deliver(raw)
    [outcome] = poll(program)["messages"]
    assert (outcome["outcome"], outcome["kind"], outcome["email"]) == ("recorded", "bounce", "m1@example.com")
    assert outcome["send_id"] == mail_from[len("bounces+"):].split("@")[0]


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key: trusted only where a test says so."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "imap-cert.pem", directory / "imap-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_starttls_checks_the_servers_certificate(program, tmp_path, monkeypatch):
    cert, key = self_signed(tmp_path)
    server = ImapServer(cert, key)
    try:
        configure(program, server, monkeypatch, tls="starttls")
        ours = send_welcomes(program, "M1")
        server.deliver(addressed("lhost-postfix-14.eml", ours["m1@example.com"]))
        untrusted = program.run("bounces", "poll")
        assert untrusted.exit_code == 1
        assert (f"cannot reach the bounce mailbox imap://{USER}@127.0.0.1:{server.port}/{FOLDER}: "
                "[SSL: CERTIFICATE_VERIFY_FAILED]") in untrusted.output
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))   # the system's trusted authorities, for this test
        assert poll(program)["hard_bounces"] == 1
        assert server.unseen_count() == 0
    finally:
        server.stop()


def test_a_wrong_tls_mode_is_one_clear_error(program, imap, monkeypatch):
    configure(program, imap, monkeypatch, tls="maybe")
    result = program.run("bounces", "poll")
    assert result.exit_code == 1
    assert "sending.bounces.tls: expected true (implicit TLS), starttls or false, found 'maybe'" in result.output


def nested(depth: int, *, multipart: bool) -> bytes:
    """A delivery-status report whose enclosed original is `depth` levels of message/rfc822 (or
    of multipart/mixed) within each other: what makes the email package recurse past its limit."""
    inner = b"Subject: x\r\n\r\nbody\r\n"
    for level in range(depth):
        if multipart:
            inner = (f"Content-Type: multipart/mixed; boundary=\"b{level}\"\r\n\r\n--b{level}\r\n".encode()
                     + inner + f"\r\n--b{level}--\r\n".encode())
        else:
            inner = b"Content-Type: message/rfc822\r\n\r\n" + inner
    return (b"From: MAILER-DAEMON@example.org\r\nTo: bounces@test.example\r\nMessage-ID: <deep@example.org>\r\n"
            b"Content-Type: multipart/report; report-type=delivery-status; boundary=\"R\"\r\n\r\n"
            b"--R\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; example.org\r\n\r\n"
            b"Final-Recipient: rfc822; a@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
            b"--R\r\n" + inner + b"\r\n--R--\r\n")


class Listed:
    """A mailbox of messages held in memory (the poller's seam, in place of an IMAP session)."""

    backlog = 0

    def __init__(self, *raws: bytes) -> None:
        self.raws, self.seen, self.aside = list(raws), [], []

    def unseen(self):
        from loyalty_mail.tracking.mailbox import Fetched
        return iter([Fetched(str(n + 1), len(raw), raw) for n, raw in enumerate(self.raws)])

    def mark_seen(self, uid: str) -> None:
        self.seen.append(uid)

    def set_aside(self, uid: str) -> str:
        self.aside.append(uid)
        return "$LoyaltyMailIgnored"


def test_a_deeply_nested_message_is_unreadable_and_the_poll_goes_on(database_url):
    from loyalty_mail import db
    from loyalty_mail.tracking.bounces import SoftBouncePolicy, poll as poll_once

    for multipart in (False, True):
        with pytest.raises(Unreadable, match=r"Content-Type fields: more than the 100 MIME parts"):
            read_report(nested(1000, multipart=multipart), NOW)
        with pytest.raises(Unreadable, match=r"MIME parts nested \d+ deep: more than the 12"):
            read_report(nested(20, multipart=multipart), NOW)
    assert read_report(nested(3, multipart=True), NOW).kind == "bounce"
    engine = db.create_db_engine(database_url)
    mailbox = Listed(nested(1000, multipart=False), nested(1000, multipart=True), nested(3, multipart=False))
    outcomes = poll_once(mailbox, engine, SoftBouncePolicy(3, timedelta(days=30)), NOW)
    engine.dispose()
    assert [o.outcome for o in outcomes] == ["unreadable", "unreadable", "unmatched"]
    assert mailbox.aside == ["1", "2", "3"]


def test_messages_left_alone_are_set_aside_so_a_backlog_never_hides_a_bounce(program, imap, monkeypatch, caplog):
    """More unseen non-reports than a poll reads: each poll sets its own aside and says how many
    wait, so the bounce behind them is read by a later poll (and each poll logs one line)."""
    from loyalty_mail import db
    from loyalty_mail.config import load_settings
    from loyalty_mail.tracking.bounces import poll_mailbox
    from loyalty_mail.tracking.mailbox import keeps_keyword

    configure(program, imap, monkeypatch)
    ours = send_welcomes(program, "M1")
    for n in range(3):
        imap.deliver(f"Subject: out of office {n}\r\nMessage-ID: <ooo{n}@example.org>\r\n\r\nAway.\r\n".encode())
    imap.deliver(addressed("lhost-postfix-14.eml", ours["m1@example.com"]))
    settings = load_settings(program.dir, database_url=program.url, environ=dict(os.environ)).sending.bounces
    engine = db.create_db_engine(program.url)
    caplog.set_level("WARNING", logger="loyalty_mail.bounces")
    try:
        first = poll_mailbox(settings, engine, NOW, limit=2)
        assert [o.outcome for o in first] == ["unreadable", "unreadable"]
        warnings = [r.getMessage() for r in caplog.records]
        assert warnings == [
            f"bounce mailbox: 2 message(s) left alone and set aside (first: message {first[0].uid}, "
            "not a delivery status or feedback report (Content-Type text/plain))",
            "bounce mailbox: 2 more unseen message(s) wait for the next poll (this one read 2)"]
        second = poll_mailbox(settings, engine, NOW, limit=2)
        assert [(o.outcome, o.kind) for o in second] == [("unreadable", None), ("recorded", "bounce")]
        assert poll_mailbox(settings, engine, NOW, limit=2) == []
    finally:
        engine.dispose()
    assert keeps_keyword([b"(\\Answered \\Seen \\*)"]) and keeps_keyword([b"(\\Seen $LoyaltyMailIgnored)"])
    assert not keeps_keyword([b"(\\Answered \\Deleted \\Draft \\Flagged \\Seen)"]) and not keeps_keyword([None])


def test_a_bounce_of_a_bounce_is_not_about_the_original_inside_it():
    """Only the original the report itself encloses counts: a report about a bounce that enclosed
    our email must not suppress our member."""
    first = (SAMPLES / "lhost-postfix-14.eml").read_bytes().replace(
        b"<20150213024813.E068820C1A@2jo.example.jp>", b"<first-report@2jo.example.jp>").replace(
        b"<20150213024813.DE9FF20C16@2jo.example.jp>", b"<OurSend01@test.example>")
    inner = read_report(first, NOW)
    assert inner.send_ids == ("OurSend01",) and inner.key == "mailbox:<first-report@2jo.example.jp>"
    second = (b"From: MAILER-DAEMON@example.org\r\nTo: bounces@test.example\r\nMessage-ID: <second@example.org>\r\n"
              b"Content-Type: multipart/report; report-type=delivery-status; boundary=\"R\"\r\n\r\n"
              b"--R\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; example.org\r\n\r\n"
              b"Final-Recipient: rfc822; mailer-daemon@2jo.example.jp\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
              b"--R\r\nContent-Type: message/rfc822\r\n\r\n" + first + b"\r\n--R--\r\n")
    outer = read_report(second, NOW)
    assert outer.kind == "bounce"
    assert outer.send_ids == ("first-report",)   # the enclosed report's own Message-ID, not its original's
    assert not set(inner.send_ids) & set(outer.send_ids)


def test_only_reading_the_mailbox_needs_its_password(program, imap, monkeypatch, caplog):
    """With `sending.bounces` configured and its variable unset, every other command works
    (`check` warns); `bounces poll` and the daemon's poll say which variable, at its line."""
    from loyalty_mail import db
    from loyalty_mail.config import load_settings
    from loyalty_mail.tracking.bounces import poll_bounces_logged

    configure(program, imap, monkeypatch)
    monkeypatch.delenv("BOUNCES_IMAP_PASSWORD")
    send_welcomes(program, "M1")
    for args in (("report", "--by", "none"), ("members", "consent", "M1"), ("run", "--once")):
        done = program.run(*args, at="2026-11-23T12:00:00+07:00")
        assert done.exit_code == 0, (args, done.output)
    checked = program.run("check")
    assert checked.exit_code == 0, checked.output
    assert "warning: the bounce mailbox's password is not set" in checked.output
    polled = program.run("bounces", "poll")
    assert polled.exit_code == 1
    assert "config.yaml:" in polled.output
    assert ("sending.bounces.password: environment variable BOUNCES_IMAP_PASSWORD is not set "
            "(export it: reading the bounce mailbox needs it)") in polled.output
    settings = load_settings(program.dir, database_url=program.url, environ=dict(os.environ)).sending.bounces
    engine = db.create_db_engine(program.url)
    caplog.set_level("WARNING", logger="loyalty_mail.bounces")
    poll_bounces_logged(settings, engine, NOW)   # the daemon's tick goes on
    engine.dispose()
    assert "bounce mailbox not read this tick:" in caplog.text and "BOUNCES_IMAP_PASSWORD is not set" in caplog.text
    config = program.dir / "config.yaml"
    config.write_text(config.read_text().replace("${BOUNCES_IMAP_PASSWORD}", "${BOUNCES_IMAP_PASSWORD:-}"))
    empty = program.run("bounces", "poll")
    assert empty.exit_code == 1 and ("sending.bounces.password is empty: set BOUNCES_IMAP_PASSWORD (the variable "
                                     "config.yaml names) to the bounce mailbox's password") in empty.output

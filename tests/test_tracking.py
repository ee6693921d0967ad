"""The tracking service: pixel, click, unsubscribe (page and RFC 8058 one-click), SendGrid's signed
Event Webhook, bad input, shutdown. The routes run in this process through httpx.ASGITransport,
lifespan included; one test runs `loyalty-mail serve` as a real process (uvicorn) and stops it
with SIGTERM."""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from datetime import datetime, timedelta, timezone

import httpx
import pytest
import sqlalchemy as sa
from anyio.from_thread import start_blocking_portal

from loyalty_mail.config import load_settings
from loyalty_mail.models import members_table, suppressions_table, tracking_events_table
from loyalty_mail.runtime import Runtime
from loyalty_mail.signing import TokenClaims, TokenSigner
from loyalty_mail.tracking.app import create_app
from loyalty_mail.tracking.webhooks import WebhookRejected, parse_events

from .conftest import FIXTURES
from .flow_program import SECRET, Program, member

VECTOR = json.loads((FIXTURES / "eventwebhook" / "signature_test_vector.json").read_text())
EVENTS = FIXTURES / "eventwebhook" / "events"
AT = "2026-11-23T10:00:00+07:00"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def configure_tracking(program: Program, extra_config: str) -> None:
    if extra_config:
        config = (program.dir / "config.yaml").read_text().replace("tracking:\n", f"tracking:\n{extra_config}")
        (program.dir / "config.yaml").write_text(config)


class Service:
    """`loyalty-mail serve` as a real process (uvicorn) on a free port of 127.0.0.1."""

    def __init__(self, program: Program, extra_config: str = "") -> None:
        configure_tracking(program, extra_config)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "loyalty_mail", "--project", str(program.dir), "--database", program.url,
             "serve", "--port", str(self.port)],
            env={**os.environ, "LOYALTY_MAIL_SECRET": SECRET}, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            self.process.kill()
            pytest.fail(f"serve did not answer /health in 60 s; its stderr: {self.process.communicate()[1]!r}")
        self.http = httpx.Client(base_url=self.base, follow_redirects=False, timeout=10)

    def stop(self) -> str:
        self.process.send_signal(signal.SIGTERM)
        _, stderr = self.process.communicate(timeout=30)
        assert self.process.returncode == 0, stderr
        return stderr


class _Client:
    """A synchronous face on an httpx.AsyncClient whose event loop runs in a portal thread."""

    def __init__(self, portal, client: httpx.AsyncClient) -> None:
        self._portal, self._client = portal, client

    def get(self, url: str, **options) -> httpx.Response:
        return self._portal.call(functools.partial(self._client.get, url, **options))

    def post(self, url: str, **options) -> httpx.Response:
        return self._portal.call(functools.partial(self._client.post, url, **options))


class _Recorder(logging.Handler):
    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


class InProcessService:
    """The tracking app in this process through httpx.ASGITransport: entering its lifespan starts
    the hit writer, `stop()` leaves it (every queued hit is written) and returns what the service
    logged at WARNING and above. An exception in a route fails the test (no 500 hides it)."""

    def __init__(self, program: Program, extra_config: str = "") -> None:
        configure_tracking(program, extra_config)
        settings = load_settings(program.dir, database_url=program.url,
                                 environ={**os.environ, "LOYALTY_MAIL_SECRET": SECRET})
        self._log = _Recorder(logging.WARNING)
        logging.getLogger("loyalty_mail").addHandler(self._log)
        self._stack = ExitStack()
        self._stack.callback(logging.getLogger("loyalty_mail").removeHandler, self._log)
        with self._stack as stack:   # a failure on the way closes what was opened
            runtime = Runtime(settings)
            stack.callback(runtime.close)
            app = create_app(settings, runtime.engine(), runtime.now)
            portal = stack.enter_context(start_blocking_portal())
            stack.enter_context(portal.wrap_async_context_manager(app.router.lifespan_context(app)))
            client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("127.0.0.1", 50000)),
                                       base_url="http://t.test.example", timeout=10)
            stack.callback(portal.call, client.aclose)
            self._stack = stack.pop_all()
        self.http = _Client(portal, client)

    def stop(self) -> str:
        self._stack.close()
        return "\n".join(self._log.lines)


def events(program: Program) -> list[dict]:
    engine = sa.create_engine(program.url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        rows = conn.execute(sa.select(tracking_events_table).order_by(tracking_events_table.c.id)).mappings().all()
    engine.dispose()
    return [dict(r) for r in rows]


def sent_email(program: Program, at: str = AT, zone: str = "Asia/Ho_Chi_Minh") -> tuple[str, str]:
    """One welcome email sent to M1 through the directory transport: (send id, html)."""
    joined = (datetime.fromisoformat(at) - timedelta(hours=1)).isoformat()
    program.load("members", [member("M1", zone, joined_at=joined)], at=at)
    assert program.run("run", "--once", "--flow", "welcome", at=at).exit_code == 0
    [eml] = list((program.dir / "outbox").glob("*.eml"))
    import email
    import email.policy
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    return eml.stem, message.get_body(("html",)).get_content()


@pytest.fixture
def service(program):
    running = InProcessService(program)
    yield running
    running.stop()


@pytest.fixture
def served(program):
    running = Service(program)
    yield running
    if running.process.poll() is None:
        running.process.kill()
        running.process.wait()


def test_pixel_and_click_are_recorded_and_flushed_on_sigterm(program, served):
    service = served
    now = datetime.now(timezone.utc)   # sent just now, to a member for whom it is noon: no quiet hours
    offset = 12 - now.hour if 12 - now.hour >= -12 else 36 - now.hour
    zone = "Etc/GMT" + ("-" if offset > 0 else "+") + str(abs(offset)) if offset else "UTC"
    send_id, html = sent_email(program, now.isoformat(), zone)
    pixel = re.search(r'src="https://t\.test\.example(/o/[^"]+)"', html).group(1)
    clicks = re.findall(r'href="https://t\.test\.example(/c/[^"]+)"', html)
    response = service.http.get(pixel, headers={"User-Agent": "Mozilla/5.0 (Macintosh) AppleWebKit Mail"})
    assert response.status_code == 200 and response.headers["content-type"] == "image/gif"
    assert "no-store" in response.headers["cache-control"] and response.content.startswith(b"GIF89a")
    assert service.http.get(pixel, headers={"User-Agent": "Mozilla/5.0"}).status_code == 200
    redirect = service.http.get(clicks[0], headers={"User-Agent": "Mozilla/5.0 (Windows NT 10.0) Chrome/120"})
    assert redirect.status_code == 302
    target = TokenSigner(SECRET).verify(clicks[0].split("/c/")[1]).url
    assert redirect.headers["location"] == target
    scanner = service.http.get(clicks[0], headers={"User-Agent": "Barracuda Sentinel (EE)"})
    assert scanner.status_code == 302
    stderr = service.stop()                       # accepted hits are written before exit
    assert "4 hits written" in stderr
    rows = events(program)
    assert [(r["kind"], r["send_id"]) for r in rows] == [("open", send_id)] * 2 + [("click", send_id)] * 2
    assert [r["machine"] for r in rows[:2]] == [False, True]      # Apple MPP-style proxy open
    assert [r["bot"] for r in rows[2:]] == [True, True]           # within seconds of delivery; scanner UA
    assert rows[2]["url"] == target


def test_tampered_or_unknown_tokens_never_redirect(program, service):
    signer = TokenSigner(SECRET)
    good = signer.sign(TokenClaims("click", "x" * 32, 0, "https://senvang.example/"))
    body, tag = good.split(".")
    evil = TokenSigner("attacker-secret-0123456789").sign(TokenClaims("click", "x" * 32, 0, "https://evil.example/"))
    for path in (f"/c/{body}.{tag[::-1]}", f"/c/{evil}", "/c/preview", "/c/%00%ff", "/c/" + "A" * 5000,
                 f"/c/{signer.sign(TokenClaims('open', 'x' * 32))}", "/o/nonsense.gif",
                 "/c/?url=https://evil.example/"):
        response = service.http.get(path)
        assert response.status_code == 404, path
        assert "location" not in response.headers


def test_unsubscribe_page_and_one_click(program, service):
    send_id, html = sent_email(program)
    path = re.search(r'href="https://t\.test\.example(/u/[^"]+)"', html).group(1)
    page = service.http.get(path)
    assert page.status_code == 200 and "Hủy đăng ký" in page.text and "m1@example.com" in page.text
    assert '<form method="post"' in page.text
    one_click = service.http.post(path, content="List-Unsubscribe=One-Click",
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert one_click.status_code == 200 and one_click.text == "unsubscribed"
    engine = sa.create_engine(program.url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        subscribed = conn.execute(sa.select(members_table.c.subscribed)).scalar_one()
        suppressed = conn.execute(sa.select(suppressions_table.c.email, suppressions_table.c.reason)).all()
    engine.dispose()
    assert subscribed is False and suppressed == [("m1@example.com", "unsubscribe")]
    again = service.http.get(path)
    assert "Bạn đã hủy đăng ký" in again.text
    assert service.http.get("/u/preview").status_code == 404
    assert service.http.post("/u/preview", content="List-Unsubscribe=One-Click").status_code == 404


def signed_headers(timestamp: str, signature: str) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-Twilio-Email-Event-Webhook-Signature": signature,
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp}


def test_webhook_verifies_sendgrids_own_test_vector(program):
    from loyalty_mail.tracking.webhooks import SendGridWebhook
    from datetime import datetime, timedelta, timezone
    body = VECTOR["payload"].encode()
    hook = SendGridWebhook(VECTOR["public_key"], timedelta(minutes=5))
    at = datetime.fromtimestamp(int(VECTOR["timestamp"]), timezone.utc)
    headers = {k.lower(): v for k, v in signed_headers(VECTOR["timestamp"], VECTOR["signature"]).items()}
    [event] = hook.parse(headers, body, at + timedelta(seconds=30))
    assert event.kind == "dropped" and event.email == "hello@world.com"
    with pytest.raises(WebhookRejected, match="stale timestamp"):
        hook.parse(headers, body, at + timedelta(hours=1))
    for case in VECTOR["negative_cases"]:
        key = case.get("public_key", VECTOR["public_key"])
        bad = {k.lower(): v for k, v in signed_headers(case.get("timestamp", VECTOR["timestamp"]),
                                                       case.get("signature", VECTOR["signature"])).items()}
        payload = case.get("payload", VECTOR["payload"]).encode()
        with pytest.raises(WebhookRejected) as info:
            SendGridWebhook(key, timedelta(minutes=5)).parse(bad, payload, at)
        assert info.value.status == 403, case["name"]


def test_every_documented_event_type_parses():
    seen = set()
    for path in sorted(EVENTS.glob("*.json")):
        if path.name.startswith("_other"):
            continue
        for event in parse_events(path.read_bytes()):
            seen.add(event.kind)
            assert event.occurred_at.year >= 2015
    assert {"processed", "delivered", "deferred", "bounce", "dropped", "open", "click", "spam_complaint",
            "unsubscribe", "group_unsubscribe", "group_resubscribe"} <= seen


def test_webhook_over_http_dedupes_suppresses_and_refuses_bad_input(program):
    # Sign our own requests with a key pair generated here; SendGrid's public key format.
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    import base64
    private = ec.generate_private_key(ec.SECP256R1())
    public = base64.b64encode(private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    send_id, _ = sent_email(program)
    service = InProcessService(program, f"  sendgrid_webhook_key: {public}\n")
    try:
        batch = json.loads((EVENTS / "_all_events_batch.json").read_text())
        for number, event in enumerate(batch):  # the docs' examples share a placeholder id
            event["send_id"], event["sg_event_id"] = send_id, f"docs-example-{number}"
        bounce = {"email": "m1@example.com", "event": "bounce", "type": "bounce", "timestamp": int(time.time()),
                  "sg_event_id": "bounce-1", "send_id": send_id, "reason": "550 no such user"}
        body = json.dumps(batch + [bounce]).encode()
        timestamp = str(int(time.time()))
        signature = base64.b64encode(private.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()
        first = service.http.post("/webhooks/sendgrid", content=body, headers=signed_headers(timestamp, signature))
        assert first.status_code == 200, first.text
        assert first.json()["received"] == len(batch) + 1
        replay = service.http.post("/webhooks/sendgrid", content=body, headers=signed_headers(timestamp, signature))
        assert replay.status_code == 200 and replay.json()["new"] == 0       # de-duplicated by sg_event_id
        tampered = service.http.post("/webhooks/sendgrid", content=body.replace(b"bounce", b"delivered", 1),
                                     headers=signed_headers(timestamp, signature))
        assert tampered.status_code == 403
        old = str(int(time.time()) - 3600)
        stale_sig = base64.b64encode(private.sign(old.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()
        assert service.http.post("/webhooks/sendgrid", content=body,
                                 headers=signed_headers(old, stale_sig)).status_code == 403
        assert service.http.post("/webhooks/sendgrid", content=body,
                                 headers={**signed_headers(timestamp, signature),
                                          "Content-Type": "text/plain"}).status_code == 415
        assert service.http.post("/webhooks/sendgrid", content=b"x" * 2_000_000,
                                 headers=signed_headers(timestamp, signature)).status_code == 413
        junk = b"{not json"
        junk_sig = base64.b64encode(private.sign(timestamp.encode() + junk, ec.ECDSA(hashes.SHA256()))).decode()
        assert service.http.post("/webhooks/sendgrid", content=junk,
                                 headers=signed_headers(timestamp, junk_sig)).status_code == 400
        assert service.http.post("/webhooks/sendgrid", content=body, headers={"Content-Type": "application/json"}
                                 ).status_code == 403
    finally:
        service.stop()
    rows = events(program)
    assert len([r for r in rows if r["source"] == "sendgrid"]) == len(batch) + 1
    engine = sa.create_engine(program.url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        reasons = dict(conn.execute(sa.select(suppressions_table.c.email, suppressions_table.c.reason)).all())
    engine.dispose()
    assert reasons["m1@example.com"] == "hard_bounce"


def test_unknown_event_types_and_odd_fields_are_kept_not_fatal():
    body = json.dumps([{"event": "brand_new_kind", "email": "X@Example.com", "timestamp": "not a number",
                        "sg_event_id": "n1", "custom_args": {"send_id": "abc"}},
                       {"event": "bounce", "type": "blocked", "email": "b@example.com", "timestamp": 1}]).encode()
    unknown, blocked = parse_events(body)
    assert (unknown.kind, unknown.send_id, unknown.email, unknown.occurred_at.year) == ("brand_new_kind", "abc",
                                                                                        "x@example.com", 1970)
    assert blocked.kind == "bounce" and blocked.suppress_as is None   # a block is not a dead address
    for bad in (b"{}", b"[1, 2]", b"not json", "[\"\u00ff\"]".encode("latin-1")):
        with pytest.raises(WebhookRejected) as info:
            parse_events(bad)
        assert info.value.status == 400


@pytest.mark.slow
def test_service_and_daemon_share_one_sqlite_file_without_locking_errors(sqlite_program):
    """The daemon sends while the service records hits for earlier sends: no 'database is locked'."""
    program = sqlite_program
    config = (program.dir / "config.yaml").read_text().replace(
        'quiet_hours: {start: "21:00", end: "08:00"}', "quiet_hours: null")
    (program.dir / "config.yaml").write_text(config)
    now = datetime.now(timezone.utc)
    program.load("members", [member(f"A{n}", joined_at=(now - timedelta(hours=1)).isoformat()) for n in range(40)],
                 at=now.isoformat())
    assert program.run("run", "--once").exit_code == 0
    outbox = program.dir / "outbox"
    first = sorted(outbox.glob("*.eml"))
    assert len(first) == 40
    pixels = []
    import email
    import email.policy
    for path in first:
        html = email.message_from_bytes(path.read_bytes(), policy=email.policy.default).get_body(("html",)).get_content()
        pixels.append(re.search(r'src="https://t\.test\.example(/o/[^"]+)"', html).group(1))
    program.load("members", [member(f"B{n}", joined_at=(now - timedelta(minutes=30)).isoformat()) for n in range(300)],
                 at=now.isoformat())
    service = InProcessService(program)
    env = {**os.environ, "LOYALTY_MAIL_SECRET": SECRET}
    daemon = subprocess.Popen([sys.executable, "-m", "loyalty_mail", "--project", str(program.dir), "--database",
                               program.url, "daemon", "--interval", "0.2"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        answered = 0
        deadline = time.monotonic() + 60
        while (len(list(outbox.glob("*.eml"))) < 340 or answered < 2000) and time.monotonic() < deadline:
            for path in pixels:
                answered += service.http.get(path).status_code == 200
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, daemon_log = daemon.communicate(timeout=60)
        service_log = service.stop()
    assert daemon.returncode == 0
    assert "locked" not in daemon_log and "locked" not in service_log and "tick failed" not in daemon_log
    assert len(list(outbox.glob("*.eml"))) == 340
    assert len([e for e in events(program) if e["kind"] == "open"]) == answered >= 2000

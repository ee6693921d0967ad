"""SendGrid's Event Webhook under hostile input, in process against the ASGI app: junk headers
and bodies are a 4xx with a reason, never a 500; a bad event is kept aside with its reason while
the rest of its batch (a hard bounce) is applied; retried batches are stored once. HEAD requests
to the open and click routes are answered and not counted."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from loyalty_mail import db
from loyalty_mail.config import load_settings
from loyalty_mail.models import rejected_webhook_events_table, suppressions_table, tracking_events_table
from loyalty_mail.tracking import store
from loyalty_mail.tracking.app import create_app
from loyalty_mail.signing import TokenClaims, TokenSigner
from loyalty_mail.tracking.webhooks import DeliveryEvent, parse_events

SECRET = "Wh-k9Lq2xR7vT3mZ8pYc"
NOW = datetime(2026, 11, 23, 3, 0, tzinfo=timezone.utc)
STAMP = str(int(NOW.timestamp()))
PRIVATE = ec.generate_private_key(ec.SECP256R1())
PUBLIC = base64.b64encode(PRIVATE.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()


def sign(body: bytes, timestamp: str = STAMP) -> dict[str, str]:
    signature = base64.b64encode(PRIVATE.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()
    return {"Content-Type": "application/json", "X-Twilio-Email-Event-Webhook-Signature": signature,
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp}


class Service:
    """The tracking app in process (lifespan included) on a real database."""

    def __init__(self, project: Path, database_url: str) -> None:
        config = project / "config.yaml"
        config.write_text(config.read_text() + "tracking:\n  secret: ${LOYALTY_MAIL_SECRET}\n"
                          f"  sendgrid_webhook_key: {PUBLIC}\n")
        settings = load_settings(project, environ={"LOYALTY_MAIL_SECRET": SECRET})
        self.engine = db.create_db_engine(database_url)
        self.app = create_app(settings, self.engine, lambda: NOW)

    def run(self, requests: list[tuple[str, str, dict[str, Any]]]) -> list[httpx.Response]:
        """Start the app, make the requests in order, stop it (which writes every queued hit)."""
        async def go() -> list[httpx.Response]:
            async with self.app.router.lifespan_context(self.app):
                transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
                async with httpx.AsyncClient(transport=transport, base_url="http://t.test") as http:
                    return [await http.request(method, path, **kwargs) for method, path, kwargs in requests]
        return asyncio.run(go())

    def post(self, body: bytes, headers: dict[str, str]) -> httpx.Response:
        [answer] = self.run([("POST", "/webhooks/sendgrid", {"content": body, "headers": headers})])
        return answer

    def rows(self, table: sa.Table) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.select(table).order_by(table.c.id)).mappings()]


@pytest.fixture
def service(project, database_url):
    running = Service(project, database_url)
    yield running
    running.engine.dispose()


@pytest.mark.parametrize("headers", [
    {"X-Twilio-Email-Event-Webhook-Timestamp": "9223372036854775807"},
    {"X-Twilio-Email-Event-Webhook-Timestamp": "99999999999999999999999999999999"},
    {"X-Twilio-Email-Event-Webhook-Timestamp": "-1"},
    {"X-Twilio-Email-Event-Webhook-Timestamp": "1.7e9"},
    {"X-Twilio-Email-Event-Webhook-Timestamp": "\u0661\u0662\u0663".encode()},
    {"X-Twilio-Email-Event-Webhook-Signature": "!!not base64!!"},
    {"X-Twilio-Email-Event-Webhook-Signature": "\u00e9\u00e9\u00e9\u00e9".encode("latin-1")},
    {"X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(b"\x30\x06\x02\x01\x01\x02\x01\x01").decode()},
    {"X-Twilio-Email-Event-Webhook-Signature": ""},
])
def test_unauthenticated_junk_headers_are_refused_with_a_reason(service, headers):
    body = b'[{"event": "bounce", "email": "m1@example.com"}]'
    answer = service.post(body, {**sign(body), **headers})
    assert answer.status_code == 403, answer.text
    assert answer.json()["error"]


def test_a_stale_or_future_timestamp_is_a_replay(service):
    body = b"[]"
    for moved in (-3600, 3600):
        stamp = str(int(NOW.timestamp()) + moved)
        answer = service.post(body, sign(body, stamp))
        assert answer.status_code == 403 and "stale timestamp" in answer.json()["error"]


@pytest.mark.parametrize("body,reason", [
    (b"[" * 50_000 + b"]" * 50_000, "the body is nested deeper than 32 levels"),
    (b'[{"event": "open", "x": ' + b"[" * 40 + b"]" * 40 + b"}]", "the body is nested deeper than 32 levels"),
    (b"{not json", "the body is not JSON"),
    (b'["\xed\xa0\x80"]', "the body is not JSON"),                     # a surrogate in UTF-8 bytes
    (b'[{"timestamp": ' + b"9" * 5000 + b"}]", "the body is not JSON"),  # past Python's int limit
    (b'{"event": "bounce"}', "expected a JSON array of event objects"),
    (b'[{"event": "bounce"}, 42]', "expected a JSON array of event objects"),
    (b"", "the body is not JSON"),
])
def test_a_signed_body_that_is_not_a_json_array_is_a_400(service, body, reason):
    answer = service.post(body, sign(body))
    assert answer.status_code == 400, answer.text
    assert answer.json() == {"error": reason}


def bounce(email: str, event_id: str | None = "bounce-1", **extra: Any) -> dict[str, Any]:
    event = {"email": email, "event": "bounce", "type": "bounce", "timestamp": int(NOW.timestamp()),
             "reason": "550 no such user", **extra}
    if event_id:
        event["sg_event_id"] = event_id
    return event


POISON = [
    ({"event": "deferred", "email": "m2@example.com", "sg_event_id": "nul", "response": "451 \u0000 later"},
     "'response' holds a NUL byte or a lone surrogate"),
    (bounce("no-at-sign.example.com", "no-at"), "'email' is not an email address"),
    (bounce("x" * 250 + "@example.com", "long"), "'email' is longer than 254 characters"),
    (bounce("m3@example.com", "nan", attempt=float("nan")), "'attempt' is not a finite number"),
    (bounce("m4@example.com", "inf", status=float("inf")), "'status' is not a finite number"),
    (bounce("m5@example.com", "surrogate", reason="550 \ud800"), "'reason' holds a NUL byte or a lone surrogate"),
    (bounce("m6\u0000@example.com", "nul-email"), "'email' holds a NUL byte or a lone surrogate"),
    (bounce("m7@example.com", "nested", response={"a": {"b": [1]}}), "'response' must be text or a number, found an object"),
    ({"event": "open", "sg_event_id": "url", "url": ["https://x.example"]}, "'url' must be text, found a list"),
    ({"event": "open", "email": "no id, no address", "timestamp": 5}, "'email' is not an email address"),
]


def test_a_poison_event_is_kept_aside_and_the_hard_bounce_is_applied(service):
    good = [bounce("M1@Example.com"), bounce("m8@example.com", "far-future", timestamp=2**63 - 1)]
    batch = good + [event for event, _ in POISON]
    body = json.dumps(batch).encode()   # NaN and Infinity as JavaScript writes them; \u0000 and \ud800 escaped
    first = service.post(body, sign(body))
    assert first.status_code == 200, first.text
    answer = first.json()
    assert (answer["received"], answer["new"], answer["suppressed"], answer["rejected"]) == (
        len(batch), 2, 2, len(POISON))
    assert [(r["index"], r["reason"]) for r in answer["rejections"]] == [
        (len(good) + n, reason) for n, (_, reason) in enumerate(POISON)]
    suppressed = {r["email"]: r["reason"] for r in service.rows(suppressions_table)}
    assert suppressed == {"m1@example.com": "hard_bounce", "m8@example.com": "hard_bounce"}
    stored = service.rows(tracking_events_table)
    assert [(r["provider_event_id"], r["occurred_at"]) for r in stored] == [
        ("bounce-1", NOW), ("far-future", datetime(1970, 1, 1, tzinfo=timezone.utc))]
    kept = service.rows(rejected_webhook_events_table)
    assert [(r["source"], r["reason"], r["received_at"]) for r in kept] == [
        ("sendgrid", reason, NOW) for _, reason in POISON]
    assert kept[0]["event_key"] == "nul" and "\\u0000" in kept[0]["raw"]
    assert '"attempt":NaN' in kept[3]["raw"] and "\\ud800" in kept[5]["raw"]
    assert kept[-1]["event_key"].startswith("content:")             # no sg_event_id: its content's digest
    assert kept[1]["event_key"] == "no-at" and kept[1]["raw"].startswith('{"email":"no-at-sign.example.com"')

    again = service.post(body, sign(body))                     # SendGrid retries: nothing twice
    assert again.status_code == 200 and (again.json()["new"], again.json()["suppressed"]) == (0, 0)
    assert len(service.rows(tracking_events_table)) == 2
    assert len(service.rows(rejected_webhook_events_table)) == len(POISON)


def test_events_without_an_event_id_are_stored_once(service):
    batch = [bounce("a@example.com", None), {"event": "open", "email": "a@example.com", "timestamp": 1},
             {"event": "open", "email": "a@example.com", "timestamp": 2}]
    body = json.dumps(batch).encode()
    assert service.post(body, sign(body)).json()["new"] == 3
    reordered = json.dumps([{key: event[key] for key in reversed(list(event))} for event in batch]).encode()
    assert service.post(reordered, sign(reordered)).json()["new"] == 0   # the same events, keys reordered
    ids = [r["provider_event_id"] for r in service.rows(tracking_events_table)]
    assert len(ids) == 3 == len(set(ids)) and all(i.startswith("content:") for i in ids)


def test_an_event_the_database_refuses_is_kept_aside_and_the_batch_applied(database_url):
    """Past the parser's checks, the store still isolates an event: here an address the suppression
    list refuses, in a batch with a good hard bounce."""
    engine = db.create_db_engine(database_url)
    refused = DeliveryEvent("bounce", None, "nobody", NOW, "refused-1", suppress_as="hard_bounce", raw='{"x":1}')
    events = parse_events(json.dumps([bounce("m1@example.com")]).encode())
    done = store.record_events(engine, [refused, *events], NOW)
    assert (done.new, done.suppressed) == (1, 1)
    assert [(r.index, r.key, r.reason) for r in done.rejected] == [
        (0, "refused-1", "refused: 'nobody' is not an email address")]
    with engine.connect() as conn:
        assert conn.execute(sa.select(suppressions_table.c.email)).scalars().all() == ["m1@example.com"]
        assert conn.execute(sa.select(tracking_events_table.c.provider_event_id)).scalars().all() == ["bounce-1"]
        kept = conn.execute(sa.select(rejected_webhook_events_table.c.event_key,
                                      rejected_webhook_events_table.c.raw)).all()
    assert [tuple(r) for r in kept] == [("refused-1", '{"x":1}')]
    engine.dispose()


def test_head_requests_are_answered_and_not_counted(service):
    signer = TokenSigner(SECRET)
    pixel = "/o/" + signer.sign(TokenClaims("open", "s" * 32)) + ".gif"
    link = "/c/" + signer.sign(TokenClaims("click", "s" * 32, 0, "https://shop.example/"))
    head_pixel, head_click = service.run([("HEAD", pixel, {}), ("HEAD", link, {})])
    assert head_pixel.status_code == 200 and head_pixel.headers["content-type"] == "image/gif"
    assert head_click.status_code == 302 and head_click.headers["location"] == "https://shop.example/"
    assert service.rows(tracking_events_table) == []
    get_pixel, get_click = service.run([("GET", pixel, {}), ("GET", link, {})])   # the control
    assert (get_pixel.status_code, get_click.status_code) == (200, 302)
    assert sorted(r["kind"] for r in service.rows(tracking_events_table)) == ["click", "open"]


def test_an_empty_batch_is_a_200_with_nothing_done(service):
    body = b"[]"
    answer = service.post(body, sign(body))
    assert answer.status_code == 200
    assert answer.json() == {"received": 0, "new": 0, "suppressed": 0, "rejected": 0, "rejections": []}

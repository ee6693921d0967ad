"""SendGrid's Event Webhook: verify the signature, then normalise events. Pure: no I/O.

The signature is ECDSA P-256/SHA-256 over the timestamp header followed by the raw body bytes.
A timestamp outside the tolerance is refused (a replayed request), as is a body that is not a
JSON array of objects (or nested deeper than `MAX_DEPTH`). Each event is then checked on its own:
one that cannot be stored as it is (a NUL byte, a lone surrogate, NaN, an address that is not one,
a field of the wrong shape) comes back marked `rejected` with the reason, for the store to keep
aside while it applies the others. Events without
SendGrid's `sg_event_id` get a stable id from their content, so a retried batch is stored once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from ..secret_policy import load_webhook_key

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
KINDS = {
    "processed": "processed", "delivered": "delivered", "deferred": "deferred", "bounce": "bounce",
    "blocked": "blocked", "dropped": "dropped", "open": "open", "click": "click",
    "spamreport": "spam_complaint", "unsubscribe": "unsubscribe", "group_unsubscribe": "group_unsubscribe",
    "group_resubscribe": "group_resubscribe",
}
SUPPRESSING = {"bounce": "hard_bounce", "spam_complaint": "spam_complaint", "unsubscribe": "unsubscribe",
               "group_unsubscribe": "unsubscribe"}
DETAIL_FIELDS = ("reason", "status", "type", "bounce_classification", "category", "sg_message_id",
                 "response", "attempt")
MAX_DEPTH = 32            # SendGrid's events are 3 levels deep (array, event, custom_args)
MAX_EMAIL = 254           # RFC 5321 path limit, and the suppression list's column
MAX_DETAIL_TEXT = 2000
LATEST = 253402300799     # 9999-12-31T23:59:59Z, the last second a datetime holds
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")   # NUL (PostgreSQL text) and lone surrogates (UTF-8)
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_BRACKET = re.compile(rb"[\[\]{}]")


class WebhookRejected(ValueError):
    """The request is not a verified, fresh SendGrid webhook call; `status` is the HTTP answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class DeliveryEvent:
    kind: str                      # our name: delivered, open, click, bounce, spam_complaint, ...
    send_id: str | None            # from custom_args; None for mail we did not send
    email: str | None
    occurred_at: datetime
    provider_event_id: str | None  # sg_event_id, or "content:<sha256>" of the event when it has none
    url: str | None = None
    user_agent: str | None = None
    ip: str | None = None
    machine: bool = False
    suppress_as: str | None = None  # the suppression reason this event implies
    detail: dict[str, Any] = field(default_factory=dict)
    raw: str = ""                  # the event as received, as ASCII JSON (NUL, surrogates escaped)
    rejected: str | None = None    # why it cannot be applied; then only kind, id and raw are set


class _Invalid(ValueError):
    """One event cannot be applied; the message is the reason."""


class SendGridWebhook:
    def __init__(self, public_key: str, tolerance: timedelta) -> None:
        try:
            self._key = load_webhook_key(public_key)
        except ValueError as exc:
            raise ValueError(f"tracking.sendgrid_webhook_key: {exc}") from None
        self.tolerance = tolerance

    def verify(self, headers: dict[str, str], body: bytes, now: datetime) -> None:
        signature, timestamp = headers.get(SIGNATURE_HEADER.lower()), headers.get(TIMESTAMP_HEADER.lower())
        if not signature or not timestamp:
            raise WebhookRejected(403, "missing signature headers")
        if not _TIMESTAMP.fullmatch(timestamp):
            raise WebhookRejected(403, "malformed timestamp (expected Unix seconds)")
        try:
            decoded = base64.b64decode(signature, validate=True)
        except (ValueError, binascii.Error):
            raise WebhookRejected(403, "malformed signature (expected base64)") from None
        try:
            self._key.verify(decoded, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise WebhookRejected(403, "bad signature") from None
        age = now.timestamp() - int(timestamp)
        if abs(age) > self.tolerance.total_seconds():
            raise WebhookRejected(403, f"stale timestamp ({int(age)} s from now, tolerance "
                                       f"{int(self.tolerance.total_seconds())} s): a replay?")

    def parse(self, headers: dict[str, str], body: bytes, now: datetime) -> list[DeliveryEvent]:
        """Verified, normalised events, one per item; unknown types keep their raw name."""
        self.verify(headers, body, now)
        return parse_events(body)


def parse_events(body: bytes) -> list[DeliveryEvent]:
    """A JSON array of event objects -> one event each, rejected ones marked with the reason;
    WebhookRejected (400) when the body as a whole is not such an array."""
    if _depth(body) > MAX_DEPTH:
        raise WebhookRejected(400, f"the body is nested deeper than {MAX_DEPTH} levels")
    try:
        items = json.loads(body.decode("utf-8"))  # strict: json.loads(bytes) lets surrogates pass
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise WebhookRejected(400, "the body is not JSON") from None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise WebhookRejected(400, "expected a JSON array of event objects")
    events = []
    for item in items:
        raw = json.dumps(item, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        try:
            events.append(_event(item, raw))
        except _Invalid as exc:
            kind = item.get("event")
            events.append(DeliveryEvent(
                kind=kind[:24] if isinstance(kind, str) and not _UNSTORABLE.search(kind) else "unknown",
                send_id=None, email=None, occurred_at=datetime.fromtimestamp(0, timezone.utc),
                provider_event_id=_key(item, raw), raw=raw, rejected=str(exc)))
    return events


def _depth(body: bytes) -> int:
    """How deeply the JSON in `body` nests arrays and objects (brackets inside strings ignored)."""
    depth = deepest = 0
    for bracket in _BRACKET.findall(_JSON_STRING.sub(b"", body)):
        depth += 1 if bracket in (b"[", b"{") else -1
        deepest = max(deepest, depth)
    return deepest


def _key(item: dict[str, Any], raw: str) -> str:
    """SendGrid's event id when the event has a usable one, else a digest of its content."""
    given = item.get("sg_event_id")
    if isinstance(given, (str, int)) and not isinstance(given, bool) and str(given).strip() \
            and not _UNSTORABLE.search(str(given)):
        return str(given)[:200]
    return "content:" + hashlib.sha256(raw.encode()).hexdigest()


def _event(item: dict[str, Any], raw: str) -> DeliveryEvent:
    raw_kind = _text(item, "event", 24) or "unknown"
    kind = KINDS.get(raw_kind, raw_kind)
    send_id = _text(item, "send_id", 32)
    custom = item.get("custom_args")
    if send_id is None and isinstance(custom, dict):
        send_id = _text(custom, "send_id", 32)
    suppress = SUPPRESSING.get(kind)
    if kind == "bounce" and item.get("type", "bounce") == "blocked":
        suppress = None  # a block is the receiver's policy, not a dead address
    return DeliveryEvent(
        kind=kind, send_id=send_id, email=_email(item), occurred_at=_when(item.get("timestamp")),
        provider_event_id=_key(item, raw), url=_text(item, "url", 2000),
        user_agent=_text(item, "useragent", 500), ip=_text(item, "ip", 64),
        machine=bool(item.get("sg_machine_open")), suppress_as=suppress,
        detail={k: _plain(k, item[k]) for k in DETAIL_FIELDS if k in item}, raw=raw)


def _text(item: dict[str, Any], key: str, limit: int) -> str | None:
    """A text field (numbers accepted as text), cut to `limit`; None when absent or empty."""
    value = item.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _Invalid(f"'{key}' must be text, found {_kind(value)}")
    text = str(value)
    if _UNSTORABLE.search(text):
        raise _Invalid(f"'{key}' holds a NUL byte or a lone surrogate")
    return text[:limit]


def _email(item: dict[str, Any]) -> str | None:
    email = _text(item, "email", MAX_EMAIL + 1)
    if email is None:
        return None
    local, at, domain = email.rpartition("@")
    if len(email) > MAX_EMAIL:
        raise _Invalid(f"'email' is longer than {MAX_EMAIL} characters")
    if not at or not local or not domain or any(c.isspace() or ord(c) < 32 for c in email):
        raise _Invalid("'email' is not an email address")
    return email.lower()


def _when(value: Any) -> datetime:
    """The event's time; the epoch when it is missing or cannot be a time (as SendGrid never sends)."""
    try:
        seconds = int(value)
    except (ValueError, OverflowError, TypeError):
        seconds = 0
    return datetime.fromtimestamp(seconds if 0 <= seconds <= LATEST else 0, timezone.utc)


def _plain(key: str, value: Any) -> Any:
    """A detail value as it can be stored: text, a finite number, true/false, null, or a short
    list of those (SendGrid's `category`)."""
    if isinstance(value, list) and len(value) <= 100:
        return [_scalar(key, v) for v in value]
    return _scalar(key, value)


def _scalar(key: str, value: Any) -> Any:
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Invalid(f"'{key}' is not a finite number")
        return value
    if isinstance(value, str):
        if _UNSTORABLE.search(value):
            raise _Invalid(f"'{key}' holds a NUL byte or a lone surrogate")
        return value[:MAX_DETAIL_TEXT]
    raise _Invalid(f"'{key}' must be text or a number, found {_kind(value)}")


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", float: "a number"}.get(type(value), type(value).__name__)

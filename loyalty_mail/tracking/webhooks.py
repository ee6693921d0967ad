"""SendGrid's Event Webhook: verify the signature, then normalise events. Pure: no I/O.

The signature is ECDSA P-256/SHA-256 over the timestamp header followed by the raw body bytes,
checked with the `sendgrid` library's EventWebhook helper. A timestamp outside the tolerance is
refused (a replayed request), as is anything that is not a JSON array of event objects.
"""

from __future__ import annotations

import binascii
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from sendgrid.helpers.eventwebhook import EventWebhook

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
    provider_event_id: str | None
    url: str | None = None
    user_agent: str | None = None
    ip: str | None = None
    machine: bool = False
    suppress_as: str | None = None  # the suppression reason this event implies
    detail: dict[str, Any] = field(default_factory=dict)


class SendGridWebhook:
    def __init__(self, public_key: str, tolerance: timedelta) -> None:
        try:
            self._verifier = EventWebhook(public_key)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"tracking.sendgrid_webhook_key is not a valid public key: {exc}") from None
        self.tolerance = tolerance

    def verify(self, headers: dict[str, str], body: bytes, now: datetime) -> None:
        signature, timestamp = headers.get(SIGNATURE_HEADER.lower()), headers.get(TIMESTAMP_HEADER.lower())
        if not signature or not timestamp:
            raise WebhookRejected(403, "missing signature headers")
        try:
            sent = datetime.fromtimestamp(int(timestamp), timezone.utc)
            payload = body.decode("utf-8")
            valid = self._verifier.verify_signature(payload, signature, timestamp)
        except (ValueError, OverflowError, UnicodeDecodeError, binascii.Error):
            raise WebhookRejected(403, "malformed signature or timestamp") from None
        if not valid:
            raise WebhookRejected(403, "bad signature")
        if abs(now - sent) > self.tolerance:
            raise WebhookRejected(403, f"stale timestamp ({sent.isoformat()}): a replay?")

    def parse(self, headers: dict[str, str], body: bytes, now: datetime) -> list[DeliveryEvent]:
        """Verified, normalised events; unknown event types are kept with their raw name."""
        self.verify(headers, body, now)
        return parse_events(body)


def parse_events(body: bytes) -> list[DeliveryEvent]:
    try:
        items = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise WebhookRejected(400, "the body is not JSON") from None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise WebhookRejected(400, "expected a JSON array of event objects")
    return [_event(item) for item in items]


def _event(item: dict[str, Any]) -> DeliveryEvent:
    raw = str(item.get("event", "unknown"))[:24]
    kind = KINDS.get(raw, raw)
    try:
        when = datetime.fromtimestamp(int(item.get("timestamp", 0)), timezone.utc)
    except (ValueError, OverflowError, TypeError):
        when = datetime.fromtimestamp(0, timezone.utc)
    send_id = item.get("send_id")
    custom = item.get("custom_args")
    if send_id is None and isinstance(custom, dict):
        send_id = custom.get("send_id")
    suppress = SUPPRESSING.get(kind)
    if kind == "bounce" and str(item.get("type", "bounce")) == "blocked":
        suppress = None  # a block is the receiver's policy, not a dead address
    detail: dict[str, Any]
    detail = {k: item[k] for k in ("reason", "status", "type", "bounce_classification", "category",
                                   "sg_message_id", "response", "attempt") if k in item}
    return DeliveryEvent(
        kind=kind, send_id=str(send_id)[:32] if send_id else None,
        email=str(item["email"]).lower() if item.get("email") else None, occurred_at=when,
        provider_event_id=str(item["sg_event_id"])[:200] if item.get("sg_event_id") else None,
        url=str(item["url"])[:2000] if item.get("url") else None,
        user_agent=str(item["useragent"])[:500] if item.get("useragent") else None,
        ip=str(item["ip"])[:64] if item.get("ip") else None,
        machine=bool(item.get("sg_machine_open")), suppress_as=suppress, detail=detail)

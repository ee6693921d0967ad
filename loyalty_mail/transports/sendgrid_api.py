"""SendGrid's v3 Mail Send API through the official `sendgrid` client.

Each message carries the send id in `custom_args` (the Event Webhook hands it back), the flow as
a category, the one-click unsubscribe headers, and SendGrid's own click/open tracking as
configured (off by default: loyalty-mail signs and tracks its own links). The host is
configurable, so tests point the real client at a local stand-in for the API. Requests go out
over kept-alive connections, one per worker thread (see `keepalive`).
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import sendgrid
from python_http_client import exceptions as http_errors
from sendgrid.helpers.mail import (
    Category,
    ClickTracking,
    CustomArg,
    From,
    Header,
    HtmlContent,
    Mail,
    MailSettings,
    OpenTracking,
    PlainTextContent,
    SandBoxMode,
    To,
    TrackingSettings,
)

from ..config import SendGridSettings
from ..errors import ConfigError
from ..message import SEND_ID_HEADER, RenderedEmail
from .base import DeliveryResult
from .keepalive import KeepAliveClient

PERMANENT = {400, 401, 403, 404, 413}


def build_mail(email: RenderedEmail, settings: SendGridSettings) -> Mail:
    mail = Mail(from_email=From(email.sender.email, email.sender.name),
                to_emails=To(email.to.email, email.to.name), subject=email.subject,
                plain_text_content=PlainTextContent(email.text), html_content=HtmlContent(email.html))
    mail.custom_arg = CustomArg("send_id", email.send_id)
    if email.flow:
        mail.category = Category(email.flow[:255])
    for name, value in email.all_headers().items():
        if name != SEND_ID_HEADER:
            mail.header = Header(name, value)
    mail.tracking_settings = TrackingSettings(
        click_tracking=ClickTracking(settings.click_tracking, settings.click_tracking),
        open_tracking=OpenTracking(settings.open_tracking))
    if settings.sandbox:
        mail.mail_settings = MailSettings(sandbox_mode=SandBoxMode(True))
    return mail


class SendGridTransport:
    name = "sendgrid"

    def __init__(self, settings: SendGridSettings, *, concurrency: int = 4, timeout: float = 30) -> None:
        if not settings.api_key:
            raise ConfigError("sending.sendgrid.api_key is not set: write `api_key: ${SENDGRID_API_KEY}` "
                              "in config.yaml and export the key")
        self.settings = settings
        client = sendgrid.SendGridAPIClient(api_key=settings.api_key, host=settings.host)
        client.client.timeout = timeout
        client.client = KeepAliveClient.replacing(client.client)  # one reused connection per worker
        self._mail_send = client.client.mail.send  # the endpoint, built once
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="sendgrid")

    def send(self, batch: Sequence[RenderedEmail]) -> list[DeliveryResult]:
        return list(self._pool.map(self._send_one, batch))

    def _send_one(self, email: RenderedEmail) -> DeliveryResult:
        body = build_mail(email, self.settings).get()
        try:
            response = self._mail_send.post(request_body=body)
        except http_errors.HTTPError as exc:
            return _http_failure(email.send_id, exc)
        except (OSError, http.client.HTTPException) as exc:  # refused, reset, timeout, garbled answer
            return DeliveryResult(email.send_id, "retry", f"SendGrid connection: {exc}")
        message_id = _header(getattr(response, "headers", None), "X-Message-Id")
        return DeliveryResult(email.send_id, "sent", provider_id=message_id)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._mail_send.connections.close_all()


def _header(headers: Any, name: str) -> str | None:
    if headers is None:
        return None
    try:
        return headers.get(name)
    except AttributeError:
        return None


def _http_failure(send_id: str, exc: http_errors.HTTPError) -> DeliveryResult:
    status = int(exc.status_code)
    body = exc.body.decode("utf-8", "replace") if isinstance(exc.body, bytes) else str(exc.body or "")
    try:
        errors = json.loads(body).get("errors") or []
        reason = "; ".join(str(e.get("message", e)) for e in errors) or body
    except (ValueError, AttributeError):
        reason = body
    detail = f"SendGrid HTTP {status}: {reason[:500]}"
    if status in PERMANENT or (400 <= status < 500 and status != 429):
        return DeliveryResult(send_id, "failed", detail)
    retry_after = _header(exc.headers, "Retry-After")
    try:
        seconds = float(retry_after) if retry_after is not None else None
    except ValueError:
        seconds = None
    return DeliveryResult(send_id, "retry", detail, retry_after=seconds)

"""SMTP: one connection reused across messages, STARTTLS or implicit TLS, optional login.

4xx replies and connection trouble are transient (retry); 5xx replies are permanent (failed).
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from collections.abc import Sequence

from ..config import SmtpSettings
from ..rendering import RenderedEmail
from .base import DeliveryResult


class SmtpTransport:
    name = "smtp"

    def __init__(self, settings: SmtpSettings, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.settings = settings
        self._context = ssl_context or ssl.create_default_context()
        self._connection: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        if self._connection is not None:
            return self._connection
        s = self.settings
        timeout = s.timeout.total_seconds()
        if s.security == "tls":
            connection: smtplib.SMTP = smtplib.SMTP_SSL(s.host, s.port, timeout=timeout, context=self._context)
        else:
            connection = smtplib.SMTP(s.host, s.port, timeout=timeout)
            if s.security == "starttls":
                connection.starttls(context=self._context)
        if s.username:
            connection.login(s.username, s.password or "")
        self._connection = connection
        return connection

    def _drop(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            finally:
                self._connection = None

    def send(self, batch: Sequence[RenderedEmail]) -> list[DeliveryResult]:
        return [self._send_one(email) for email in batch]

    def _send_one(self, email: RenderedEmail) -> DeliveryResult:
        for attempt in (1, 2):  # a reused connection may have been closed by the server: reconnect once
            try:
                connection = self._connect()
                refused = connection.sendmail(email.sender.email, [email.to.email], email.to_bytes())
            except smtplib.SMTPServerDisconnected as exc:
                self._drop()
                if attempt == 2:
                    return DeliveryResult(email.send_id, "retry", f"SMTP server disconnected: {exc}")
                continue
            except smtplib.SMTPRecipientsRefused as exc:
                code, message = next(iter(exc.recipients.values()))
                return _reply(email.send_id, code, message)
            except smtplib.SMTPResponseException as exc:
                if exc.smtp_code in (421,):
                    self._drop()
                return _reply(email.send_id, exc.smtp_code, exc.smtp_error)
            except (OSError, socket.timeout, smtplib.SMTPException) as exc:
                self._drop()
                return DeliveryResult(email.send_id, "retry", f"SMTP connection: {exc}")
            if refused:
                code, message = next(iter(refused.values()))
                return _reply(email.send_id, code, message)
            return DeliveryResult(email.send_id, "sent")
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._connection is not None:
            try:
                self._connection.quit()
            except (OSError, smtplib.SMTPException):
                pass
            self._connection = None


def _reply(send_id: str, code: int, message: bytes | str) -> DeliveryResult:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)
    outcome = "retry" if 400 <= code < 500 else "failed"
    return DeliveryResult(send_id, outcome, f"SMTP {code}: {text}")

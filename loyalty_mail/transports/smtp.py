"""SMTP: up to `concurrency` connections, each reused across messages; STARTTLS or implicit
TLS, optional login.

A batch is spread over the connections (one thread each), so a relay's per-message wait (its
reply to the end of DATA comes after it has queued the message) overlaps instead of adding up.
4xx replies and connection trouble are transient (retry); 5xx replies are permanent (failed).
"""

from __future__ import annotations

import queue
import smtplib
import socket
import ssl
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

from ..config import SmtpSettings
from ..message import RenderedEmail
from .base import DeliveryResult


class SmtpTransport:
    name = "smtp"

    def __init__(self, settings: SmtpSettings, *, concurrency: int = 1,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.settings = settings
        self._context = ssl_context or ssl.create_default_context()
        self._idle: queue.SimpleQueue[smtplib.SMTP | None] = queue.SimpleQueue()
        for _ in range(concurrency):
            self._idle.put(None)  # a slot: connects on first use, then stays open
        self._concurrency = concurrency
        self._pool = (ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="smtp")
                      if concurrency > 1 else None)

    def _connect(self) -> smtplib.SMTP:
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
        return connection

    def send(self, batch: Sequence[RenderedEmail]) -> list[DeliveryResult]:
        if self._pool is None or len(batch) < 2:
            return [self._send_one(email) for email in batch]
        return list(self._pool.map(self._send_one, batch))

    def _send_one(self, email: RenderedEmail) -> DeliveryResult:
        connection = self._idle.get()  # this thread's alone until it is put back
        try:
            connection, result = self._deliver(connection, email)
        finally:
            self._idle.put(connection)
        return result

    def _deliver(self, connection: smtplib.SMTP | None,
                 email: RenderedEmail) -> tuple[smtplib.SMTP | None, DeliveryResult]:
        """Send on `connection` (or a new one); the connection to keep, None when it is gone."""
        for attempt in (1, 2):  # a reused connection may have been closed by the server: reconnect once
            try:
                connection = connection or self._connect()
                refused = connection.sendmail(email.sender.email, [email.to.email], email.to_bytes())
            except smtplib.SMTPServerDisconnected as exc:
                _drop(connection)
                connection = None
                if attempt == 2:
                    return None, DeliveryResult(email.send_id, "retry", f"SMTP server disconnected: {exc}")
                continue
            except smtplib.SMTPRecipientsRefused as exc:
                code, message = next(iter(exc.recipients.values()))
                return connection, _reply(email.send_id, code, message)
            except smtplib.SMTPResponseException as exc:
                if exc.smtp_code in (421,):
                    _drop(connection)
                    connection = None
                return connection, _reply(email.send_id, exc.smtp_code, exc.smtp_error)
            except (OSError, socket.timeout, smtplib.SMTPException) as exc:
                _drop(connection)
                return None, DeliveryResult(email.send_id, "retry", f"SMTP connection: {exc}")
            if refused:
                code, message = next(iter(refused.values()))
                return connection, _reply(email.send_id, code, message)
            return connection, DeliveryResult(email.send_id, "sent")
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        for _ in range(self._concurrency):
            connection = self._idle.get()
            if connection is not None:
                try:
                    connection.quit()
                except (OSError, smtplib.SMTPException):
                    pass
            self._idle.put(None)


def _drop(connection: smtplib.SMTP | None) -> None:
    if connection is not None:
        try:
            connection.close()
        except OSError:
            pass


def _reply(send_id: str, code: int, message: bytes | str) -> DeliveryResult:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)
    outcome: Literal["retry", "failed"] = "retry" if 400 <= code < 500 else "failed"
    return DeliveryResult(send_id, outcome, f"SMTP {code}: {text}")

"""SMTP: up to `concurrency` connections, each reused across messages; STARTTLS or implicit
TLS, optional login.

A batch is spread over the connections (one thread each), so a relay's per-message wait (its
reply to the end of DATA comes after it has queued the message) overlaps instead of adding up.
Where the server offers ESMTP PIPELINING (RFC 2920), MAIL FROM, RCPT TO and DATA go out in one
write and their replies are read together: two round trips a message instead of four. Each
reply is still checked (a refused sender or recipient is that message's failure) and the
transaction is reset before the next. Without PIPELINING, each command waits for its reply. A
connection lost once a message has been written is never retried on a new connection at once
(the server may have taken it): the send is retried later, as any transient failure.
The envelope sender is `return_path` (default: the From address); with `verp`, `+send_id` is
added to its local part, so that a bounce is addressed to the send it is about.
4xx replies and connection trouble are transient (retry); 5xx replies are permanent (failed).
"""

from __future__ import annotations

import queue
import re
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
        connection.ehlo_or_helo_if_needed()  # learn the extensions (PIPELINING) before the first message
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
                _transaction(connection, email, self.envelope_sender(email))
            except _LostAfterData as exc:  # it may have been accepted: never sent again at once
                _close(connection)
                return None, DeliveryResult(email.send_id, "retry", f"SMTP server disconnected: {exc}")
            except smtplib.SMTPServerDisconnected as exc:
                _close(connection)
                connection = None
                if attempt == 2:
                    return None, DeliveryResult(email.send_id, "retry", f"SMTP server disconnected: {exc}")
                continue
            except smtplib.SMTPRecipientsRefused as exc:
                code, message = next(iter(exc.recipients.values()))
                return _keep(connection, code), _reply(email.send_id, code, message)
            except smtplib.SMTPResponseException as exc:
                return _keep(connection, exc.smtp_code), _reply(email.send_id, exc.smtp_code, exc.smtp_error)
            except (OSError, socket.timeout, smtplib.SMTPException) as exc:
                _close(connection)
                return None, DeliveryResult(email.send_id, "retry", f"SMTP connection: {exc}")
            return connection, DeliveryResult(email.send_id, "sent")
        raise AssertionError("unreachable")

    def envelope_sender(self, email: RenderedEmail) -> str:
        """MAIL FROM: `return_path` (default: the From address), with `+` and the send id added to
        its local part when `verp` is on, so a bounce names the send even without the original."""
        address = self.settings.return_path or email.sender.email
        if not self.settings.verp:
            return address
        local, _, domain = address.rpartition("@")
        return f"{local}+{email.send_id}@{domain}"

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


class _LostAfterData(smtplib.SMTPException):
    """The connection ended after the message was written and before the server's answer."""


def _transaction(connection: smtplib.SMTP, email: RenderedEmail, sender: str) -> None:
    """MAIL FROM, RCPT TO and DATA (in one write where the server offers PIPELINING, else each
    after the previous reply), then the message and its reply. Raises as
    `smtplib.SMTP.sendmail` does for a refused sender, recipient or message; `_LostAfterData`
    when the connection ends once the message has been written."""
    message = _data(email.to_bytes())
    size = f" SIZE={len(message)}" if connection.has_extn("size") else ""
    commands = [f"MAIL FROM:{smtplib.quoteaddr(sender)}{size}",
                f"RCPT TO:{smtplib.quoteaddr(email.to.email)}", "DATA"]
    if connection.has_extn("pipelining"):
        connection.send("".join(f"{command}\r\n" for command in commands))
        mail, rcpt, data = (connection.getreply() for _ in commands)
    else:
        refused = (0, b"not sent: an earlier command was refused")
        mail = connection.docmd(commands[0])
        rcpt = connection.docmd(commands[1]) if mail[0] == 250 else refused
        data = connection.docmd(commands[2]) if rcpt[0] in (250, 251) else refused
    accepted = mail[0] == 250 and rcpt[0] in (250, 251)
    if data[0] == 354 and not accepted:  # a server that opened DATA anyway: an empty end, refused
        connection.send(b".\r\n")
        connection.getreply()
    if data[0] != 354 or not accepted:
        _reset(connection)
        if mail[0] != 250:
            raise smtplib.SMTPSenderRefused(mail[0], mail[1], sender)
        if rcpt[0] not in (250, 251):
            raise smtplib.SMTPRecipientsRefused({email.to.email: rcpt})
        raise smtplib.SMTPDataError(*data)
    try:
        connection.send(message)
        code, answer = connection.getreply()
    except smtplib.SMTPServerDisconnected as exc:
        raise _LostAfterData(str(exc)) from exc
    if code != 250:
        # RFC 5321 ends the transaction whatever the answer, but a server that failed while
        # taking the message (aiosmtpd after its handler raised, answering 500) may keep it
        # open, and the next MAIL FROM on this connection would get 503 "nested MAIL command".
        _reset(connection)
        raise smtplib.SMTPDataError(code, answer)


def _data(message: bytes) -> bytes:
    """The message as DATA carries it: leading dots doubled, ended by CRLF . CRLF."""
    stuffed = re.sub(rb"(?m)^\.", b"..", message)
    if not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed + b".\r\n"


def _reset(connection: smtplib.SMTP) -> None:
    """End a refused transaction so the connection can carry the next message (as sendmail does)."""
    try:
        connection.rset()
    except smtplib.SMTPServerDisconnected:
        pass


def _close(connection: smtplib.SMTP | None) -> None:
    if connection is not None:
        try:
            connection.close()
        except OSError:
            pass


def _keep(connection: smtplib.SMTP | None, code: int) -> smtplib.SMTP | None:
    """The connection after a refusal; 421 means the server is closing it."""
    if code == 421:
        _close(connection)
        return None
    return connection


def _reply(send_id: str, code: int, message: bytes | str) -> DeliveryResult:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)
    outcome: Literal["retry", "failed"] = "retry" if 400 <= code < 500 else "failed"
    return DeliveryResult(send_id, outcome, f"SMTP {code}: {text}")

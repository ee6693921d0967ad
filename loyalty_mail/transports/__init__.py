"""Transports: where a rendered email goes. One small protocol, chosen in `sending.transport`.

    base.py          the protocol: send(batch) -> [DeliveryResult]
    directory.py     writes each message as an .eml file (demo, previews, tests)
    smtp.py          an SMTP relay, connections reused
    sendgrid_api.py  SendGrid's Mail Send API through the official client
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .base import DeliveryResult, Transport
from .directory import DirectoryTransport

if TYPE_CHECKING:
    from ..config import Settings


def transport_for(settings: Settings) -> Transport:
    """The configured transport (import of the SMTP and SendGrid code only when chosen)."""
    sending = settings.sending
    if sending.transport == "smtp":
        from .smtp import SmtpTransport
        return SmtpTransport(sending.smtp, concurrency=sending.concurrency)
    if sending.transport == "sendgrid":
        from .sendgrid_api import SendGridTransport
        return SendGridTransport(sending.sendgrid, concurrency=sending.concurrency)
    directory = Path(sending.directory)
    if not directory.is_absolute():
        directory = settings.project_dir / directory
    return DirectoryTransport(directory)


__all__ = ["DeliveryResult", "DirectoryTransport", "Transport", "transport_for"]

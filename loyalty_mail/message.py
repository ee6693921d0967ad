"""A rendered email and its RFC 5322 form: the one object every transport consumes.

The MIME bytes are written directly rather than through `email.generator`: the standard library's
pure-Python quoted-printable encoder costs several milliseconds for a 30 KB body. The HTML part
is base64 (pybase64, SIMD); the short text part is quoted-printable (binascii.b2a_qp, C) so it
stays readable, unless much of it is not ASCII (see `_text_part`). Headers with non-ASCII text
(Vietnamese subjects and names) are RFC 2047 encoded; everything is UTF-8 with CRLF line ends.
"""

from __future__ import annotations

import binascii
import email.utils
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property, lru_cache

import pybase64

SEND_ID_HEADER = "X-Loyalty-Mail-Send-Id"


@dataclass(frozen=True)
class Address:
    email: str
    name: str | None = None

    def formatted(self) -> str:
        return self._formatted

    @cached_property
    def _formatted(self) -> str:  # the sender's is the same on every message of a run
        if not self.name:
            return self.email
        if self.name.isascii():
            return email.utils.formataddr((self.name, self.email))
        return f"{encode_word(self.name)} <{self.email}>"


@dataclass(frozen=True)
class RenderedEmail:
    """Everything a transport needs to deliver one message."""

    send_id: str
    sender: Address
    to: Address
    subject: str
    html: str
    text: str
    preheader: str = ""
    template: str = ""
    locale: str = ""
    flow: str | None = None
    date: datetime | None = None
    message_id: str = ""
    unsubscribe_url: str | None = None
    unsubscribe_mailto: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    test: bool = False

    def list_unsubscribe(self) -> str | None:
        """The List-Unsubscribe value: the one-click https URL first, then a mailto if configured."""
        targets = [f"<{url}>" for url in (self.unsubscribe_url, self.unsubscribe_mailto) if url]
        return ", ".join(targets) or None

    def all_headers(self) -> dict[str, str]:
        """Headers beyond From/To/Subject: unsubscribe (RFC 2369/8058), send id, custom ones."""
        result = {SEND_ID_HEADER: self.send_id}
        unsubscribe = self.list_unsubscribe()
        if unsubscribe:
            result["List-Unsubscribe"] = unsubscribe
            if self.unsubscribe_url:
                result["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        return {**result, **self.headers}

    def to_bytes(self) -> bytes:
        """The complete RFC 5322 message (multipart/alternative, text then HTML)."""
        boundary = f"=_lm_{self.send_id.replace('-', '')[:32]}"
        lines = [
            f"From: {self.sender.formatted()}",
            f"To: {self.to.formatted()}",
            f"Subject: {_header_text(self.subject)}",
            f"Date: {_date_header(self.date) if self.date else email.utils.formatdate()}",
            f"Message-ID: {self.message_id or email.utils.make_msgid()}",
            "MIME-Version: 1.0",
        ]
        lines += [f"{name}: {_header_text(value)}" for name, value in self.all_headers().items()]
        lines += [f'Content-Type: multipart/alternative; boundary="{boundary}"', ""]
        head = "\r\n".join(lines).encode("ascii")
        return b"".join([
            head, b"\r\n",
            f"--{boundary}\r\n".encode(), _text_part("text/plain", self.text),
            f"--{boundary}\r\n".encode(), _base64_part("text/html", self.html),
            f"--{boundary}--\r\n".encode(),
        ])


@lru_cache(maxsize=256)
def _date_header(moment: datetime) -> str:
    return email.utils.format_datetime(moment)  # a batch shares one `now`


def _header_text(value: str) -> str:
    value = value.replace("\r", " ").replace("\n", " ")
    return value if value.isascii() else encode_word(value)


def encode_word(value: str) -> str:
    """RFC 2047 base64 encoded-words of at most 64 characters, folded with CRLF SP. Words break
    after a space where one is near (some readers put a space between encoded-words), and never
    inside a UTF-8 character. The standard library's Header does this ten times slower."""
    data = value.encode("utf-8")
    words: list[bytes] = []
    while len(data) > 39:  # 39 bytes -> 52 base64 -> 64 with =?utf-8?b?...?=, room for "Subject: "
        cut = 39
        while data[cut] & 0xC0 == 0x80:  # never split a character
            cut -= 1
        space = data.rfind(b" ", 0, cut)
        cut = space + 1 if space > cut // 2 else cut
        words.append(data[:cut])
        data = data[cut:]
    words.append(data)
    return "\r\n ".join(f"=?utf-8?b?{binascii.b2a_base64(w, newline=False).decode()}?=" for w in words)


def _base64_part(content_type: str, body: str | bytes) -> bytes:
    """Base64 for the HTML, with pybase64 (SIMD): 20x faster than `binascii`, whose byte-at-a-time
    loop was the largest single cost of building a message (see benchmarks/README.md)."""
    data = body.encode("utf-8") if isinstance(body, str) else body
    lines = pybase64.encodebytes(data).replace(b"\n", b"\r\n")  # 76-character lines, each ended
    return (f"Content-Type: {content_type}; charset=utf-8\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n").encode() + lines


def _text_part(content_type: str, body: str) -> bytes:
    """The text part: quoted-printable when it is mostly ASCII (English), so it stays readable
    in the raw message; base64 when much of it is not (Vietnamese), where quoted-printable would
    be neither readable nor short (=E1=BB=87 for each letter) and costs five times as much."""
    data = body.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")
    if (len(data) - len(body)) * 8 > len(body):  # UTF-8 bytes beyond one per character
        return _base64_part(content_type, data)
    encoded = binascii.b2a_qp(data, istext=True)
    # The CRLF before the next boundary belongs to the boundary: add one so the body keeps its own.
    encoded += b"\r\n"
    return (f"Content-Type: {content_type}; charset=utf-8\r\n"
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n").encode() + encoded

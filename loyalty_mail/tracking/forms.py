"""Form bodies posted to the tracking service's pages and by mailbox providers' one-click
unsubscribe (RFC 8058): `application/x-www-form-urlencoded` or `multipart/form-data`, read into
{name: [values]}. Pure: no I/O. At most MAX_FIELDS fields; anything else is BadForm, never an
exception of the parsers.
"""

from __future__ import annotations

import email.errors
import email.policy
import re
from email.message import Message
from email.parser import BytesParser
from urllib.parse import parse_qs

MAX_FIELDS = 50
_CONTENT_TYPE = re.compile(rb"^content-type[ \t]*:", re.IGNORECASE | re.MULTILINE)


class BadForm(ValueError):
    """The body is not a form this service reads; `key` names the page's text that says why
    (pages.TEXTS: `too_many`, `unreadable`)."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(reason)
        self.key = key


def parse_form(content_type: str | None, body: bytes) -> dict[str, list[str]]:
    """The fields of a posted form: multipart/form-data when the Content-Type says so, else
    urlencoded (what RFC 8058 and HTML forms send by default)."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        return _multipart(content_type or "", body)
    try:
        return parse_qs(body.decode("utf-8", "replace"), max_num_fields=MAX_FIELDS)
    except ValueError:
        raise BadForm("too_many", f"more than {MAX_FIELDS} form fields") from None


def _multipart(content_type: str, body: bytes) -> dict[str, list[str]]:
    if len(_CONTENT_TYPE.findall(body)) > MAX_FIELDS:
        raise BadForm("too_many", f"more than {MAX_FIELDS} form fields")
    header = " ".join(content_type.split()).encode("latin-1", "replace")
    try:
        message = BytesParser(policy=email.policy.HTTP).parsebytes(b"Content-Type: " + header + b"\r\n\r\n" + body)
        parts = message.get_payload()
        if not message.is_multipart() or not isinstance(parts, list):
            raise BadForm("unreadable", "a multipart/form-data body without its boundary or its closing line")
        if len(parts) > MAX_FIELDS:
            raise BadForm("too_many", f"more than {MAX_FIELDS} form fields")
        fields: dict[str, list[str]] = {}
        for part in parts:
            if not isinstance(part, Message) or part.is_multipart():
                raise BadForm("unreadable", "a form field that is itself multipart")
            name = part.get_param("name", header="content-disposition")
            if not isinstance(name, str) or not name:
                continue
            value = part.get_payload(decode=True)
            text = value.decode(part.get_content_charset() or "utf-8", "replace") if isinstance(value, bytes) else ""
            fields.setdefault(name, []).append(text)
        return fields
    except BadForm:
        raise
    except (email.errors.MessageError, LookupError, ValueError, TypeError, RecursionError) as exc:
        raise BadForm("unreadable", f"the multipart form cannot be read: {type(exc).__name__}") from None

"""Form bodies posted to the tracking service's pages and by mailbox providers' one-click
unsubscribe (RFC 8058), read into {name: [values]}. Pure: no I/O. At most MAX_FIELDS fields;
anything else is BadForm, never an exception of the parser.
"""

from __future__ import annotations

from urllib.parse import parse_qs

MAX_FIELDS = 50


class BadForm(ValueError):
    """The body is not a form this service reads; `key` names the page's text that says why
    (pages.TEXTS: `too_many`, `unreadable`)."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(reason)
        self.key = key


def parse_form(content_type: str | None, body: bytes) -> dict[str, list[str]]:
    """The fields of a posted urlencoded form (what RFC 8058 and HTML forms send by default)."""
    try:
        return parse_qs(body.decode("utf-8", "replace"), max_num_fields=MAX_FIELDS)
    except ValueError:
        raise BadForm("too_many", f"more than {MAX_FIELDS} form fields") from None

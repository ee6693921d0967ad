"""Reading bounce and complaint reports: pure parsers of one message's bytes, no I/O.

Two kinds of report arrive in the bounce mailbox, both `multipart/report` (RFC 6522):

- a delivery status notification (RFC 3464, `report-type=delivery-status`): a
  `message/delivery-status` part with one block of fields per recipient. Status 5.x.x is a hard
  bounce, 4.x.x a soft one (Action `failed` or `delayed`); 2.x.x (delivered, relayed, expanded)
  is no failure at all.
- a feedback-loop complaint (ARF, RFC 5965, `report-type=feedback-report`): a
  `message/feedback-report` part whose `Feedback-Type` is `abuse` or `fraud`.

Either may carry the original message (`message/rfc822`) or its headers (`text/rfc822-headers`);
that is where our `X-Loyalty-Mail-Send-Id` and `Message-ID: <send_id@domain>` are found. With
VERP (`sending.smtp.verp`) the report itself comes to `bounces+send_id@domain`. The
standard library's `email` package does the MIME work (it already splits
`message/delivery-status` into its blocks); this module only reads the fields. Whatever a message
lacks comes back as `Unreadable` with the reason, never as an exception of the email package.
"""

from __future__ import annotations

import email
import email.errors
import email.policy
import email.utils
import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.message import Message
from email.parser import HeaderParser
from typing import Any

from ..message import SEND_ID_HEADER

MAX_KEY = 200                 # tracking_events.provider_event_id
MAX_FIELD = 500               # a field kept in the event's detail
MAX_PARTS = 100               # Content-Type fields in one message: its MIME parts, at most
MAX_DEPTH = 12                # parts within parts (a report, its original, the original's parts)
COMPLAINT_TYPES = ("abuse", "fraud")
FAILURE_ACTIONS = ("failed", "delayed")
_CONTENT_TYPE = re.compile(rb"^content-type[ \t]*:", re.IGNORECASE | re.MULTILINE)
_STATUS = re.compile(r"\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
_MESSAGE_ID = re.compile(r"<([^<>@\s]+)@[^<>\s]+>")
_SEND_ID = re.compile(r"[0-9A-Za-z_-]{1,32}")
_VERP = re.compile(r"\+([0-9A-Za-z_-]{1,32})@")


class Unreadable(ValueError):
    """The message is not a report this module can apply; the text says why."""


@dataclass(frozen=True)
class BounceReport:
    """One report, read. `kind` is `bounce` (hard: 5.x.x), `soft_bounce` (4.x.x, the message was
    given up), `deferred` (4.x.x, still being retried) or `spam_complaint`; `send_ids` are the
    candidates for the send it is about, most specific first; `key` identifies the report itself
    (its own Message-ID, or a digest of its bytes) so that reading it again records nothing."""

    kind: str
    key: str
    send_ids: tuple[str, ...]
    occurred_at: datetime
    status: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def soft(self) -> bool:
        return self.kind in ("soft_bounce", "deferred")

    @property
    def suppress_as(self) -> str | None:
        """The suppression reason the report implies at once (soft bounces wait for the limit)."""
        return {"bounce": "hard_bounce", "spam_complaint": "spam_complaint"}.get(self.kind)


def read_report(raw: bytes, received_at: datetime) -> BounceReport:
    """The report in `raw` (a whole RFC 5322 message), or Unreadable. `received_at` is the time
    used when the message has no usable Date. A message of more than MAX_PARTS parts, or nested
    deeper than MAX_DEPTH, is Unreadable before the email package recurses into it."""
    declared = len(_CONTENT_TYPE.findall(raw))
    if declared > MAX_PARTS:
        raise Unreadable(f"{declared} Content-Type fields: more than the {MAX_PARTS} MIME parts a report may have")
    try:
        message = email.message_from_bytes(raw, policy=email.policy.compat32)
        depth = _depth(message)
        if depth > MAX_DEPTH:
            raise Unreadable(f"MIME parts nested {depth} deep: more than the {MAX_DEPTH} a report may have")
        return _report(message, raw, received_at)
    except Unreadable:
        raise
    except RecursionError:
        raise Unreadable("the message's MIME parts are nested too deeply to read") from None
    except (email.errors.MessageError, LookupError, ValueError, TypeError, AttributeError) as exc:
        # the email package's own failures on a broken message (a bad charset, a mangled header)
        raise Unreadable(f"the message cannot be parsed: {type(exc).__name__}: {exc}"[:300]) from None


def _report(message: Message, raw: bytes, received_at: datetime) -> BounceReport:
    content_type = message.get_content_type()
    report_type = str(message.get_param("report-type") or "").lower()
    if content_type != "multipart/report":
        raise Unreadable(f"not a delivery status or feedback report (Content-Type {content_type})")
    key = _key(message, raw)
    occurred_at = _date(message.get("Date"), received_at)
    send_ids = _send_ids(message)
    status: str | None
    if report_type == "delivery-status":
        kind, status, detail = _delivery_status(message)
    elif report_type == "feedback-report":
        kind, status, detail = _feedback(message)
    else:
        raise Unreadable(f"multipart/report of report-type '{report_type[:40]}' (expected delivery-status "
                         "or feedback-report)")
    return BounceReport(kind=kind, key=key, send_ids=send_ids, occurred_at=occurred_at, status=status,
                        detail={**detail, "report": report_type, "report_message_id": _text(message.get("Message-ID"))})


def _delivery_status(message: Message) -> tuple[str, str, dict[str, Any]]:
    part = _part(message, "message/delivery-status")
    if part is None:
        raise Unreadable("a delivery-status report without a message/delivery-status part")
    blocks = _blocks(part)
    recipients = blocks[1:]
    if not recipients:
        raise Unreadable("the delivery-status part has no per-recipient fields")
    failures = [r for r in recipients if str(r.get("Action", "")).strip().lower() in FAILURE_ACTIONS]
    if not failures:
        actions = ", ".join(sorted({str(r.get("Action", "none")).strip().lower() for r in recipients}))
        raise Unreadable(f"no recipient failed or was delayed (Action: {actions[:80]})")
    recipient = failures[0]
    action = str(recipient.get("Action")).strip().lower()
    match = _STATUS.match(str(recipient.get("Status", "")))
    if match is None:
        raise Unreadable(f"Status '{_text(recipient.get('Status')) or ''}' is not an RFC 3463 code such as 5.1.1")
    status = ".".join(match.groups())
    if match.group(1) == "2":
        raise Unreadable(f"Status {status} is a success, not a failure")
    kind = "bounce" if match.group(1) == "5" else ("deferred" if action == "delayed" else "soft_bounce")
    detail = {"action": action, "status": status,
              "recipient": _address(recipient.get("Final-Recipient")),
              "original_recipient": _address(recipient.get("Original-Recipient")),
              "diagnostic": _text(recipient.get("Diagnostic-Code")),
              "remote_mta": _text(recipient.get("Remote-MTA")),
              "reporting_mta": _text(blocks[0].get("Reporting-MTA"))}
    return kind, status, {k: v for k, v in detail.items() if v}


def _feedback(message: Message) -> tuple[str, str | None, dict[str, Any]]:
    part = _part(message, "message/feedback-report")
    if part is None:
        raise Unreadable("a feedback-report without a message/feedback-report part")
    fields = _blocks(part)[0]
    feedback_type = str(fields.get("Feedback-Type", "")).strip().lower()
    if not feedback_type:
        raise Unreadable("the feedback report has no Feedback-Type")
    if feedback_type not in COMPLAINT_TYPES:
        raise Unreadable(f"Feedback-Type '{feedback_type[:40]}' is not a complaint "
                         f"(complaints: {', '.join(COMPLAINT_TYPES)})")
    detail = {"feedback_type": feedback_type, "user_agent": _text(fields.get("User-Agent")),
              "recipient": _address(fields.get("Original-Rcpt-To")),
              "source_ip": _text(fields.get("Source-IP"))}
    return "spam_complaint", None, {k: v for k, v in detail.items() if v}


def _depth(message: Message) -> int:
    """How deep the message's parts are nested (0: a single part), without recursion."""
    deepest, stack = 0, [(message, 0)]
    while stack:
        part, depth = stack.pop()
        deepest = max(deepest, depth)
        payload = part.get_payload()
        if isinstance(payload, list):
            stack += [(p, depth + 1) for p in payload if isinstance(p, Message)]
    return deepest


def _part(message: Message, content_type: str) -> Message | None:
    return next((p for p in message.walk() if p.get_content_type() == content_type), None)


def _blocks(part: Message) -> list[Message]:
    """The field blocks of a delivery-status or feedback-report part (the email package parses
    both into messages; a part it left as text is parsed here)."""
    payload = part.get_payload()
    if isinstance(payload, list) and all(isinstance(p, Message) for p in payload) and payload:
        return list(payload)
    text = payload if isinstance(payload, str) else ""
    blocks = [HeaderParser().parsestr(chunk.strip() + "\n") for chunk in re.split(r"\r?\n\s*\r?\n", text)
              if chunk.strip()]
    if not blocks:
        raise Unreadable(f"the {part.get_content_type()} part is empty")
    return blocks


def _original_headers(message: Message) -> list[Message]:
    """The original message's headers, as enclosed in the report (there may be none): only the
    report's own parts count, never what is enclosed deeper (a bounce of a bounce is not about
    the message the first bounce enclosed)."""
    found: list[Message] = []
    parts = message.get_payload()
    for part in parts if isinstance(parts, list) else []:
        if not isinstance(part, Message):
            continue
        content_type = part.get_content_type()
        if content_type in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            found += [p for p in payload if isinstance(p, Message)] if isinstance(payload, list) else []
        elif content_type in ("text/rfc822-headers", "text/global-headers"):
            text = part.get_payload(decode=True)
            if isinstance(text, bytes):
                found.append(HeaderParser().parsestr(text.decode("utf-8", "replace")))
    return found


def _send_ids(message: Message) -> tuple[str, ...]:
    """Candidate send ids: the original's X-Loyalty-Mail-Send-Id, then the left side of its
    Message-ID (ours is `<send_id@sender domain>`), then the `+send_id` of the address the report
    came to (VERP), then the report's In-Reply-To/References."""
    candidates: list[str] = []
    originals = _original_headers(message)
    for original in originals:
        candidates += [str(v).strip() for v in original.get_all(SEND_ID_HEADER, [])]
    for original in originals:
        candidates += _MESSAGE_ID.findall(str(original.get("Message-ID", "")))
    for name in ("X-Original-To", "Delivered-To", "To"):      # VERP: the report comes to bounces+ID@
        candidates += _VERP.findall(" ".join(str(v) for v in message.get_all(name, [])))
    for name in ("In-Reply-To", "References"):
        candidates += _MESSAGE_ID.findall(str(message.get(name, "")))
    unique = dict.fromkeys(c for c in candidates if _SEND_ID.fullmatch(c))
    return tuple(unique)


def _key(message: Message, raw: bytes) -> str:
    """The report's own identity: `mailbox:` and its Message-ID, or a digest of the bytes when it
    has none (or one too long to store)."""
    message_id = _text(message.get("Message-ID"))
    if message_id and len(message_id) <= MAX_KEY - len("mailbox:"):
        return f"mailbox:{message_id}"
    return "mailbox:sha256:" + hashlib.sha256(raw).hexdigest()


def _date(value: Any, default: datetime) -> datetime:
    try:
        parsed = email.utils.parsedate_to_datetime(str(value)) if value else None
    except (TypeError, ValueError, IndexError):
        parsed = None
    if parsed is None or not 1990 <= parsed.year <= 9998:
        return default
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)


def _text(value: Any) -> str | None:
    """A field as one line of text without NUL bytes or lone surrogates, cut to MAX_FIELD."""
    if value is None:
        return None
    text = " ".join(str(value).split())
    text = re.sub("[\x00\ud800-\udfff]", "", text)
    return text[:MAX_FIELD] or None


def _address(value: Any) -> str | None:
    """`rfc822; lan@example.com` -> `lan@example.com`."""
    text = _text(value)
    if text is None:
        return None
    return text.split(";", 1)[-1].strip().strip("<>").lower()[:254] or None

"""Polling the bounce mailbox: read each unseen report, match it to our send, record it, flag it.

For each unseen message: read the report (bounce_reports), find the send it is about (the
original's `X-Loyalty-Mail-Send-Id`, else the left side of its `Message-ID`), record it as a
tracking event and suppress the address as the report implies (store.record_bounce, one
transaction), and only then flag the message `\\Seen`. A crash between the two leaves the message
unseen; the next poll reads it again and records nothing new (the event is keyed by the report's
own Message-ID). A message that is not a report, or is about no send of ours, is reported with
the reason and set aside (mailbox.py: a keyword, or `\\Seen`) so that no later poll reads it again;
one bad message never stops the others, and a poll logs one line for all it left alone.

A dry run is the same pipeline with a read-only mailbox and each transaction rolled back.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from ..config import BounceMailboxSettings
from ..errors import ConfigError
from .bounce_reports import BounceReport, Unreadable, read_report
from .mailbox import MAX_BYTES, MAX_MESSAGES, ImapMailbox, Mailbox, MailboxError
from .store import record_bounce, sent_to
from .webhooks import DeliveryEvent

log = logging.getLogger("loyalty_mail.bounces")

# Outcomes of one message.
RECORDED = "recorded"        # stored (and the address suppressed if the report says so)
ALREADY = "already"          # stored by an earlier poll that stopped before flagging it
UNMATCHED = "unmatched"      # a report, about no send of ours: set aside
UNREADABLE = "unreadable"    # not a report we can read: set aside


@dataclass(frozen=True)
class Outcome:
    """What the poll did with one message."""

    uid: str
    outcome: str
    kind: str | None = None
    send_id: str | None = None
    email: str | None = None
    status: str | None = None
    suppressed: bool = False
    reason: str | None = None

    def as_row(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class SoftBouncePolicy:
    limit: int
    window: timedelta

    @classmethod
    def of(cls, settings: BounceMailboxSettings) -> SoftBouncePolicy:
        return cls(settings.soft_bounce_limit, settings.soft_bounce_window)


def poll_mailbox(settings: BounceMailboxSettings, engine: sa.Engine, now: datetime, *,
                 dry_run: bool = False, limit: int = MAX_MESSAGES) -> list[Outcome]:
    """Poll the configured bounce mailbox once (read-only for a dry run), at most `limit`
    messages; MailboxError when it cannot be reached or read."""
    with ImapMailbox(settings, readonly=dry_run, limit=limit) as mailbox:
        return poll(mailbox, engine, SoftBouncePolicy.of(settings), now, dry_run=dry_run)


def poll_bounces_logged(settings: BounceMailboxSettings, engine: sa.Engine, now: datetime) -> None:
    """The daemon's poll: the summary is logged, and a mailbox that cannot be read (or whose
    password is not set) is logged as a warning (the tick goes on; the next one tries again)."""
    try:
        outcomes = poll_mailbox(settings, engine, now)
    except (MailboxError, ConfigError) as exc:
        log.warning("bounce mailbox not read this tick: %s", exc)
        return
    if outcomes:
        log.info("bounce mailbox: %s", ", ".join(f"{k} {v}" for k, v in summary(outcomes).items()))


def summary(outcomes: list[Outcome]) -> dict[str, int]:
    """Counts for one line of output: recorded per kind, suppressed, already recorded, left alone."""
    recorded = [o for o in outcomes if o.outcome == RECORDED]
    return {"read": len(outcomes),
            "hard_bounces": sum(o.kind == "bounce" for o in recorded),
            "soft_bounces": sum(o.kind in ("soft_bounce", "deferred") for o in recorded),
            "complaints": sum(o.kind == "spam_complaint" for o in recorded),
            "suppressed": sum(o.suppressed for o in outcomes),
            "already": sum(o.outcome == ALREADY for o in outcomes),
            "left_alone": sum(o.outcome in (UNMATCHED, UNREADABLE) for o in outcomes)}


def poll(mailbox: Mailbox, engine: sa.Engine, policy: SoftBouncePolicy, now: datetime, *,
         dry_run: bool = False) -> list[Outcome]:
    """Handle every unseen message of `mailbox` (see the module's docstring); one outcome each."""
    outcomes = []
    left: list[Outcome] = []
    for fetched in mailbox.unseen():
        if fetched.raw is None:
            outcome = Outcome(fetched.uid, UNREADABLE,
                              reason=f"{fetched.size} bytes, more than the {MAX_BYTES} a report may have")
        else:
            outcome = _handle(fetched.uid, fetched.raw, engine, policy, now, dry_run)
        if outcome.outcome in (RECORDED, ALREADY) and not dry_run:
            mailbox.mark_seen(fetched.uid)
        if outcome.outcome in (UNMATCHED, UNREADABLE):
            if not dry_run:
                mailbox.set_aside(fetched.uid)
            left.append(outcome)
        outcomes.append(outcome)
    if left:
        log.warning("bounce mailbox: %d message(s) left alone%s (first: message %s, %s)", len(left),
                    "" if dry_run else " and set aside", left[0].uid, left[0].reason)
    if mailbox.backlog:
        log.warning("bounce mailbox: %d more unseen message(s) wait for the next poll (this one read %d)",
                    mailbox.backlog, len(outcomes))
    return outcomes


def _handle(uid: str, raw: bytes, engine: sa.Engine, policy: SoftBouncePolicy, now: datetime,
            dry_run: bool) -> Outcome:
    try:
        report = read_report(raw, received_at=now)
    except Unreadable as exc:
        return Outcome(uid, UNREADABLE, reason=str(exc))
    matched = sent_to(engine, report.send_ids)
    send_id = next((candidate for candidate in report.send_ids if candidate in matched), None)
    if send_id is None:
        return Outcome(uid, UNMATCHED, kind=report.kind, status=report.status, reason=_unmatched(report))
    email = matched[send_id]
    recorded = record_bounce(engine, _event(report, send_id, email), now, soft_limit=policy.limit,
                             soft_window=policy.window, keep=not dry_run)
    return Outcome(uid, RECORDED if recorded.new else ALREADY, kind=report.kind, send_id=send_id, email=email,
                   status=report.status, suppressed=recorded.suppressed,
                   reason=(f"{recorded.soft_bounces} of {policy.limit} soft bounces" if report.soft else None))


def _event(report: BounceReport, send_id: str, email: str) -> DeliveryEvent:
    return DeliveryEvent(kind=report.kind, send_id=send_id, email=email, occurred_at=report.occurred_at,
                         provider_event_id=report.key, suppress_as=report.suppress_as, detail=report.detail)


def _unmatched(report: BounceReport) -> str:
    if not report.send_ids:
        return ("the report holds neither an X-Loyalty-Mail-Send-Id nor a Message-ID of ours "
                "(the original message or its headers are not enclosed)")
    return f"no send has the id {', '.join(report.send_ids[:3])} (not one of ours, or deleted)"

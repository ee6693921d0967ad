"""Deliver what is due: claim sends batch by batch, render, hand to the transport, record.

`deliver_due` is the last step of every tick, of every worker and of each dispatcher process;
`TickReport` counts what one tick (or one dispatcher) did.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from .. import consent
from ..config import SendingSettings
from ..errors import NotFound, TemplateError
from ..rendering import Renderer
from ..transports import DeliveryResult, Transport
from . import ledger
from .planner import Plan

log = logging.getLogger("loyalty_mail.run")


@dataclass
class TickReport:
    now: datetime
    plan: Plan
    recorded: dict[str, int] = field(default_factory=dict)
    delivered: int = 0
    failed: int = 0
    retrying: int = 0
    unknown: int = 0
    suppressed_late: int = 0
    paused: str | None = None
    last_error: str | None = None  # the provider's (or the template's) reason for the last send that did not go

    def nothing_delivered(self) -> bool:
        """Sends were due and every one failed or waits for a retry."""
        return not self.delivered and bool(self.failed or self.retrying)

    def summary(self) -> str:
        plan = self.plan
        return (f"tick at {self.now:%Y-%m-%d %H:%M:%S} UTC: {plan.total('planned') + plan.total('deferred')} "
                f"planned, {plan.total('held_out')} held out, {plan.total('skipped')} skipped, "
                f"{self.delivered} delivered, {self.failed} failed, {self.retrying} to retry, "
                f"{self.unknown} unknown"
                + "".join(f"; {n} exited {flow} ({reason})" for (flow, reason), n in sorted(plan.exits.items())))


class RateLimiter:
    """At most `per_second` messages a second (0: no limit), paced on the monotonic clock."""

    def __init__(self, per_second: float) -> None:
        self.interval = 1 / per_second if per_second else 0.0
        self._next = time.monotonic()

    def chunks(self, items: list[Any]) -> Iterator[list[Any]]:
        """`items` in groups of about a tenth of a second's allowance, each released on time."""
        if not self.interval:
            yield items
            return
        size = max(1, int(0.1 / self.interval))
        for start in range(0, len(items), size):
            chunk = items[start:start + size]
            now = time.monotonic()
            if self._next > now:
                time.sleep(self._next - now)
            self._next = max(self._next, now) + self.interval * len(chunk)
            yield chunk


def _windows(emails: list[Any], size: int) -> Iterator[list[Any]]:
    """`emails` in groups of at most `size`: what the transport has in flight at once."""
    for start in range(0, len(emails), size):
        yield emails[start:start + size]


def deliver_due(engine: sa.Engine, renderer: Renderer, transport: Transport, now: datetime,
                report: TickReport, sending: SendingSettings,
                should_stop: Callable[[], bool] = lambda: False,
                clock: Callable[[], datetime] | None = None) -> None:
    """Claim due sends batch by batch, check each member again, render, hand to the transport,
    record the outcome. Transient failures are retried later with backoff; a provider that keeps
    failing pauses dispatch until the next tick.

    What is due is decided at `now`; each claim, each lease renewal and each result is stamped
    with `clock()` (the daemon's real clock), so a tick that delivers for longer than the lease
    never looks abandoned to other dispatchers: its claim is as old as the batch, not the tick,
    and a batch still being handed over renews its lease every chunk.

    The batch goes to the transport in windows of `sending.concurrency` messages (what it has in
    flight at once), each stamped as handed over in one statement just before: when this process
    dies, only the window in flight is in doubt (`unknown`); the rest of its claim is queued again
    when the lease expires."""
    clock = clock or (lambda: now)
    report.unknown += ledger.expire_leases(engine, clock(), sending.lease, sending.max_attempts)
    limiter = RateLimiter(float(sending.rate_limit))
    rng = random.Random()
    transient_in_a_row = 0
    last: DeliveryResult | None = None
    while not should_stop():
        renewed = clock()
        claimed = ledger.claim_due(engine, now, sending.batch_size, claimed_at=renewed)
        if not claimed:
            return
        outcomes: list[ledger.Outcome] = []
        emails, sends, jobs = [], {}, []
        left = _left_topics(engine, claimed, renderer)
        for item in claimed:
            send, member = item["send"], item["member"]
            paused = member.get("paused_until") is not None and member["paused_until"] > now
            if not member["subscribed"] or member["suppressed"] or paused or (
                    send["member_ref"], renderer.settings.send_topic(send["flow"], send["occurrence"])) in left:
                outcomes.append(ledger.Outcome(send["id"], "suppressed", "unsubscribed, suppressed, "
                                               "paused or left the topic after it was planned"))
                report.suppressed_late += 1
                continue
            sends[send["send_id"]] = send
            jobs.append((send["template"], member, send["send_id"], send["flow"], send["occurrence"]))
        for index, (template, member, send_id, flow, occurrence) in enumerate(jobs):
            if should_stop():  # each render is bounded by rendering.timeout; the rest go back
                outcomes += [ledger.Outcome(sends[job[2]]["id"], "retry", "queued again: the dispatcher "
                                            "stopped before rendering it", retry_at=clock())
                             for job in jobs[index:]]
                report.retrying += len(jobs) - index
                break
            try:
                emails.append(renderer.render(template, member, now=now, send_id=send_id,
                                              flow={"name": flow}, occurrence=occurrence,
                                              subject=(occurrence.get("variant") or {}).get("subject")))
            except (TemplateError, NotFound) as exc:  # NotFound: the email left templates/
                outcomes.append(ledger.Outcome(sends[send_id]["id"], "failed", f"template: {exc}"))
                report.failed += 1
                report.last_error = f"template: {exc}"
        answered = renewed
        for chunk in limiter.chunks(emails):
            for window in _windows(chunk, sending.concurrency):
                # One transaction: the previous window's outcomes, and this window handed over.
                held = ledger.hand_over(engine, [(sends[e.send_id]["id"], sends[e.send_id]["attempts"])
                                                 for e in window], clock(), settled=outcomes, settled_at=answered)
                outcomes = []
                window = [e for e in window if sends[e.send_id]["id"] in held]  # others: lease lost
                results = transport.send(window) if window else []
                answered = clock()
                for result in results:
                    last = result
                    transient_in_a_row = _settle(result, sends[result.send_id], sending, rng, answered,
                                                 report, outcomes, transient_in_a_row)
                if answered - renewed > sending.lease / 4:  # a slow batch: tell the others it is alive
                    renewed = answered
                    ledger.renew(engine, [sends[e.send_id]["id"] for e in emails], renewed)
        ledger.finish(engine, outcomes, answered)
        if transient_in_a_row >= sending.pause_after:
            report.paused = (f"pausing dispatch until the next tick: {transient_in_a_row} transient "
                             f"failures in a row (last: {last.detail if last else None})")
            log.warning(report.paused)
            return


def _left_topics(engine: sa.Engine, claimed: list[dict[str, Any]], renderer: Renderer) -> set[tuple[int, str]]:
    """(member_ref, topic) of the claimed members who do not receive a topic (checked again
    right before sending, as unsubscribes are)."""
    settings = renderer.settings
    if not settings.topics:
        return set()
    with engine.connect() as conn:
        return consent.opted_out(conn, sorted({item["send"]["member_ref"] for item in claimed}),
                                 {t.name: t.default for t in settings.topics})


def _settle(result: DeliveryResult, send: dict[str, Any], sending: SendingSettings, rng: random.Random,
            answered: datetime, report: TickReport, outcomes: list[ledger.Outcome], in_a_row: int) -> int:
    """Turn the transport's answer for one send into its outcome; the transient failures in a row."""
    if result.outcome != "sent":
        report.last_error = result.detail
    if result.outcome == "sent":
        outcomes.append(ledger.Outcome(send["id"], "sent", provider_id=result.provider_id))
        report.delivered += 1
        return 0
    if result.outcome == "failed":
        outcomes.append(ledger.Outcome(send["id"], "failed", result.detail))
        report.failed += 1
        return 0
    if send["attempts"] >= sending.max_attempts:
        outcomes.append(ledger.Outcome(send["id"], "failed", f"gave up after {send['attempts']} "
                                       f"attempts: {result.detail}"))
        report.failed += 1
        return in_a_row
    delay = ledger.retry_delay(send["attempts"], sending.retry_base, result.retry_after, rng)
    outcomes.append(ledger.Outcome(send["id"], "retry", result.detail, retry_at=answered + delay))
    report.retrying += 1
    return in_a_row + 1

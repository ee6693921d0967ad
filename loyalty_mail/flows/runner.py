"""One tick of the engine: plan at `now`, record, render and deliver what is due.

`run_once` is what `loyalty-mail run --once` and every daemon tick call. The dry run is the same
planning with a different last step: nothing is recorded, and (with `out`) each would-be email is
rendered untracked into a review folder.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ..config import SendingSettings, Settings
from ..errors import TemplateError
from ..members import member_profile
from ..rendering import Renderer
from ..segments import load_catalog
from ..transports import Transport, transport_for  # noqa: F401 - re-exported for the CLI
from . import ledger
from .planner import Plan, Planner

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

    def summary(self) -> str:
        plan = self.plan
        return (f"tick at {self.now:%Y-%m-%d %H:%M:%S} UTC: {plan.total('planned') + plan.total('deferred')} "
                f"planned, {plan.total('held_out')} held out, {plan.total('skipped')} skipped, "
                f"{self.delivered} delivered, {self.failed} failed, {self.retrying} to retry, "
                f"{self.unknown} unknown")


def build_planner(settings: Settings, dialect: str) -> Planner:
    catalog, problems = load_catalog(settings)
    if problems:
        from ..errors import ConfigError
        raise ConfigError(problems)
    return Planner(settings, catalog, dialect)


def check_flow_templates(settings: Settings, renderer: Renderer) -> None:
    missing = [f"flow '{f.name}': no email template '{f.template}' in templates/ "
               f"(emails: {', '.join(renderer.catalog.names) or 'none'})"
               for f in settings.flows if f.template not in renderer.catalog.variants]
    if missing:
        from ..errors import ConfigError
        raise ConfigError(missing)


def run_once(engine: sa.Engine, planner: Planner, renderer: Renderer, transport: Transport,
             now: datetime, *, flows: list[str] | None = None,
             should_stop: Callable[[], bool] = lambda: False,
             clock: Callable[[], datetime] | None = None) -> TickReport:
    """Plan, record, then deliver every planned send that is due (including earlier ones).
    `should_stop` is asked between batches: a stopping daemon finishes the batch in hand.
    With `sending.dispatchers` > 1, delivery runs in that many processes. `clock` (default: `now`
    throughout) stamps claims and sends as delivery goes on; see deliver_due."""
    plan = Plan(now, keep=False)  # decisions are recorded chunk by chunk as planning streams on
    report = TickReport(now, plan)
    recorded: Counter[str] = Counter()
    planner.plan_in(engine, now, flows=flows, plan=plan,
                    on_part=lambda part: recorded.update(ledger.record(engine, part, now)))
    report.recorded = dict(recorded)
    sending = planner.settings.sending
    if sending.dispatchers > 1:
        from .dispatchers import deliver_in_parallel
        deliver_in_parallel(engine, planner.settings, now, sending.dispatchers, report, should_stop, clock)
    else:
        deliver_due(engine, renderer, transport, now, report, sending, should_stop, clock)
    log.info(report.summary())
    return report


def dispatch_once(engine: sa.Engine, settings: Settings, renderer: Renderer, transport: Transport,
                  now: datetime, should_stop: Callable[[], bool] = lambda: False,
                  clock: Callable[[], datetime] | None = None) -> TickReport:
    """Deliver what is due, without planning: what workers and standby daemons do each tick."""
    report = TickReport(now, Plan(now))
    deliver_due(engine, renderer, transport, now, report, settings.sending, should_stop, clock)
    if report.delivered or report.failed or report.unknown:
        log.info("dispatch at %s UTC: %d delivered, %d failed, %d to retry, %d unknown",
                 f"{now:%Y-%m-%d %H:%M:%S}", report.delivered, report.failed, report.retrying, report.unknown)
    return report


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
    and a batch still being handed over renews its lease every chunk."""
    clock = clock or (lambda: now)
    report.unknown += ledger.expire_leases(engine, clock(), sending.lease)
    limiter = RateLimiter(float(sending.rate_limit))
    rng = random.Random()
    transient_in_a_row = 0
    while not should_stop():
        renewed = clock()
        claimed = ledger.claim_due(engine, now, sending.batch_size, claimed_at=renewed)
        if not claimed:
            return
        outcomes: list[ledger.Outcome] = []
        emails, sends, jobs = [], {}, []
        for item in claimed:
            send, member = item["send"], item["member"]
            if not member["subscribed"] or member["suppressed"]:
                outcomes.append(ledger.Outcome(send["id"], "suppressed",
                                               "unsubscribed or suppressed after it was planned"))
                report.suppressed_late += 1
                continue
            sends[send["send_id"]] = send
            jobs.append((send["template"], member, send["send_id"], send["flow"], send["occurrence"]))
        for template, member, send_id, flow, occurrence in jobs:
            try:
                emails.append(renderer.render(template, member, now=now, send_id=send_id,
                                              flow={"name": flow}, occurrence=occurrence))
            except TemplateError as exc:
                outcomes.append(ledger.Outcome(sends[send_id]["id"], "failed", f"template: {exc}"))
                report.failed += 1
        results = []
        for chunk in limiter.chunks(emails):
            if chunk:
                results += transport.send(chunk)
            moment = clock()
            if moment - renewed > sending.lease / 4:  # a slow batch: tell the others it is alive
                renewed = moment
                ledger.renew(engine, [sends[e.send_id]["id"] for e in emails], renewed)
        answered = clock()
        for result in results:
            send = sends[result.send_id]
            if result.outcome == "sent":
                transient_in_a_row = 0
                outcomes.append(ledger.Outcome(send["id"], "sent", provider_id=result.provider_id))
                report.delivered += 1
            elif result.outcome == "failed":
                transient_in_a_row = 0
                outcomes.append(ledger.Outcome(send["id"], "failed", result.detail))
                report.failed += 1
            elif send["attempts"] >= sending.max_attempts:
                outcomes.append(ledger.Outcome(send["id"], "failed", f"gave up after {send['attempts']} "
                                               f"attempts: {result.detail}"))
                report.failed += 1
            else:
                transient_in_a_row += 1
                delay = ledger.retry_delay(send["attempts"], sending.retry_base, result.retry_after, rng)
                outcomes.append(ledger.Outcome(send["id"], "retry", result.detail, retry_at=answered + delay))
                report.retrying += 1
        ledger.finish(engine, outcomes, answered)
        if transient_in_a_row >= sending.pause_after:
            report.paused = (f"pausing dispatch until the next tick: {transient_in_a_row} transient "
                             f"failures in a row (last: {result.detail})")
            log.warning(report.paused)
            return


def write_previews(plan: Plan, renderer: Renderer, engine: sa.Engine, out: Path) -> int:
    """Render every planned send untracked into out/<flow>/<member>-<occurrence>.{eml,html}."""
    written = 0
    with engine.connect() as conn:
        for send in plan.sends:
            occ = send.occurrence
            member = member_profile(conn, occ.member_id, recent=0).member
            email = renderer.render(occ.flow.template, member, now=send.scheduled_for, tracked=False,
                                    flow={"name": occ.flow.name}, occurrence=occ.data)
            folder = out / occ.flow.name
            folder.mkdir(parents=True, exist_ok=True)
            stem = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{occ.member_id}-{occ.key}")
            (folder / f"{stem}.eml").write_bytes(email.to_bytes())
            (folder / f"{stem}.html").write_text(email.html, encoding="utf-8")
            written += 1
    return written

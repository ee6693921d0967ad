"""One tick of the engine: plan at `now`, record, render and deliver what is due.

`run_once` is what `loyalty-mail run --once` and every daemon tick call. The dry run is the same
planning with a different last step: nothing is recorded, and (with `out`) each would-be email is
rendered untracked into a review folder.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ..errors import TemplateError
from ..members import member_profile
from ..rendering import Renderer
from ..segments import load_catalog
from ..transports import DirectoryTransport, Transport
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
    suppressed_late: int = 0

    def summary(self) -> str:
        planned = len(self.plan.sends)
        return (f"tick at {self.now:%Y-%m-%d %H:%M:%S} UTC: {planned} planned, "
                f"{sum(1 for s in self.plan.skips if s.record_as == 'held_out')} held out, "
                f"{len(self.plan.skips)} skipped, {self.delivered} delivered, {self.failed} failed")


def build_planner(settings: Any, dialect: str) -> Planner:
    catalog, problems = load_catalog(settings)
    if problems:
        from ..errors import ConfigError
        raise ConfigError(problems)
    return Planner(settings, catalog, dialect)


def check_flow_templates(settings: Any, renderer: Renderer) -> None:
    missing = [f"flow '{f.name}': no email template '{f.template}' in templates/ "
               f"(emails: {', '.join(renderer.catalog.names) or 'none'})"
               for f in settings.flows if f.template not in renderer.catalog.variants]
    if missing:
        from ..errors import ConfigError
        raise ConfigError(missing)


def transport_for(settings: Any) -> Transport:
    directory = Path(settings.sending.directory)
    if not directory.is_absolute():
        directory = settings.project_dir / directory
    return DirectoryTransport(directory)


def run_once(engine: sa.Engine, planner: Planner, renderer: Renderer, transport: Transport,
             now: datetime, *, flows: list[str] | None = None,
             should_stop: Callable[[], bool] = lambda: False) -> TickReport:
    """Plan, record, then deliver every planned send that is due (including earlier ones).
    `should_stop` is asked between batches: a stopping daemon finishes the batch in hand."""
    plan = planner.plan_in(engine, now, flows=flows)
    report = TickReport(now, plan)
    report.recorded = ledger.record(engine, plan, now)
    deliver_due(engine, renderer, transport, now, report, planner.settings.sending.batch_size,
                should_stop)
    log.info(report.summary())
    return report


def deliver_due(engine: sa.Engine, renderer: Renderer, transport: Transport, now: datetime,
                report: TickReport, batch_size: int,
                should_stop: Callable[[], bool] = lambda: False) -> None:
    while not should_stop():
        claimed = ledger.claim_due(engine, now, batch_size)
        if not claimed:
            return
        results: list[tuple[int, str, str | None]] = []
        emails = []
        by_send: dict[str, int] = {}
        for item in claimed:
            send, member = item["send"], item["member"]
            if not member["subscribed"] or member["suppressed"]:
                results.append((send["id"], "suppressed", "unsubscribed or suppressed before sending"))
                report.suppressed_late += 1
                continue
            try:
                email = renderer.render(send["template"], member, now=now, send_id=send["send_id"],
                                        flow={"name": send["flow"]}, occurrence=send["occurrence"])
            except TemplateError as exc:
                results.append((send["id"], "failed", f"template: {exc}"))
                report.failed += 1
                continue
            emails.append(email)
            by_send[email.send_id] = send["id"]
        for result in transport.send(emails) if emails else []:
            state = "sent" if result.outcome == "sent" else result.outcome
            results.append((by_send[result.send_id], state, None if state == "sent" else result.detail))
            report.delivered += state == "sent"
            report.failed += state == "failed"
        ledger.finish(engine, results, now)


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

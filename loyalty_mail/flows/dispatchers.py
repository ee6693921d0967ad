"""Deliver with several dispatcher processes: each claims, renders, sends and records on its own.

Rendering is CPU-bound Python, so one process uses one core. With `sending.dispatchers: N` the
due sends are drained by N forked processes, each with its own database connection, compiled
templates and transport connection; the outbox's claims (a single `UPDATE ... RETURNING`, with
`FOR UPDATE SKIP LOCKED` on PostgreSQL) make sure no two take the same send.
"""

from __future__ import annotations

import multiprocessing
import signal
import threading
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from .. import db
from ..rendering import Renderer
from ..signing import TokenSigner
from ..transports import transport_for
from .delivery import TickReport, deliver_due
from .planner import Plan

if TYPE_CHECKING:
    from multiprocessing.queues import Queue

    from ..config import Settings
    from .runner import TickReport

COUNTS = ("delivered", "failed", "retrying", "unknown", "suppressed_late")


def _dispatch(settings: Settings, url: str, now: datetime, results: Queue[dict[str, Any]],
              clock: Callable[[], datetime] | None) -> None:
    stopping = threading.Event()  # SIGTERM/SIGINT: finish the batch in hand, then stop
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    engine = db.create_db_engine(url)
    secret = settings.tracking.secret
    renderer = Renderer.for_program(settings, signer=TokenSigner(secret) if secret else None)
    transport = transport_for(settings)
    report = TickReport(now, Plan(now))
    try:
        deliver_due(engine, renderer, transport, now, report, settings.sending, stopping.is_set, clock)
    finally:
        transport.close()
        engine.dispose()
        results.put({name: getattr(report, name) for name in COUNTS}
                    | {"paused": report.paused, "last_error": report.last_error})


def deliver_in_parallel(engine: sa.Engine, settings: Settings, now: datetime, processes: int,
                        report: TickReport, should_stop: Callable[[], bool],
                        clock: Callable[[], datetime] | None = None) -> None:
    """Run `processes` dispatchers until nothing is due (or a stop is asked); add up their counts."""
    context = multiprocessing.get_context("fork")
    results: Queue[dict[str, Any]] = context.Queue()
    url = engine.url.render_as_string(hide_password=False)
    engine.dispose()  # children must not share the parent's connections
    workers = [context.Process(target=_dispatch, args=(settings, url, now, results, clock), daemon=True)
               for _ in range(processes)]
    for worker in workers:
        worker.start()
    for _ in workers:
        counts = results.get()
        for name in COUNTS:
            setattr(report, name, getattr(report, name) + counts[name])
        report.paused = report.paused or counts["paused"]
        report.last_error = counts["last_error"] or report.last_error
    for worker in workers:
        worker.join()

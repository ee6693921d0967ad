"""The daemon: APScheduler runs a tick every `sending.tick`; SIGTERM/SIGINT stop it cleanly.
Between ticks the main thread waits for new data (`wait`) and plans the members it touched
(`wake`) within about a second.

APScheduler only decides *when*; what a tick does is `runner.run_once`, and the send ledger (not
APScheduler's job store, which is in memory) is what makes every occurrence go out once. After
downtime the first tick catches up: the planner looks back over each flow's lateness.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timezone

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

log = logging.getLogger("loyalty_mail.daemon")

Tick = Callable[[Callable[[], bool], "list[str] | None"], object]
Wake = Callable[[Callable[[], bool]], object]
Wait = Callable[[float], bool]


def flow_schedules(flows: Mapping[str, str | None], zone: str) -> dict[str, CronTrigger]:
    """Cron triggers of the flows that have a `schedule:`, in the program's time zone."""
    return {name: CronTrigger.from_crontab(line, timezone=zone) for name, line in flows.items() if line}


class _SkippedWhileRunning(logging.Filter):
    """Ticks never overlap (max_instances=1), so APScheduler skipping an interval while a long tick
    runs is expected: without this it warns every interval until the tick ends."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in record.getMessage()


def run_daemon(tick: Tick, interval_seconds: float, *, max_ticks: int | None = None,
               schedules: Mapping[str, BaseTrigger] | None = None,
               wake: Wake | None = None, wait: Wait | None = None) -> int:
    """Tick now, then every `interval_seconds` until SIGTERM/SIGINT; returns the ticks run.

    `tick(should_stop, flows)` must check `should_stop()` between batches, so a stop request lets
    the batch in hand finish and be recorded before the process exits. The interval tick gets
    `flows=None` (plan the flows without a schedule); each entry of `schedules` adds a job that
    ticks with `flows=[that flow]` at its trigger's times. Jobs never overlap.
    With `wake` and `wait`, the main thread calls `wait(0.5)` in a loop and, when it says new
    data may have arrived, `wake(should_stop)` (never during a tick).
    """
    stopping = threading.Event()
    running = threading.Lock()  # held while a tick runs, so exit waits for the batch in hand
    scheduler = BackgroundScheduler(timezone=timezone.utc)
    skipped = _SkippedWhileRunning()
    logging.getLogger("apscheduler.scheduler").addFilter(skipped)
    ticks = 0

    def job(flows: list[str] | None) -> None:
        nonlocal ticks
        with running:
            if stopping.is_set():
                return
            try:
                tick(stopping.is_set, flows)
            except Exception:  # noqa: BLE001 - the daemon logs a failed tick and keeps its schedule
                log.exception("tick failed; the next tick will try again")
            ticks += 1
        if max_ticks is not None and ticks >= max_ticks:
            stop(None, None)

    def stop(signum: int | None, _frame: object) -> None:
        if not stopping.is_set():
            name = signal.Signals(signum).name if signum else "max ticks"
            log.info("%s received: finishing the batch in hand, then stopping", name)
            stopping.set()  # the main thread shuts the scheduler down, outside this handler

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGTERM, signal.SIGINT)}
    scheduler.add_job(job, IntervalTrigger(seconds=interval_seconds), args=[None], id="tick", max_instances=1,
                      coalesce=True, next_run_time=datetime.now(timezone.utc), misfire_grace_time=None)
    for name, trigger in (schedules or {}).items():
        scheduler.add_job(job, trigger, args=[[name]], id=f"flow:{name}", max_instances=1, coalesce=True,
                          misfire_grace_time=None)
        log.info("flow %s is planned on its schedule (%s)", name, trigger)
    log.info("daemon started: a tick every %s s", interval_seconds)
    scheduler.start()
    # Shutting the scheduler down from a signal handler re-enters its loop mid-step (a long tick
    # then ends in JobLookupError): the handler only sets `stopping`, and this thread stops it.
    try:
        while not stopping.is_set():
            if wake is None or wait is None:
                stopping.wait(0.5)
            elif _waited(wait, stopping):
                with running:
                    if stopping.is_set():
                        break
                    try:
                        wake(stopping.is_set)
                    except Exception:  # noqa: BLE001 - the next wake-up or tick plans these members
                        log.exception("planning new data failed; the next tick will plan it")
        scheduler.shutdown(wait=False)
        with running:  # the tick in progress, if any, has recorded its batch
            pass
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        logging.getLogger("apscheduler.scheduler").removeFilter(skipped)
    log.info("daemon stopped after %d tick(s)", ticks)
    return ticks


def _waited(wait: Wait, stopping: threading.Event) -> bool:
    """`wait(0.5)`; a failure (the database is away) is logged, and the ticks carry on."""
    try:
        return wait(0.5)
    except Exception:  # noqa: BLE001 - the ticks plan everyone anyway
        log.exception("waiting for new data failed; trying again in 5 s")
        stopping.wait(5)
        return False

"""The demo: a seeded program walked through simulated days by the real planner and dispatcher.

    seed      members and two years of history up to the first simulated day (seeding/)
    each tick simulated signups and purchases are imported; the planner plans at that instant;
              due emails are rendered and written as .eml files (directory transport); simulated
              members open, click, unsubscribe and buy (seeding/simulation.py)
    report    the HTML report over the simulated days (reports/page.py)

Time is an input: the demo ends at `end` (the CLI passes today's midnight in the program's time
zone) and starts `days` before it. Everything lives in one folder (`demo/` by default), which is
emptied first: the demo database, the outbox and the report.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo


from . import db
from .config import Settings
from .flows.runner import build_planner, check_flow_templates, run_once
from .overview import Overview, program_overview
from .rendering import Renderer
from .reports import configured_journeys, page
from .seeding import DemoProgram, seed_program
from .seeding.simulation import Activity, Simulation
from .tiers import TierLadder
from .signing import TokenSigner
from .transports import DirectoryTransport

NOTICE = ("Demo data. Members and their history are generated; over the {days} days of this report, "
          "signups, purchases, opens, clicks, bounces and unsubscribes are simulated (labelled 'simulated' "
          "in the database), with illustrative rates that differ by flow, tier and NPS. The planning, "
          "sending and every figure are the real engine's.")


SECRET_FILE = "secret"  # the throwaway signing secret, when the program sets none


@dataclass
class DemoResult:
    folder: Path
    database: Path
    outbox: Path
    report: Path
    first_day: date
    last_day: date
    ticks: int = 0
    sent: int = 0
    held_out: int = 0
    skipped: int = 0
    by_flow: dict[str, int] = field(default_factory=dict)
    activity: Activity = field(default_factory=Activity)   # what the simulated members did
    overview: Overview | None = None                        # the program at the end


def demo_settings(settings: Settings, folder: Path) -> Settings:
    """The program's settings pointed at the demo folder: its own SQLite file, the directory
    transport, one dispatcher, and a throwaway signing secret when none is set."""
    sending = settings.sending.model_copy(update={"transport": "directory", "directory": str(folder / "outbox"),
                                                  "dispatchers": 1, "rate_limit": 0})
    tracking = settings.tracking
    if not tracking.secret:
        tracking = tracking.model_copy(update={"secret": (_throwaway_secret(folder),)})
    database = settings.database.model_copy(update={"url": f"sqlite:///{folder / 'demo.db'}"})
    return settings.model_copy(update={"sending": sending, "tracking": tracking, "database": database})


def _throwaway_secret(folder: Path) -> str:
    """A new signing secret for this demo, kept in `folder`/secret (readable by its owner only) so
    that the demo's links and coupon codes can be verified afterwards."""
    secret = secrets.token_urlsafe(32)
    path = folder / SECRET_FILE
    path.unlink(missing_ok=True)
    path.touch(mode=0o600)
    path.write_text(secret + "\n", encoding="ascii")
    return secret


def clear(folder: Path) -> None:
    """Remove what an earlier demo left in `folder` (only the demo's own files)."""
    for name in ("demo.db", "demo.db-wal", "demo.db-shm", "report.html", SECRET_FILE):
        (folder / name).unlink(missing_ok=True)
    shutil.rmtree(folder / "outbox", ignore_errors=True)


def run_demo(settings: Settings, folder: Path, *, members: int, days: int, seed: int, end: datetime,
             ticks_per_day: int = 4, on_step: Callable[[str], None] | None = None,
             on_tick: Callable[[], None] | None = None) -> DemoResult:
    """Seed, simulate `days` days ending at `end` with `ticks_per_day` planner ticks a day, report.
    `on_step` hears each stage's name, `on_tick` each tick (for a progress bar)."""
    step = on_step or (lambda _: None)
    folder.mkdir(parents=True, exist_ok=True)
    clear(folder)
    settings = demo_settings(settings, folder)
    start = end - timedelta(days=days)
    zone = ZoneInfo(settings.program.default_timezone)
    result = DemoResult(folder, folder / "demo.db", folder / "outbox", folder / "report.html",
                        start.astimezone(zone).date(), (end - timedelta(seconds=1)).astimezone(zone).date())
    engine = db.create_db_engine(settings.database.url)
    try:
        db.ensure_schema(engine)
        step(f"seeding {members:,} members with their history up to {result.first_day}")
        seed_program(engine, settings, members=members, seed=seed, now=start)
        assert settings.tracking.secret, "demo_settings sets a throwaway secret when none is set"
        renderer = Renderer.for_program(settings, signer=TokenSigner(settings.tracking.secret))
        planner = build_planner(settings, engine.dialect.name)
        check_flow_templates(settings, renderer)
        transport = DirectoryTransport(result.outbox)
        program = DemoProgram(members=members, now=start, currency=settings.program.currency,
                              points_per_currency_unit=settings.program.points_per_currency_unit, seed=seed)
        simulation = Simulation(engine, settings, program, seed=seed, next_number=members + 1,
                                window=settings.reports.attribution_window)
        step(f"simulating {days} days, {ticks_per_day} planner ticks a day")
        interval = timedelta(hours=24 / ticks_per_day)
        before = start
        for number in range(1, days * ticks_per_day + 1):
            now = start + interval * number
            simulation.live(before, now)
            tick = run_once(engine, planner, renderer, transport, now)
            simulation.respond(before, now)
            result.ticks += 1
            result.sent += tick.delivered
            result.held_out += tick.plan.total("held_out")
            result.skipped += tick.plan.total("skipped")
            for (flow, column), count in tick.plan.tally.items():
                if column in ("planned", "deferred"):
                    result.by_flow[flow] = result.by_flow.get(flow, 0) + count
            before = now
            if on_tick:
                on_tick()
        transport.close()
        result.activity = simulation.totals
        with engine.connect() as conn:
            result.overview = program_overview(conn, TierLadder.from_settings(settings.tiers),
                                               settings.program.default_locale, end)
        step(f"writing the report to {result.report}")
        with engine.connect() as conn:
            data = page.collect(
                conn, program=settings.program.name, currency=settings.program.currency, since=result.first_day,
                until=result.last_day, start=start, end=end, window=settings.reports.attribution_window,
                clv_years=float(settings.segments.clv_years), generated_at=end,
                notice=NOTICE.format(days=days), tier_order=[level.name for level in settings.tiers.levels],
                journeys=configured_journeys(settings))
        result.report.write_text(page.render_page(data), encoding="utf-8")
    finally:
        engine.dispose()
    return result

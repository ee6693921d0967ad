"""Planning and sending at scale: 1,000,000 members, 100,000 of them due across the four flows,
and 30,000 others due across the six member-lifecycle flows.

    python benchmarks/plan.py                       # SQLite, 1,000,000 members
    python benchmarks/plan.py --members 200000 --due 20000 --lifecycle 6000
    python benchmarks/plan.py --postgres postgresql://postgres@127.0.0.1/test
    python benchmarks/plan.py --journeys 100000     # and 100,000 other members mid-journey
    python benchmarks/plan.py --lifecycle 0         # the four flows alone (no lifecycle config)

With --lifecycle N (default 30,000), the program also has points that expire (12 months), tier
qualification (12 months, points earned) and a rewards catalogue, and N members who are due nothing
else are due one lifecycle email each, a sixth per flow: points expiring in 30 days (the 30-day
reminder), a tier review in 30 days while short of keeping the tier (tier_at_risk), a move down
from gold hours ago (tier_downgrade), a birthday today, points that just reached a reward's cost
(reward_available), and last month's statement (a flow limited to the members with the custom
attribute `statements: true`, and late enough to be due on the 23rd). Every member holds a lot of
points from their purchase, and every member above the lowest tier has a qualification period (from
the latest anniversary of joining), so the tick's expiry job and tier review find what a running
program's would: nothing due but the planted cases.

With --journeys N, N members who are due nothing else stand in a five-step journey (`series`):
nine in ten in the middle of a 3-day wait, one in ten at its end, so that each tick moves them on
through a branch to their next email.

Each phase runs in a fresh process (a new interpreter, not a fork of this one): the dry-run plan;
then `run --once` end to end (plan, record the ledger, render, write one .eml per send with the
directory transport). "peak MB" is the high-water resident set of that process's own address space
(`VmHWM`) and of its dispatcher processes: its `ru_maxrss` would not do, as Linux carries the
launching process's peak across exec, and this one has just generated the data. The naive ledger path (one ORM insert and one
commit per row, SQLite's default journal) is timed on 2,000 rows in the same run.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from loyalty_mail import db  # noqa: E402

AT = datetime(2026, 11, 23, 3, 0, tzinfo=timezone.utc)   # 10:00 in Ho Chi Minh City
ZONE = ZoneInfo("Asia/Ho_Chi_Minh")
SECRET = "benchmark-secret-0123456789"
CONFIG = """\
program: {name: Sen Vàng Rewards, currency: VND, default_locale: vi, locales: [vi, en],
          default_timezone: Asia/Ho_Chi_Minh, sender_email: rewards@senvang.example}
tiers:
  levels:
    - {name: member, threshold: 0}
    - {name: silver, threshold: 2000}
    - {name: gold, threshold: 8000}
    - {name: platinum, threshold: 25000}
tracking: {base_url: "https://t.senvang.example", secret: "${LOYALTY_MAIL_SECRET}"}
sending: {directory: outbox, quiet_hours: null, frequency_cap: {max: 3, per: 7 days}, batch_size: 500,
          dispatchers: 2}
flows:
  - {name: welcome, trigger: welcome, template: welcome, priority: 100, frequency_cap: false}
  - {name: milestones, trigger: milestone, template: milestone, thresholds: [1000, 5000, 10000], priority: 60}
  - {name: tier_upgrade, trigger: tier_upgrade, template: tier_upgrade, priority: 80}
  - {name: winback, trigger: reengagement, template: reengagement, segment: lapsed_100, priority: 20}
"""
JOURNEY = """\
  - name: series
    trigger: event
    event: bench_signup               # no such event: only the members placed in it
    priority: 90
    frequency_cap: false
    exit_when: {purchases: {count: {gte: 50}}}
    steps:
      - send: welcome
      - wait: 3 days
      - branch:
          if: {tier: {at_least: silver}}
          then: [{send: welcome_perks}]
          else: [{send: welcome_reminder}]
      - wait_until: {event: purchase, timeout: 7 days}
        on_timeout: [{send: first_purchase_nudge}]
"""
SEGMENT = "name: lapsed_100\ndescription: last purchase 100 to 104 days ago\n" \
          "days_since_last_purchase: {between: [100, 104]}\n"
# The lifecycle: config added under program:, tiers: and at the top, and its six flows.
LIFECYCLE_PROGRAM = "          points: {expiry: {after: 12 months}},\n"
LIFECYCLE_TIERS = "  qualification: {period: 12 months, measure: points_earned, grace: 30 days, downgrade: one_level}\n"
LIFECYCLE = """\
rewards:
  - {name: coffee, cost: 500, label: {en: A free coffee, vi: Một ly cà phê miễn phí}}
  - {name: voucher_100k, cost: 2000, label: {en: "100,000 VND voucher", vi: Phiếu mua hàng 100.000 ₫}}
  - {name: spa_day, cost: 10000, label: {en: A spa day for two, vi: Một ngày spa cho hai người}}
"""
LIFECYCLE_FLOWS = """\
  - {name: points_expiring, trigger: points_expiring, before: [30 days, 7 days], template: points_expiring,
     class: service, priority: 70, lateness: 2 days}
  - {name: tier_at_risk, trigger: tier_at_risk, before: 30 days, template: tier_at_risk, class: service,
     priority: 70, lateness: 3 days}
  - {name: tier_downgrade, trigger: tier_downgrade, template: tier_downgrade, class: service, priority: 75,
     lateness: 3 days}
  - {name: birthday, trigger: birthday, template: birthday, priority: 90, lateness: 1 day}
  - {name: reward_available, trigger: reward_available, template: reward_available, priority: 45,
     lateness: 2 days}
  - {name: statement, trigger: statement, schedule: "0 9 1 * *", template: statement, class: service,
     segment: statement_readers, priority: 10, lateness: 30 days}
"""
STATEMENT_SEGMENT = "name: statement_readers\ndescription: members who asked for statements\n" \
                    "attributes.statements: true\n"
LIFECYCLE_KINDS = ("expiring", "at_risk", "downgrade", "birthday", "reward", "statement")
YEAR = timedelta(days=365)  # 12 months back from AT + 30 days: no 29 February in between


def config(journeys: bool, lifecycle: bool) -> str:
    text = CONFIG
    if lifecycle:
        text = text.replace("          default_timezone: Asia/Ho_Chi_Minh, sender_email: rewards@senvang.example}\n",
                            "          default_timezone: Asia/Ho_Chi_Minh, sender_email: rewards@senvang.example,\n"
                            + LIFECYCLE_PROGRAM.rstrip(",\n") + "}\n")
        text = text.replace("tiers:\n", "tiers:\n" + LIFECYCLE_TIERS) + LIFECYCLE_FLOWS
        text = text.replace("tracking:", LIFECYCLE + "tracking:")
    return text + (JOURNEY if journeys else "")


def utc(t: datetime | None) -> str | None:
    return t.astimezone(timezone.utc).replace(tzinfo=None).isoformat(" ", "microseconds") if t else None


def generate(engine: sa.Engine, members: int, due: int, journeys: int = 0, lifecycle: int = 0) -> dict[str, int]:
    """Members, with `due` of them due: a quarter each welcome, milestone, upgrade, winback;
    `lifecycle` others due a sixth each of the lifecycle flows; and `journeys` of the others in
    the `series` journey."""
    rng = random.Random(5)
    quarter = due // 4
    kinds = ["welcome"] * quarter + ["milestone"] * quarter + ["upgrade"] * quarter + ["winback"] * quarter
    for kind in LIFECYCLE_KINDS if lifecycle else ():
        kinds += [kind] * (lifecycle // len(LIFECYCLE_KINDS))
    kinds += ["quiet"] * (members - len(kinds))
    rng.shuffle(kinds)
    now = utc(AT)
    m_sql = ("INSERT INTO members (id, member_id, email, first_name, locale, timezone, joined_at, joined_on, "
             "points, tier, total_spend, purchase_count, last_purchase_at, subscribed, attributes, created_at, "
             "updated_at, birthday, tier_period_start, tier_review_at) "
             "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
    l_sql = "INSERT INTO point_lots (member_ref, earned_at, expires_at, points, remaining) VALUES (?,?,?,?,?)"
    e_sql = ("INSERT INTO events (member_ref, type, occurred_at, amount, currency, points, properties, created_at) "
             "VALUES (?,?,?,?,?,?,?,?)")
    t_sql = ("INSERT INTO tier_changes (member_ref, from_tier, to_tier, changed_at, reason) VALUES (?,?,?,?,?)")
    j_sql = ("INSERT INTO journey_steps (member_ref, flow, instance, step, outcome, reached_at, ready_at, detail, "
             "created_at) VALUES (?,?,?,?,?,?,?,?,?)")
    placed = journeys
    counts: dict[str, int] = {}
    with engine.begin() as conn:
        raw = conn.connection.driver_connection
        ms, es, ts, js, ls = [], [], [], [], []
        for ref, kind in enumerate(kinds, start=1):
            if kind == "quiet" and placed:
                placed -= 1
                kind = "journey"
                started = AT - timedelta(days=3.5 if placed % 10 == 0 else rng.uniform(0.5, 2.5))
                js.append((ref, "series", "event:0", "welcome", "planned", utc(started), utc(started), "bench",
                           utc(started)))
                js.append((ref, "series", "event:0", "wait_3_days", "waiting", utc(started),
                           utc(started + timedelta(days=3)), "bench", utc(started)))
            counts[kind] = counts.get(kind, 0) + 1
            recent = AT - timedelta(hours=rng.uniform(1, 20))
            joined = recent if kind == "welcome" else AT - timedelta(days=rng.uniform(30, 1400))
            last = AT - timedelta(days=rng.uniform(100.1, 103.9)) if kind == "winback" else \
                AT - timedelta(days=rng.uniform(1, 60))
            points = {"milestone": 5300, "upgrade": 8400, "at_risk": 2600, "downgrade": 3000,
                      "reward": 2100}.get(kind, rng.randint(0, 1900))
            tier = {"milestone": "silver", "upgrade": "gold", "at_risk": "silver", "downgrade": "silver"}.get(
                kind, "member")
            birthday = start = review = None
            attributes = '{"statements": true}' if kind == "statement" else "{}"
            if lifecycle:
                if tier != "member":  # the period running at AT, from the latest anniversary of joining
                    start = joined
                    while start + YEAR <= AT:
                        start += YEAR
                    review = start + YEAR
                if kind == "at_risk":  # reviewed in 30 days (less 2 hours): the reminder is due
                    review = AT + timedelta(days=30, hours=-2)
                    start = review - YEAR
                if kind == "downgrade":  # moved down from gold 5 hours ago, by its review
                    start = AT - timedelta(hours=5)
                    review = start + YEAR
                    ts.append((ref, "gold", "silver", utc(start), "not re-qualified"))
                if kind == "birthday":  # today in Ho Chi Minh City
                    birthday = AT.astimezone(ZONE).date().replace(year=rng.randint(1960, 2004)).isoformat()
                if kind == "reward":  # +300 points 3 hours ago: 1,800 -> 2,100, past the 2,000 voucher
                    es.append((ref, "points_earned", utc(AT - timedelta(hours=3)), None, None, 300, "{}", now))
                # each member holds their purchase's points until 12 months after it
                ls.append((ref, utc(last), utc(last + YEAR), 450, 450))
                if kind == "expiring":  # 800 points expire in 30 days less 2 hours: the 30-day reminder is due
                    expires = AT + timedelta(days=30, hours=-2)
                    es.append((ref, "points_earned", utc(expires - YEAR), None, None, 800, "{}", now))
                    ls.append((ref, utc(expires - YEAR), utc(expires), 800, 800))
            ms.append((ref, f"LM{ref:08d}", f"m{ref}@example.com", "Lan", rng.choice(["vi", "vi", "en"]),
                       "Asia/Ho_Chi_Minh", utc(joined), joined.date().isoformat(), points, tier, points * 1000,
                       3, utc(last), 1, attributes, now, now, birthday, utc(start), utc(review)))
            es.append((ref, "purchase", utc(last), 450000, "VND", 450, "{}", now))
            if kind == "milestone":
                es.append((ref, "points_earned", utc(recent), None, None, 600, "{}", now))
            if kind == "upgrade":
                es.append((ref, "points_earned", utc(recent), None, None, 900, "{}", now))
                ts.append((ref, "silver", "gold", utc(recent), "points_earned (+900 points)"))
            if len(ms) >= 50_000:
                raw.executemany(m_sql, ms), raw.executemany(e_sql, es), raw.executemany(t_sql, ts)
                raw.executemany(j_sql, js), raw.executemany(l_sql, ls)
                ms, es, ts, js, ls = [], [], [], [], []
        raw.executemany(m_sql, ms), raw.executemany(e_sql, es), raw.executemany(t_sql, ts)
        raw.executemany(j_sql, js), raw.executemany(l_sql, ls)
    with engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
    return counts


def copy_to_postgres(sqlite_url: str, pg_url: str) -> None:
    """Same rows into PostgreSQL (fresh schema), with COPY."""
    source, target = db.create_db_engine(sqlite_url), db.create_db_engine(pg_url)
    with target.begin() as conn:
        for table in ("journey_steps", "sends", "suppressions", "tier_changes", "point_lots", "events", "members"):
            conn.exec_driver_sql(f"TRUNCATE {table} RESTART IDENTITY CASCADE")
    with source.connect() as src, target.begin() as dst:
        cursor = dst.connection.driver_connection.cursor()
        for table, columns in (("members", "id, member_id, email, first_name, locale, timezone, joined_at, "
                                "joined_on, points, tier, total_spend, purchase_count, last_purchase_at, "
                                "subscribed, attributes, created_at, updated_at, birthday, tier_period_start, "
                                "tier_review_at"),
                               ("events", "member_ref, type, occurred_at, amount, currency, points, properties, created_at"),
                               ("tier_changes", "member_ref, from_tier, to_tier, changed_at, reason"),
                               ("journey_steps", "member_ref, flow, instance, step, outcome, reached_at, "
                                "ready_at, detail, created_at"),
                               ("point_lots", "member_ref, earned_at, expires_at, points, remaining")):
            rows = src.exec_driver_sql(f"SELECT {columns} FROM {table}")
            with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    row = list(row)
                    if table == "members":
                        row[13] = bool(row[13])
                    copy.write_row([f"{v}+00" if isinstance(v, str) and len(v) == 26 and v[10] == " " else v
                                    for v in row])
        cursor.execute("SELECT setval(pg_get_serial_sequence('members', 'id'), (SELECT max(id) FROM members))")
    with target.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")


def phase(project: Path, url: str, which: str) -> dict[str, Any]:
    """Run one phase in this (child) process; print JSON figures."""
    from loyalty_mail.flows import Plan, build_planner, run_once
    from loyalty_mail.flows.runner import transport_for
    from loyalty_mail.runtime import Runtime

    runtime = Runtime.load(project, database_url=url, clock=lambda: AT)
    engine = runtime.engine()
    planner = build_planner(runtime.settings, engine.dialect.name)
    started = time.perf_counter()
    figures: dict[str, Any] = {}
    if which == "plan":
        plan = planner.plan_in(engine, AT, plan=Plan(AT, keep=False))   # what `run --dry-run` (table) does
        figures["planned"] = plan.total("planned") + plan.total("deferred")
        figures["skipped"] = plan.total("skipped") + plan.total("held_out")
        figures["flows"] = {flow: c.get("planned", 0) + c.get("deferred", 0) for flow, c in plan.counts().items()}
    else:
        report = run_once(engine, planner, runtime.renderer(), transport_for(runtime.settings), AT)
        figures["planned"] = report.plan.total("planned") + report.plan.total("deferred")
        figures["delivered"] = report.delivered
    figures["seconds"] = time.perf_counter() - started
    dispatchers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # forked: their own peaks
    figures["peak_mb"] = max(own_peak_kb(), dispatchers) / 1024
    print(json.dumps(figures))
    return figures


def own_peak_kb() -> int:
    """The high-water resident set of this process's address space, in KiB (Linux)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def naive_ledger(url: str, rows: int) -> float:
    """One ORM object and one commit per ledger row, on SQLite's default journal."""
    from sqlmodel import Session

    from loyalty_mail.models import Send

    engine = sa.create_engine(url)
    started = time.perf_counter()
    with Session(engine) as session:
        for n in range(rows):
            session.add(Send(send_id=f"naive{n:027d}", member_ref=n + 1, flow="naive", occurrence_key="k",
                             template="welcome", state="planned", reason="naive", occurrence={},
                             occurred_at=AT, scheduled_for=AT, created_at=AT))
            session.commit()
    return time.perf_counter() - started


def child(project: Path, url: str, which: str) -> dict[str, Any]:
    """Run one phase in a fresh interpreter and read its figures."""
    out = subprocess.run([sys.executable, __file__, "--phase", which, "--project", str(project), "--url", url],
                         capture_output=True, text=True, env={"LOYALTY_MAIL_SECRET": SECRET, "PATH": "/usr/bin:/bin"})
    if out.returncode:
        sys.exit(f"the {which} phase failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--due", type=int, default=100_000)
    parser.add_argument("--journeys", type=int, default=0, help="members mid-journey (of those due nothing else)")
    parser.add_argument("--lifecycle", type=int, default=30_000,
                        help="members due the lifecycle flows, a sixth each (0: the four flows alone)")
    parser.add_argument("--postgres", default=None, help="also run on this PostgreSQL database (emptied!)")
    parser.add_argument("--phase", choices=["plan", "run"], help=argparse.SUPPRESS)
    parser.add_argument("--project", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        phase(args.project, args.url, args.phase)
        return
    with tempfile.TemporaryDirectory() as scratch:
        project = Path(scratch)
        (project / "config.yaml").write_text(config(bool(args.journeys), bool(args.lifecycle)), encoding="utf-8")
        shutil.copytree(REPO / "templates", project / "templates")
        (project / "segments").mkdir()
        (project / "segments" / "lapsed_100.yaml").write_text(SEGMENT, encoding="utf-8")
        (project / "segments" / "statement_readers.yaml").write_text(STATEMENT_SEGMENT, encoding="utf-8")
        url = f"sqlite:///{project / 'plan.db'}"
        engine = db.create_db_engine(url)
        db.ensure_schema(engine)
        started = time.perf_counter()
        counts = generate(engine, args.members, args.due, args.journeys, args.lifecycle)
        engine.dispose()
        print(f"generated {args.members:,} members in {time.perf_counter() - started:.0f} s: {counts}")
        targets = [("SQLite", url)]
        if args.postgres:
            pg = args.postgres.replace("postgresql://", "postgresql+psycopg://", 1)
            db.upgrade(db.create_db_engine(pg), "head")
            copy_to_postgres(url, pg)
            targets.append(("PostgreSQL", pg))
        print(f"{'database':<12}{'phase':<28}{'sends':>9}{'seconds':>10}{'per s':>10}{'peak MB':>9}")
        for name, target in targets:
            plan = child(project, target, "plan")
            print(f"{name:<12}{'plan (dry run)':<28}{plan['planned']:>9,.0f}{plan['seconds']:>10.1f}"
                  f"{plan['planned'] / plan['seconds']:>10,.0f}{plan['peak_mb']:>9.0f}")
            print(f"{'':<12}{'  per flow: ' + ', '.join(f'{f} {n:,}' for f, n in sorted(plan['flows'].items()))}")
            shutil.rmtree(project / "outbox", ignore_errors=True)
            run = child(project, target, "run")
            print(f"{name:<12}{'end to end (plan..write)':<28}{run['delivered']:>9,.0f}{run['seconds']:>10.1f}"
                  f"{run['delivered'] / run['seconds']:>10,.0f}{run['peak_mb']:>9.0f}")
        naive_url = f"sqlite:///{project / 'naive.db'}"
        naive_engine = db.create_db_engine(naive_url)
        db.ensure_schema(naive_engine)
        with naive_engine.begin() as conn:
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        naive_engine.dispose()
        rows = 2000
        elapsed = naive_ledger(naive_url + "?", rows)
        print(f"naive ledger (ORM row + commit each, default journal): {rows / elapsed:,.0f} rows/s "
              f"({elapsed / rows * 1000:.2f} ms a row; 100,000 rows would take {elapsed / rows * 100000:.0f} s)")


if __name__ == "__main__":
    main()

"""Segment speed: each example segment as compiled SQL against the naive path (load members and
events through the ORM, evaluate the plain-Python reference), over the same data in the same run.
Also points that expire (the example program's `after: 12 months`): the `points_expiring`
segment against deriving every member's lots from their events in Python, and the expiry job
(`points expire`) against an ORM job that derives the lots the same way and writes row by row.

    python benchmarks/segments.py                          # 1,000,000 members, ~5,000,000 events, SQLite
    python benchmarks/segments.py --postgres postgresql://postgres@127.0.0.1/test   # also PostgreSQL (SQL only)
    python benchmarks/segments.py --members 100000         # a quicker run

The data is generated straight into the tables (not through the import path, which has its own
benchmark). SQL times are the best of 3 runs of `SELECT count(*) ... WHERE <segment>`. Each
member's point lots are what the import keeps (one per purchase, 12 months in the member's time
zone); lots that expired more than EXPIRED_BEFORE ago are recorded as `points_expired` events
(so balances and tiers are after those expiries), and the rest, due or not, are in `point_lots`:
the expiry job at AT has the last EXPIRED_BEFORE of expiries to record (a daemon that was down).
Members above the lowest tier have a qualification period (the example program's
`qualification: {period: 12 months}`) starting at the latest anniversary of their joining, and
their review at its end, and the period's measures the importers keep on the member: the
`needed_to_keep_tier` and `tier_review_at` segments read them, and their naive path sums each
member's points earned since the period started in Python. The row "summed from events" is
`short_of_keeping` with the measure summed from each member's events in SQL instead of read from
the member (a seek a member with a period), in the same run. A database kept with --keep from an
older schema is migrated when reused (the migration's time is printed).
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import sqlalchemy as sa

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from loyalty_mail import db  # noqa: E402
from loyalty_mail.config import load_settings  # noqa: E402
from loyalty_mail.models import Event, Member, Send, TierChange, TrackingEvent, members_table  # noqa: E402
from loyalty_mail.points.expiry import expire_points  # noqa: E402
from loyalty_mail.points.lots import replay  # noqa: E402
from loyalty_mail.segments import context_for, load_catalog  # noqa: E402
from loyalty_mail.segments.spec import SegmentParser  # noqa: E402
from loyalty_mail.tier_review import period_after  # noqa: E402
from loyalty_mail.tiers import TierLadder  # noqa: E402
from loyalty_mail.yaml_source import load_yaml_text  # noqa: E402
from tests.reference import EmailFacts, EventFacts, HitFacts, MemberFacts, evaluate  # noqa: E402

AT = datetime(2026, 11, 23, 3, 0, tzinfo=timezone.utc)
ZONES = ["Asia/Ho_Chi_Minh"] * 6 + ["Asia/Singapore", "America/New_York", "Europe/London", "Australia/Sydney"]
TIERS = [("platinum", 25000), ("gold", 8000), ("silver", 2000), ("member", 0)]
EXPIRED_BEFORE = timedelta(days=30)
# Segments beyond the example program's, as YAML: points that expire, tiers to keep.
EXTRA = {"points_expiring_soon": "points_expiring: {within: 30 days, gte: 500}\n",
         "tier_review_soon": "tier_review_at: {within_next: 30 days}\n",
         "short_of_keeping": "needed_to_keep_tier: {gte: 1000}\n",
         "tier_at_risk": "all: [{tier_review_at: {within_next: 30 days}}, {needed_to_keep_tier: {gt: 0}}]\n"}
EXPIRING_WITHIN, EXPIRING_AT_LEAST = timedelta(days=30), 500
SUMMED = "  summed from events"  # short_of_keeping with each member's events read (see summed_from_events)
REVIEW_WITHIN, SHORT_AT_LEAST = timedelta(days=30), 1000


def generate(members: int, seed: int = 7):
    """Yield (member row, [event rows], [lot rows]) with realistic spreads of recency, frequency
    and spend, and the point lots of the example program's expiry policy."""
    settings = load_settings(REPO, environ={})
    expiry, qualification = settings.program.points.expiry, settings.tiers.qualification
    assert expiry is not None, "the example program's points expire"
    assert qualification is not None, "the example program's tiers are reviewed"
    rng = random.Random(seed)
    for ref in range(1, members + 1):
        zone = rng.choice(ZONES)
        joined = AT - timedelta(days=rng.uniform(0, 1500), seconds=rng.randrange(86400))
        purchases = min(round(rng.expovariate(1 / 4)), 60)
        events = [(ref, "signup", joined, None, None, None)]
        spend = 0
        last = None
        for _ in range(purchases):
            when = joined + (AT - joined) * rng.random()
            amount = rng.choice([150_000, 450_000, 900_000, 2_500_000, 6_000_000])
            spend += amount
            last = when if last is None or when > last else last
            events.append((ref, "purchase", when, amount, "VND", amount // 1000))
        points = spend // 1000
        lots = []
        for lot in replay(sorted((e[2], e[1], e[5] or 0) for e in events), expiry, ZoneInfo(zone)):
            assert lot.expires_at is not None
            if lot.expires_at <= AT - EXPIRED_BEFORE:  # the job recorded these long ago
                events.append((ref, "points_expired", lot.expires_at, None, None, -lot.remaining))
                points -= lot.remaining
            else:
                lots.append((ref, lot.earned_at, lot.expires_at, lot.points, lot.remaining))
        tier = next(name for name, threshold in TIERS if points >= threshold)
        start = review = None
        period = (0, 0, None)  # the measures kept on the member: spend, points earned, latest event
        if tier != TIERS[-1][0]:  # the period running at AT, from the latest anniversary of joining
            start = joined
            while period_after(start, qualification.period) <= AT:
                start = period_after(start, qualification.period)
            review = period_after(start, qualification.period)
            counted = [e for e in events if e[2] > start and (e[1] == "purchase" or (e[5] or 0) > 0)]
            period = (sum(e[3] for e in counted if e[1] == "purchase"), sum(e[5] for e in counted if e[5] > 0),
                      max((e[2] for e in counted), default=None))
        row = (ref, f"LM{ref:08d}", f"m{ref}@example.com", rng.choice(["vi", "vi", "en"]), zone, joined,
               joined.astimezone(ZoneInfo(zone)).date(), AT.date().replace(year=rng.randint(1955, 2006),
                                                                              day=1) + timedelta(days=rng.randrange(365)),
               points, tier, spend, purchases, last, rng.choice([None, None] + list(range(11))),
               rng.random() > 0.03, AT - timedelta(days=rng.uniform(0, 400)) if rng.random() < 0.03 else None,
               start, review, *period)
        yield row, events, lots


MEMBER_COLUMNS = ["id", "member_id", "email", "locale", "timezone", "joined_at", "joined_on", "birthday", "points",
                  "tier", "total_spend", "purchase_count", "last_purchase_at", "nps_score", "subscribed",
                  "unsubscribed_at", "tier_period_start", "tier_review_at", "period_spend", "period_points_earned",
                  "period_last_event_at"]
EVENT_COLUMNS = ["member_ref", "type", "occurred_at", "amount", "currency", "points"]
LOT_COLUMNS = ["member_ref", "earned_at", "expires_at", "points", "remaining"]


def load_sqlite(engine: sa.Engine, members: int) -> int:
    utc = lambda t: t.astimezone(timezone.utc).replace(tzinfo=None).isoformat(" ", "microseconds") if t else None  # noqa: E731
    count = 0
    with engine.begin() as connection:
        raw = connection.connection.driver_connection
        member_sql = (f"INSERT INTO members ({', '.join(MEMBER_COLUMNS)}, attributes, created_at, updated_at) "
                      f"VALUES ({', '.join('?' * (len(MEMBER_COLUMNS) + 3))})")
        event_sql = (f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}, properties, created_at) "
                     f"VALUES ({', '.join('?' * (len(EVENT_COLUMNS) + 2))})")
        lot_sql = f"INSERT INTO point_lots ({', '.join(LOT_COLUMNS)}) VALUES ({', '.join('?' * len(LOT_COLUMNS))})"
        now = utc(AT)
        batch_m, batch_e, batch_l = [], [], []
        for row, events, lots in generate(members):
            m = list(row)
            m[5], m[6], m[7], m[12], m[15] = utc(m[5]), m[6].isoformat(), m[7].isoformat(), utc(m[12]), utc(m[15])
            m[16], m[17], m[20] = utc(m[16]), utc(m[17]), utc(m[20])
            batch_m.append((*m, "{}", now, now))
            batch_e += [(e[0], e[1], utc(e[2]), e[3], e[4], e[5], "{}", now) for e in events]
            batch_l += [(lot[0], utc(lot[1]), utc(lot[2]), lot[3], lot[4]) for lot in lots]
            if len(batch_e) > 50_000:
                raw.executemany(member_sql, batch_m)
                raw.executemany(event_sql, batch_e)
                raw.executemany(lot_sql, batch_l)
                count += len(batch_e)
                batch_m, batch_e, batch_l = [], [], []
        raw.executemany(member_sql, batch_m)
        raw.executemany(event_sql, batch_e)
        raw.executemany(lot_sql, batch_l)
        count += len(batch_e)
    with engine.connect() as connection:
        connection.exec_driver_sql("ANALYZE")
    return count


def load_postgres(engine: sa.Engine, members: int) -> int:
    """COPY members, then events (the generator runs twice, deterministically, to keep memory flat)."""
    count = 0
    with engine.begin() as connection:
        cursor = connection.connection.driver_connection.cursor()
        with cursor.copy(f"COPY members ({', '.join(MEMBER_COLUMNS)}, attributes, created_at, updated_at) "
                         "FROM STDIN") as copy:
            for row, _, _ in generate(members):
                copy.write_row((*row, "{}", AT, AT))
        with cursor.copy(f"COPY events ({', '.join(EVENT_COLUMNS)}, properties, created_at) FROM STDIN") as copy:
            for _, events, _ in generate(members):
                for event in events:
                    copy.write_row((*event, "{}", AT))
                    count += 1
        with cursor.copy(f"COPY point_lots ({', '.join(LOT_COLUMNS)}) FROM STDIN") as copy:
            for _, _, lots in generate(members):
                for lot in lots:
                    copy.write_row(lot)
        cursor.execute("SELECT setval(pg_get_serial_sequence('members', 'id'), (SELECT max(id) FROM members))")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("VACUUM ANALYZE")
    return count


def extra_rules(settings) -> dict:
    ladder = TierLadder.from_settings(settings.tiers)
    rules = {}
    for name, text in EXTRA.items():
        segment = SegmentParser(load_yaml_text(text, f"{name}.yaml"), ladder).segment(name)
        assert segment is not None
        rules[name] = segment.rule
    return rules


def summed_from_events(ctx) -> sa.ColumnElement[bool]:
    """`short_of_keeping` with the measure summed from each member's events after their period's
    start (an index seek a member with a period) instead of read from the member: the baseline for
    the measure kept on the member, timed in the same run."""
    from loyalty_mail.models import UTCDateTime, events_table

    m, e = members_table, events_table
    counted, counts = (e.c.amount, e.c.type == "purchase") if ctx.qualification == "spend" else (e.c.points, e.c.points > 0)
    measure = (sa.select(sa.func.coalesce(sa.func.sum(counted), 0))
               .where(e.c.member_ref == m.c.id, counts, e.c.occurred_at > m.c.tier_period_start,
                      e.c.occurred_at <= sa.literal(ctx.at, UTCDateTime())).scalar_subquery())
    levels = ctx.ladder.levels[1:]
    threshold = sa.case(*((m.c.tier == level.name, sa.literal(level.threshold, sa.Numeric(18, 2))) for level in levels))
    floor = sa.func.max if ctx.dialect == "sqlite" else sa.func.greatest
    return sa.and_(m.c.tier_period_start.is_not(None), m.c.tier.in_([level.name for level in levels]),
                   floor(threshold - measure, sa.literal(0), type_=sa.Numeric(18, 2)) >= SHORT_AT_LEAST)


def time_sql(engine: sa.Engine, settings, catalog) -> dict[str, tuple[int, float]]:
    from loyalty_mail.segments import compile_rule

    ctx = context_for(settings, catalog, AT, engine.dialect.name)
    results = {}
    rules = {**{name: catalog.get(name).rule for name in sorted(catalog.segments)}, **extra_rules(settings)}
    conditions = {name: compile_rule(rule, ctx) for name, rule in rules.items()}
    conditions[SUMMED] = summed_from_events(ctx)
    with engine.connect() as connection:
        for name, condition in conditions.items():
            query = sa.select(sa.func.count()).select_from(members_table).where(condition)
            best = float("inf")
            for _ in range(3):
                started = time.perf_counter()
                count = connection.execute(query).scalar_one()
                best = min(best, time.perf_counter() - started)
            results[name] = (count, best)
    return results


def time_naive(engine: sa.Engine, settings, catalog) -> tuple[float, dict[str, tuple[int, float]]]:
    """Load every member and event through the ORM, then evaluate each segment in Python."""
    from sqlmodel import Session, select

    started = time.perf_counter()
    members, events, periods = [], {}, {}
    with Session(engine) as session:
        for m in session.exec(select(Member).execution_options(yield_per=20_000)):
            periods[m.id] = (m.tier_period_start, m.tier_review_at)
            members.append(MemberFacts(
                id=m.id, member_id=m.member_id, email=m.email, tier=m.tier, locale=m.locale, timezone=m.timezone,
                points=m.points, total_spend=Decimal(m.total_spend), purchase_count=m.purchase_count,
                joined_at=m.joined_at, joined_on=m.joined_on, last_purchase_at=m.last_purchase_at,
                unsubscribed_at=m.unsubscribed_at, birthday=m.birthday, nps_score=m.nps_score,
                subscribed=m.subscribed, attributes=m.attributes))
        session.expunge_all()
        for e in session.exec(select(Event).execution_options(yield_per=50_000)):
            events.setdefault(e.member_ref, []).append(EventFacts(
                member_ref=e.member_ref, type=e.type, occurred_at=e.occurred_at, amount=e.amount,
                currency=e.currency, points=e.points, properties=e.properties))
            session.expunge(e)
        sent = {s.send_id: EmailFacts(member_ref=s.member_ref, send_id=s.send_id, flow=s.flow, state=s.state,
                                      sent_at=s.sent_at) for s in session.exec(select(Send))}
        for t in session.exec(select(TrackingEvent)):
            if t.send_id in sent:
                sent[t.send_id].hits.append(HitFacts(kind=t.kind, occurred_at=t.occurred_at, machine=t.machine, bot=t.bot))
    emails: dict[int, list[EmailFacts]] = {}
    for email in sent.values():
        emails.setdefault(email.member_ref, []).append(email)
    load = time.perf_counter() - started
    ctx = context_for(settings, catalog, AT, engine.dialect.name)
    results = {}
    for name in sorted(catalog.segments):
        rule = catalog.get(name).rule
        started = time.perf_counter()
        count = sum(1 for m in members if evaluate(rule, m, events.get(m.id, []), ctx, emails.get(m.id, [])))
        results[name] = (count, time.perf_counter() - started)
    # points_expiring without the lots table: each member's lots derived from their events.
    expiry = settings.program.points.expiry
    started = time.perf_counter()
    count = 0
    for m in members:
        mine = sorted(((e.occurred_at, e.type, e.points or 0) for e in events.get(m.id, [])), key=lambda e: e[0])
        lots = replay(mine, expiry, ZoneInfo(m.timezone or settings.program.default_timezone))
        expiring = sum(lot.remaining for lot in lots if AT < lot.expires_at <= AT + EXPIRING_WITHIN)
        count += expiring >= EXPIRING_AT_LEAST
    results["points_expiring_soon"] = (count, time.perf_counter() - started)
    # Tiers to keep: each reviewed member's points earned since their period started, in Python.
    thresholds = {level.name: level.threshold for level in TierLadder.from_settings(settings.tiers).levels}

    def needed(m) -> Decimal | None:
        start = periods[m.id][0]
        if start is None:
            return None
        earned = sum(e.points for e in events.get(m.id, []) if e.points and e.points > 0 and start < e.occurred_at <= AT)
        return max(thresholds[m.tier] - earned, Decimal(0))

    def soon(m) -> bool:
        review = periods[m.id][1]
        return review is not None and AT <= review <= AT + REVIEW_WITHIN

    for name, test in (("tier_review_soon", soon),
                       ("short_of_keeping", lambda m: (n := needed(m)) is not None and n >= SHORT_AT_LEAST),
                       ("tier_at_risk", lambda m: soon(m) and (n := needed(m)) is not None and n > 0)):
        started = time.perf_counter()
        results[name] = (sum(1 for m in members if test(m)), time.perf_counter() - started)
    return load, results


def time_expiry_job(path: Path, settings, naive_too: bool = True) -> None:
    """The expiry job at AT on a copy of the database, against the naive job on another copy:
    load every member and their point events through the ORM, derive the lots in Python, and
    write each expiry (event, balance, tier, tier history) through the ORM."""
    from sqlmodel import Session, select

    ours_path, naive_path = path.with_suffix(".job-ours.db"), path.with_suffix(".job-naive.db")
    for copy in (ours_path, naive_path):
        shutil.copyfile(path, copy)
    engine = db.create_db_engine(f"sqlite:///{ours_path}")
    started = time.perf_counter()
    report = expire_points(engine, settings, AT)
    ours = time.perf_counter() - started
    engine.dispose()
    summary = (f"\nexpiry job at {AT:%Y-%m-%d %H:%M} UTC: {report.points:,} points of {report.members:,} members "
               f"({report.events:,} events, {report.tier_changes:,} tier changes): {ours:.1f} s")
    if not naive_too:
        for copy in (ours_path, naive_path):
            copy.unlink()
        print(summary)
        return

    engine = db.create_db_engine(f"sqlite:///{naive_path}")
    expiry, ladder = settings.program.points.expiry, TierLadder.from_settings(settings.tiers)
    started = time.perf_counter()
    naive_events = naive_points = 0
    with Session(engine) as session:
        points = {}
        for e in session.exec(select(Event).where(Event.points.is_not(None))  # type: ignore[union-attr]
                              .order_by(Event.member_ref, Event.occurred_at, Event.id)
                              .execution_options(yield_per=50_000)):
            points.setdefault(e.member_ref, []).append((e.occurred_at, e.type, e.points))
            session.expunge(e)
        for m in session.exec(select(Member)):
            zone = ZoneInfo(m.timezone or settings.program.default_timezone)
            due: dict = {}
            for lot in replay(points.get(m.id, []), expiry, zone):
                if lot.expires_at <= AT:
                    due[lot.expires_at] = due.get(lot.expires_at, 0) + lot.remaining
            for expires_at, amount in sorted(due.items()):
                amount = min(amount, m.points)
                event = Event(member_ref=m.id, type="points_expired", occurred_at=expires_at, points=-amount,
                              event_id=f"naive/{m.member_id}/{expires_at.isoformat()}", properties={},
                              created_at=AT)
                session.add(event)
                session.flush()
                m.points -= amount
                tier = ladder.tier_for(m.points, Decimal(m.total_spend))
                if tier != m.tier:
                    session.add(TierChange(member_ref=m.id, from_tier=m.tier, to_tier=tier, changed_at=expires_at,
                                           reason=f"points expired ({-amount:+,} points)", event_ref=event.id))
                    m.tier = tier
                naive_events, naive_points = naive_events + 1, naive_points + amount
            session.expunge(m)
        session.commit()
    naive = time.perf_counter() - started
    engine.dispose()
    for copy in (ours_path, naive_path):
        copy.unlink()
    assert (report.events, report.points) == (naive_events, naive_points), (report, naive_events, naive_points)
    print(f"{summary}; naive (ORM, lots derived in Python) {naive:.1f} s: {naive / ours:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--postgres", metavar="URL", help="also measure PostgreSQL (an empty scratch database is made)")
    parser.add_argument("--no-naive", action="store_true", help="skip the (slow) naive path")
    parser.add_argument("--no-expiry-job", action="store_true", help="skip the expiry job and its naive path")
    parser.add_argument("--keep", metavar="DIR", type=Path,
                        help="keep the SQLite database in DIR and reuse it on the next run (same --members)")
    args = parser.parse_args()
    settings = load_settings(REPO, environ={})
    catalog, problems = load_catalog(settings)
    assert not problems, problems
    with tempfile.TemporaryDirectory(prefix="lm-seg-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"segments-{args.members}.db"
        reuse = args.keep is not None and path.exists()
        engine = db.create_db_engine(f"sqlite:///{path}")
        if reuse:
            started = time.perf_counter()
            before, after = db.upgrade(engine)
            print(f"SQLite: reusing {path}" + (f" (migrated {before} -> {after} in "
                                               f"{time.perf_counter() - started:.1f} s)" if before != after else ""))
            if before != after:  # as after loading: the planner's statistics
                with engine.connect() as connection:
                    connection.exec_driver_sql("ANALYZE")
        else:
            db.ensure_schema(engine)
            started = time.perf_counter()
            n_events = load_sqlite(engine, args.members)
            print(f"SQLite: {args.members:,} members, {n_events:,} events loaded in "
                  f"{time.perf_counter() - started:.0f} s")
        sql = time_sql(engine, settings, catalog)
        pg = {}
        if args.postgres:  # before the naive path, whose gigabytes of objects evict the page cache
            pg = postgres_figures(args.postgres, args.members, settings, catalog, keep=args.keep is not None)
        naive_load, naive = (None, {}) if args.no_naive else time_naive(engine, settings, catalog)
        print_table(sql, naive_load, naive, pg)
        engine.dispose()
        if not args.no_expiry_job:
            time_expiry_job(path, settings, naive_too=not args.no_naive)


def postgres_figures(admin_url: str, members: int, settings, catalog, keep: bool = False):
    """Load a scratch PostgreSQL database (kept, and reused, with --keep) and time the segments."""
    name = f"lm_bench_segments_{members}"
    admin = sa.create_engine(db.resolve_url(admin_url, REPO), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        exists = c.exec_driver_sql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'").first()
        if exists and not keep:
            c.exec_driver_sql(f"DROP DATABASE {name}")
        if not exists or not keep:
            c.exec_driver_sql(f"CREATE DATABASE {name}")
    url = sa.engine.make_url(db.resolve_url(admin_url, REPO)).set(database=name).render_as_string(hide_password=False)
    engine = db.create_db_engine(url)
    if exists and keep:
        started = time.perf_counter()
        before, after = db.upgrade(engine)
        print(f"PostgreSQL: reusing database {name}" + (f" (migrated {before} -> {after} in "
                                                        f"{time.perf_counter() - started:.1f} s)" if before != after else ""))
        if before != after:  # as after loading (autovacuum would, later): statistics, visibility map
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                connection.exec_driver_sql("VACUUM ANALYZE")
    else:
        db.ensure_schema(engine)
        started = time.perf_counter()
        n = load_postgres(engine, members)
        print(f"PostgreSQL: {members:,} members, {n:,} events loaded in {time.perf_counter() - started:.0f} s")
    try:
        return time_sql(engine, settings, catalog)
    finally:
        engine.dispose()
        if not keep:
            with admin.connect() as c:
                c.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
        admin.dispose()


def print_table(sql, naive_load, naive, pg) -> None:
    header = f"{'segment':<22}{'members':>10}{'SQLite s':>10}"
    if naive:
        header += f"{'naive s':>10}{'speed-up':>10}"
    if pg:
        header += f"{'PG s':>8}"
    print()
    if naive_load is not None:
        print(f"naive path: loading members and events through the ORM took {naive_load:.1f} s "
              "(counted in every segment's naive time)")
    print(header)
    for name, (count, seconds) in sql.items():
        line = f"{name:<22}{count:>10,}{seconds:>10.3f}"
        if naive and name in naive:
            n_count, n_seconds = naive[name]
            assert n_count == count, f"{name}: SQL {count} != reference {n_count}"
            total = naive_load + n_seconds
            line += f"{total:>10.1f}{total / seconds:>9.0f}x"
        elif naive:
            line += " " * 20
        if pg:
            p_count, p_seconds = pg[name]
            assert p_count == count, f"{name}: PostgreSQL {p_count} != SQLite {count}"
            line += f"{p_seconds:>8.3f}"
        print(line)


if __name__ == "__main__":
    main()

"""Member import speed: our streaming, set-based path against a naive ORM-per-row path.

    python benchmarks/import.py                   # 1,000,000 members (naive path on 50,000)
    python benchmarks/import.py --members 200000 --naive-members 20000

Each measurement runs in a fresh child process on a fresh SQLite file, so its peak memory
(ru_maxrss) is its own; "worker MB" is the largest of its import workers (files of 8 MB and
more are validated by one worker process per core, see loyalty_mail/importing/partitioned.py).
"Memory flat" shows as the same peak at 100k rows and at the full size.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

HEADER = ["member_id", "email", "first_name", "last_name", "locale", "timezone", "joined_at", "birthday",
          "points", "total_spend", "purchase_count", "last_purchase_at", "nps_score", "subscribed", "city"]
ZONES = ["Asia/Ho_Chi_Minh", "Asia/Singapore", "America/New_York", "Europe/London", "Australia/Sydney"]
NOW = datetime(2026, 11, 23, tzinfo=timezone.utc)


def write_csv(path: Path, members: int) -> None:
    """Members as an export would give them: times to the second, amounts in cents, so the
    time, date and money columns hold as many distinct values as real files do."""
    rng = random.Random(42)
    joined_from = datetime(2023, 1, 1).timestamp()
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(HEADER)
        for n in range(1, members + 1):
            points = int(rng.expovariate(1 / 2500))
            joined = datetime.fromtimestamp(joined_from + rng.randrange(3 * 365 * 86400))
            last_purchase = datetime.fromtimestamp(joined_from + rng.randrange(46 * 30 * 86400))
            writer.writerow([
                f"LM{n:08d}", f"member{n}@example.com", rng.choice(["Lan", "Minh", "Olivia", "Noah"]),
                rng.choice(["Nguyễn", "Trần", "Smith", "Lee"]), rng.choice(["vi", "en"]), rng.choice(ZONES),
                joined.isoformat(), f"{rng.randint(1950, 2005)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                points, f"{rng.uniform(0, 5000):.2f}", rng.randint(0, 30), last_purchase.isoformat() + "+07:00",
                rng.randint(0, 10), rng.choice(["true"] * 9 + ["false"]), rng.choice(["Hà Nội", "Huế", "Đà Nẵng"]),
            ])


def child(mode: str, csv_path: str, db_path: str) -> None:
    """Run one import in this (child) process and print a JSON line with the figures."""
    from loyalty_mail import db
    from loyalty_mail.config import settings_from_document
    from loyalty_mail.importing import InputFile, import_file
    from loyalty_mail.yaml_source import load_yaml_file

    settings = settings_from_document(load_yaml_file(REPO / "config.yaml"), REPO, environ={})
    engine = db.create_db_engine(f"sqlite:///{db_path}")
    db.ensure_schema(engine)
    started = time.perf_counter()
    if mode in ("ours", "ours-1"):
        workers = None if mode == "ours" else 0
        summary = import_file(engine, settings, "members", InputFile.open(Path(csv_path)), now=NOW, workers=workers)
        rows = summary.inserted + summary.updated
    else:
        rows = naive_import(engine, settings, Path(csv_path))
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    worker_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"rows": rows, "seconds": seconds, "peak_mb": peak_mb, "worker_mb": worker_mb}))


def naive_import(engine, settings, path: Path) -> int:
    """What a first version would do: read the CSV into ORM objects one row at a time."""
    from decimal import Decimal
    from zoneinfo import ZoneInfo

    from sqlmodel import Session, select

    from loyalty_mail.models import Member
    from loyalty_mail.tiers import TierLadder

    ladder = TierLadder.from_settings(settings.tiers)
    zone = ZoneInfo(settings.program.default_timezone)
    count = 0
    with Session(engine) as session, path.open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            member = session.exec(select(Member).where(Member.member_id == row["member_id"])).first()
            if member is None:
                member = Member(member_id=row["member_id"], email=row["email"], tier="member",
                                created_at=NOW, updated_at=NOW)
            joined = datetime.fromisoformat(row["joined_at"])
            member.email = row["email"]
            member.first_name, member.last_name = row["first_name"], row["last_name"]
            member.locale, member.timezone = row["locale"], row["timezone"]
            member.joined_at = joined if joined.tzinfo else joined.replace(tzinfo=zone)
            member.points = int(row["points"])
            member.total_spend = Decimal(row["total_spend"])
            member.purchase_count = int(row["purchase_count"])
            member.last_purchase_at = datetime.fromisoformat(row["last_purchase_at"])
            member.nps_score = int(row["nps_score"])
            member.attributes = {"city": row["city"]}
            member.tier = ladder.tier_for(member.points, member.total_spend)
            member.updated_at = NOW
            session.add(member)
            session.commit()
            count += 1
    return count


def measure(mode: str, csv_path: Path, workdir: Path) -> dict:
    db_path = workdir / f"{mode}-{csv_path.stem}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    out = subprocess.run([sys.executable, __file__, "--child", mode, str(csv_path), str(db_path)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--naive-members", type=int, default=50_000)
    parser.add_argument("--child", nargs=3, metavar=("MODE", "CSV", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory(prefix="lm-bench-") as tmp:
        workdir = Path(tmp)
        sizes = sorted({min(100_000, args.members), args.members, args.naive_members})
        files = {}
        for size in sizes:
            files[size] = workdir / f"members-{size}.csv"
            write_csv(files[size], size)
        print(f"members import into SQLite (fresh database each run), {Path(sys.executable).name} "
              f"{sys.version.split()[0]}")
        print(f"{'path':<30}{'rows':>10}{'seconds':>10}{'rows/s':>12}{'peak MB':>10}{'worker MB':>11}")
        labels = {"ours": "ours (workers: one per core)", "ours-1": "ours, one process (--workers 0)",
                  "naive": "naive (ORM per row)"}
        results = {}
        for mode, size in [("ours", args.naive_members), ("naive", args.naive_members),
                           ("ours", min(100_000, args.members)), ("ours", args.members),
                           ("ours-1", args.members)]:
            key = (mode, size)
            if key in results:
                continue
            r = results[key] = measure(mode, files[size], workdir)
            workers = f"{r['worker_mb']:>11.0f}" if r["worker_mb"] else f"{'-':>11}"
            print(f"{labels[mode]:<30}{r['rows']:>10,}{r['seconds']:>10.2f}{r['rows'] / r['seconds']:>12,.0f}"
                  f"{r['peak_mb']:>10.0f}{workers}")
        ours, naive = results[("ours", args.naive_members)], results[("naive", args.naive_members)]
        speedup = (ours["rows"] / ours["seconds"]) / (naive["rows"] / naive["seconds"])
        print(f"speed-up over the naive path on the same {args.naive_members:,} rows: {speedup:.1f}x")
        small, full = results[("ours", min(100_000, args.members))], results[("ours", args.members)]
        print(f"peak memory: {small['peak_mb']:.0f} MB at {small['rows']:,} rows, "
              f"{full['peak_mb']:.0f} MB at {full['rows']:,} rows (largest worker: {small['worker_mb']:.0f} "
              f"and {full['worker_mb']:.0f} MB)")


if __name__ == "__main__":
    main()

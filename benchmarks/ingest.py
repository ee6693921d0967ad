"""Ingest API throughput and event-to-email latency: the real server (`loyalty-mail api`, one
uvicorn process) on 127.0.0.1, then the rows counted in the database.

    python benchmarks/ingest.py                       # 10 s per load run, concurrency 16
    python benchmarks/ingest.py --seconds 5 --latency-events 40
    python benchmarks/ingest.py --database postgresql+psycopg://postgres@127.0.0.1/bench  # an empty db

Batched: POST /v1/events with --batch purchases a request (1,000), one request after another, for
--seconds; events/s counts events acknowledged (200). The naive path in the same run: the same
requests to a small Starlette app defined here that applies each event as a first version would
(ORM lookups, one ORM insert, the member's totals and tier, a commit per event), run by uvicorn
the same way.
Single: --concurrency clients (HTTP/1.1 keep-alive) each POSTing one event a request; req/s and
p50/p99 latency of acknowledged requests, measured by the client (httpx in this process, then,
when it is installed, wrk: a C client that leaves the cores to the server). In process: the same requests
to the API's ASGI app called directly by --concurrency tasks in this process (no HTTP, no client
sharing the cores), with this process's CPU time a request. "lost" counts acknowledged
events whose row is not in the database (must be 0). Event to transport: with `loyalty-mail
daemon` running (wake on new data, the tick an hour away), purchases that trigger an event flow
are posted one at a time, 0.25 s apart, each for its own member; the latency runs from just
before the request to the moment the directory transport's .eml for that member appears.
Memory (--memory-events N, alone unless --only names other parts): N events in batches of
MEMORY_BATCH from MEMORY_CLIENTS clients, half to the seeded members and half to members the
events create (ingest.create_unknown_members, from the event's email: N/4 new members, two
events each), with the API process's resident memory (VmRSS) read every --memory-every events;
the verdict compares the end with the end of warm-up (--memory-warmup events).
"""

from __future__ import annotations

import argparse
import asyncio
import email.parser
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SECRET = "benchmark-secret-0123456789"
MEMBERS = 20_000
BATCH = 1000
RECEIPT_AMOUNT = 2_000_000  # at least the flow's `where: amount gte`, so each such purchase sends
CONFIG = """\
program: {name: Bench Rewards, currency: VND, default_locale: en, locales: [en, vi],
          default_timezone: Asia/Ho_Chi_Minh, points_per_currency_unit: 0.001,
          sender_email: rewards@bench.example}
tracking: {base_url: "https://t.bench.example", secret: "${LOYALTY_MAIL_SECRET}"}
sending: {directory: outbox, quiet_hours: null, frequency_cap: null, tick: 1 hour}
ingest: {create_unknown_members: true}  # only events that carry an email create members
flows:
  - {name: points_receipt, trigger: event, event: purchase, where: {amount: {gte: 1000000}},
     template: points_receipt, lateness: 1 day}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(url: str) -> None:
    import httpx
    for _ in range(600):
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} never answered")


def naive_app(project: str, url: str):  # noqa: ANN201 - a Starlette app
    """POST /v1/events as a first version would write it: for each event of the body, an ORM
    lookup of the member and of the event id, one ORM insert, the member's points, spend, count
    and tier updated, and a commit."""
    from decimal import Decimal

    from sqlmodel import Session, select
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    from loyalty_mail import db
    from loyalty_mail.config import load_settings
    from loyalty_mail.models import Event, Member
    from loyalty_mail.tiers import TierLadder

    settings = load_settings(Path(project), environ={"LOYALTY_MAIL_SECRET": SECRET})
    engine = db.create_db_engine(url)
    ladder = TierLadder.from_settings(settings.tiers)
    rate = Decimal(str(settings.program.points_per_currency_unit))

    def apply_one(session: Session, item: dict[str, Any]) -> int:
        member = session.exec(select(Member).where(Member.member_id == item["member_id"])).first()
        if member is None or session.exec(select(Event.id).where(Event.event_id == item["event_id"])).first():
            return 0
        amount = Decimal(str(item["amount"]))
        points = int(amount * rate)
        now = datetime.now(timezone.utc)
        session.add(Event(event_id=item["event_id"], member_ref=member.id, type=item["type"],
                          occurred_at=datetime.fromisoformat(item["occurred_at"]), amount=amount,
                          currency=item.get("currency"), points=points, properties={}, created_at=now))
        member.points += points
        member.total_spend += amount
        member.purchase_count += 1
        member.last_purchase_at = datetime.fromisoformat(item["occurred_at"])
        member.tier = ladder.tier_for(member.points, member.total_spend)
        member.updated_at = now
        session.add(member)
        session.commit()
        return 1

    async def events(request: Request) -> JSONResponse:
        body = json.loads(await request.body())
        items = body if isinstance(body, list) else [body]
        inserted = 0

        def apply_each() -> int:
            with Session(engine) as session:
                return sum(apply_one(session, item) for item in items)

        from starlette.concurrency import run_in_threadpool
        inserted = await run_in_threadpool(apply_each)
        return JSONResponse({"events": {"inserted": inserted}})

    async def health(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/v1/events", events, methods=["POST"]), Route("/health", health)])


def purchase(event_id: str, member: int, amount: int = 50_000) -> dict[str, Any]:
    return {"event_id": event_id, "member_id": f"M{member:06d}", "type": "purchase",
            "occurred_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "amount": amount, "currency": "VND"}


class Seen:
    """What a load run saw: acknowledged event ids, refusals, latencies of acknowledged requests."""

    def __init__(self) -> None:
        self.acknowledged: list[str] = []
        self.refused = 0
        self.latencies: list[float] = []
        self.requests = 0
        self.elapsed = 0.0

    def percentile(self, share: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(int(len(ordered) * share), len(ordered) - 1)] * 1000 if ordered else 0.0


def batched(port: int, key: str, seconds: float, tag: str, size: int = BATCH) -> Seen:
    """Batches of `size` purchases, one request after another, for `seconds`."""
    import httpx
    seen, counter = Seen(), itertools.count()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120, headers=headers) as client:
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            ids = [f"{tag}-{next(counter)}" for _ in range(size)]
            body = json.dumps([purchase(i, n % MEMBERS) for n, i in enumerate(ids)]).encode()
            sent = time.perf_counter()
            answer = client.post("/v1/events", content=body)
            seen.requests += 1
            if answer.status_code == 200:
                seen.latencies.append(time.perf_counter() - sent)
                seen.acknowledged += ids
            else:
                seen.refused += 1
        seen.elapsed = time.perf_counter() - started
    return seen


def single(port: int, key: str, seconds: float, concurrency: int, tag: str) -> Seen:
    """`concurrency` keep-alive clients, each POSTing one purchase a request, for `seconds`."""
    import httpx
    seen, counter = Seen(), itertools.count()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    async def client_loop(client: httpx.AsyncClient, stop: float) -> None:
        while time.perf_counter() < stop:
            n = next(counter)
            event_id = f"{tag}-{n}"
            body = json.dumps(purchase(event_id, (n * 7919) % MEMBERS)).encode()
            sent = time.perf_counter()
            answer = await client.post("/v1/events", content=body)
            seen.requests += 1
            if answer.status_code == 200:
                seen.latencies.append(time.perf_counter() - sent)
                seen.acknowledged.append(event_id)
            else:
                seen.refused += 1

    async def run() -> None:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120, headers=headers,
                                     limits=limits) as client:
            started = time.perf_counter()
            await asyncio.gather(*(client_loop(client, started + seconds) for _ in range(concurrency)))
            seen.elapsed = time.perf_counter() - started

    asyncio.run(run())
    return seen


WRK_SCRIPT = """
counter = 0
thread_no = 0  -- each thread's own, set by setup()
local threads = {}
function setup(thread)
  thread:set("thread_no", #threads + 1)
  table.insert(threads, thread)
end
function request()
  counter = counter + 1
  local member = (counter * 7919 + thread_no * 104729) %% %(members)d
  local body = string.format('{"event_id":"%(tag)s-%%d-%%d","member_id":"M%%06d","type":"purchase",'
    .. '"occurred_at":"%(now)s","amount":50000,"currency":"VND"}', thread_no, counter, member)
  return wrk.format("POST", "/v1/events", {["Authorization"] = "Bearer %(key)s",
    ["Content-Type"] = "application/json"}, body)
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests":%%d,"seconds":%%f,"failed":%%d,"p50":%%f,"p99":%%f}\\n',
    summary.requests, summary.duration / 1e6, e.status + e.connect + e.read + e.write + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


def single_wrk(port: int, key: str, seconds: float, concurrency: int, tag: str, url: str) -> dict[str, float]:
    """The same requests as `single`, sent by wrk (a C client: the cores go to the server, not to
    the client). Its latencies are of every request; "lost" compares the 200s with the rows whose
    event id carries this run's tag (a request in flight when wrk stops may be stored unanswered)."""
    script = Path(tempfile.mkdtemp()) / "single.lua"
    script.write_text(WRK_SCRIPT % {"members": MEMBERS, "tag": tag, "key": key,
                                    "now": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    threads = min(2, concurrency)
    done = subprocess.run(["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{seconds:g}s", "--timeout", "30s",
                           "-s", str(script), f"http://127.0.0.1:{port}"], capture_output=True, text=True, check=True)
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    stored = sum(1 for event_id in stored_event_ids(url) if event_id.startswith(f"{tag}-"))
    figures["acknowledged"] = figures["requests"] - figures["failed"]
    figures["lost"] = max(0, figures["acknowledged"] - stored)
    return figures


def in_process(project: Path, url: str, key: str, seconds: float, concurrency: int, tag: str) -> tuple[Seen, float]:
    """The API's ASGI app called directly, no HTTP: `concurrency` tasks on one event loop, each
    sending one purchase a request, for `seconds`; with the process's CPU seconds a request."""
    from loyalty_mail.api.app import create_app
    from loyalty_mail.runtime import Runtime

    runtime = Runtime.load(project, database_url=url)
    app = create_app(runtime.settings, runtime.engine(), runtime.now)
    headers = [(b"host", b"api"), (b"authorization", f"Bearer {key}".encode()),
               (b"content-type", b"application/json")]
    seen, counter = Seen(), itertools.count()

    async def post(body: bytes) -> int:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/v1/events", "raw_path": b"/v1/events", "query_string": b"",
                 "root_path": "", "headers": [*headers, (b"content-length", str(len(body)).encode())],
                 "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        status: list[int] = []

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop()
            await asyncio.sleep(3600)  # the client never disconnects
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app(scope, receive, send)
        return status[0]

    async def client_loop(stop: float) -> None:
        while time.perf_counter() < stop:
            n = next(counter)
            event_id = f"{tag}-{n}"
            sent = time.perf_counter()
            answer = await post(json.dumps(purchase(event_id, (n * 7919) % MEMBERS)).encode())
            seen.requests += 1
            if answer == 200:
                seen.latencies.append(time.perf_counter() - sent)
                seen.acknowledged.append(event_id)
            else:
                seen.refused += 1

    async def run() -> float:
        await post(json.dumps(purchase(f"{tag}-warm", 0)).encode())
        cpu, started = time.process_time(), time.perf_counter()
        await asyncio.gather(*(client_loop(started + seconds) for _ in range(concurrency)))
        seen.elapsed = time.perf_counter() - started
        return time.process_time() - cpu

    try:
        cpu_used = asyncio.run(run())
    finally:
        app.state.writer.close()
        runtime.close()
    return seen, cpu_used


def to_transport(port: int, key: str, outbox: Path, count: int) -> list[float]:
    """Seconds from posting a receipt-triggering purchase to its .eml in the outbox, per event."""
    import httpx
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    posted: dict[str, float] = {}
    arrived: dict[str, float] = {}
    known: set[str] = {p.name for p in outbox.glob("*.eml")}
    parser = email.parser.BytesHeaderParser()

    def look() -> None:
        for path in outbox.glob("*.eml"):
            if path.name in known:
                continue
            known.add(path.name)
            to = parser.parsebytes(path.read_bytes())["To"] or ""
            address = to.split("<")[-1].rstrip(">").strip()
            arrived.setdefault(address, time.perf_counter())

    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60, headers=headers) as client:
        for n in range(count):
            member = MEMBERS - 1 - n  # members no load run touched
            address = f"m{member}@bench.example"
            posted[address] = time.perf_counter()
            answer = client.post("/v1/events", content=json.dumps(
                purchase(f"receipt-{n}", member, RECEIPT_AMOUNT)).encode())
            if answer.status_code != 200:
                raise RuntimeError(f"the receipt purchase was refused: {answer.text}")
            pause_until = time.perf_counter() + 0.25
            while time.perf_counter() < pause_until:
                look()
                time.sleep(0.01)
        deadline = time.perf_counter() + 30
        while len(arrived.keys() & posted.keys()) < len(posted) and time.perf_counter() < deadline:
            look()
            time.sleep(0.01)
    return [arrived[a] - posted[a] for a in posted if a in arrived] + [float("inf")] * (
        len(posted) - len(arrived.keys() & posted.keys()))


MEMORY_BATCH = 500
MEMORY_CLIENTS = 4
MEMORY_TOLERANCE_MB = 20.0  # growth from the end of warm-up to the end still called flat


def memory_event(n: int, when: str) -> dict[str, Any]:
    """Event `n` of the memory run: even ones are purchases of the seeded members; odd ones
    belong to new member N(n // 4) (a signup carrying the email that creates it, then a purchase)."""
    if n % 2 == 0:
        return {"event_id": f"mem-{n}", "member_id": f"M{(n // 2 * 7919) % MEMBERS:06d}", "type": "purchase",
                "occurred_at": when, "amount": 50_000 + n % 1000, "currency": "VND"}
    new = n // 4
    event: dict[str, Any] = {"event_id": f"mem-{n}", "member_id": f"N{new:07d}", "occurred_at": when,
                             "email": f"n{new}@bench.example"}
    if n % 4 == 1:
        return {**event, "type": "signup"}
    return {**event, "type": "purchase", "amount": 120_000, "currency": "VND"}


RSS_FIELDS = ("VmRSS", "RssAnon", "RssFile")


def rss_mb(pid: int) -> tuple[float, ...]:
    """Resident memory of process `pid` in MB, from /proc/PID/status: VmRSS (all of it), RssAnon
    (the heap: what the process allocated) and RssFile (files mapped and resident: libraries, and
    on SQLite the database through its memory map and the write-ahead log's index, `-shm`)."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in RSS_FIELDS:
            found[name] = int(value.split()[0]) / 1024
    return tuple(found[name] for name in RSS_FIELDS)


Sample = tuple[int, tuple[float, ...]]


def memory_run(port: int, pid: int, key: str, total: int, every: int) -> tuple[list[Sample], int, float]:
    """Post `total` events (MEMORY_BATCH a request, MEMORY_CLIENTS clients) and read the server's
    memory (RSS_FIELDS) at the start and each time `every` more events are acknowledged. The
    samples (events acknowledged, MB each), the requests refused, and the seconds taken."""
    import httpx
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    batches = iter(range(0, total, MEMORY_BATCH))
    samples = [(0, rss_mb(pid))]
    state = {"done": 0, "refused": 0, "next": every}

    async def client_loop(client: httpx.AsyncClient) -> None:
        for start in batches:
            body = json.dumps([memory_event(n, when) for n in range(start, min(start + MEMORY_BATCH, total))])
            answer = await client.post("/v1/events", content=body.encode())
            if answer.status_code != 200:
                state["refused"] += 1
                if state["refused"] == 1:
                    print(f"  refused: {answer.status_code} {answer.text[:300]}")
                continue
            state["done"] += min(MEMORY_BATCH, total - start)
            if state["done"] >= state["next"]:
                samples.append((state["done"], rss_mb(pid)))
                state["next"] += every

    async def run() -> None:
        limits = httpx.Limits(max_connections=MEMORY_CLIENTS, max_keepalive_connections=MEMORY_CLIENTS)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=300, headers=headers,
                                     limits=limits) as client:
            await asyncio.gather(*(client_loop(client) for _ in range(MEMORY_CLIENTS)))

    started = time.perf_counter()
    asyncio.run(run())
    return samples, state["refused"], time.perf_counter() - started


def memory_verdict(samples: list[Sample], warmup: int, tolerance: float, field: int = 0) -> tuple[float, bool]:
    """Growth (MB) of RSS_FIELDS[field] from the first sample at or past `warmup` events to the
    last, and whether it is within `tolerance`."""
    after = [mb[field] for events, mb in samples if events >= warmup]
    growth = after[-1] - after[0] if after else float("nan")
    return growth, growth <= tolerance


def stored_event_ids(url: str) -> set[str]:
    import sqlalchemy as sa
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        ids = {r for (r,) in conn.execute(sa.text("select event_id from events where event_id is not null"))}
    engine.dispose()
    return ids


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * share), len(ordered) - 1)] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10, help="length of each load run")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency-events", type=int, default=60, help="receipt purchases timed to the outbox")
    parser.add_argument("--database", help="an empty database (default: a SQLite file in a temporary folder)")
    parser.add_argument("--batch", type=int, default=BATCH, help="purchases a request in the batched runs")
    parser.add_argument("--only", choices=["batched", "single", "in-process", "latency", "memory"], action="append",
                        help="run only these parts (repeatable; default: all)")
    parser.add_argument("--memory-events", type=int, default=0,
                        help="post this many events and sample the API's resident memory (e.g. 1000000)")
    parser.add_argument("--memory-every", type=int, default=50_000, help="events between memory samples")
    parser.add_argument("--memory-warmup", type=int, default=100_000, help="events before the memory baseline")
    parser.add_argument("--naive-server", nargs=3, metavar=("PORT", "PROJECT", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.naive_server:
        import uvicorn
        port, project, url = args.naive_server
        uvicorn.run(naive_app(project, url), host="127.0.0.1", port=int(port), log_level="warning",
                    access_log=False)
        return

    from loyalty_mail import db
    from loyalty_mail.api import keys

    with tempfile.TemporaryDirectory() as scratch_dir:
        project = Path(scratch_dir) / "program"
        project.mkdir()
        (project / "config.yaml").write_text(CONFIG, encoding="utf-8")
        shutil.copytree(REPO / "templates", project / "templates")
        url = args.database or f"sqlite:///{Path(scratch_dir) / 'ingest.db'}"
        engine = db.create_db_engine(url)
        db.ensure_schema(engine)
        with db.writer(engine).begin() as conn:
            key = keys.create(conn, "bench", "ingest", datetime.now(timezone.utc))
        engine.dispose()
        env = {**os.environ, "LOYALTY_MAIL_SECRET": SECRET, "PYTHONPATH": str(REPO)}
        cli = [sys.executable, "-m", "loyalty_mail", "--project", str(project), "--database", url]
        members = project / "members.jsonl"
        members.write_text("".join(json.dumps({"member_id": f"M{n:06d}", "email": f"m{n}@bench.example",
                                               "first_name": "Lan", "locale": "en",
                                               "joined_at": "2020-01-01T00:00:00+00:00"}) + "\n"
                                   for n in range(MEMBERS)))
        subprocess.run([*cli, "members", "import", str(members)], env=env, check=True, capture_output=True)

        def start(command: list[str]) -> tuple[subprocess.Popen[bytes], int]:
            port = free_port()
            server = subprocess.Popen([c.replace("{port}", str(port)) for c in command], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_for(f"http://127.0.0.1:{port}/health")
            return server, port

        def stop(server: subprocess.Popen[bytes]) -> None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=120)

        ours = [*cli, "api", "--port", "{port}"]
        naive = [sys.executable, __file__, "--naive-server", "{port}", str(project), url]
        print(f"database: {db.display_url(url)}; {MEMBERS:,} members; {args.seconds:g} s per load run; "
              f"load average {os.getloadavg()[0]:.2f} at the start")
        print(f"{'path':<42}{'requests':>9}{'events':>9}{'events/s':>10}{'req/s':>8}{'p50 ms':>8}"
              f"{'p99 ms':>9}{'non-200':>8}{'lost':>6}")

        def report(label: str, seen: Seen) -> float:
            stored = stored_event_ids(url)
            lost = sum(1 for event_id in seen.acknowledged if event_id not in stored)
            print(f"{label:<42}{seen.requests:>9,}{len(seen.acknowledged):>9,}"
                  f"{len(seen.acknowledged) / seen.elapsed:>10,.0f}{seen.requests / seen.elapsed:>8,.0f}"
                  f"{seen.percentile(0.5):>8.1f}{seen.percentile(0.99):>9.1f}{seen.refused:>8}{lost:>6}")
            return len(seen.acknowledged) / seen.elapsed

        parts = set(args.only or (("memory",) if args.memory_events else ("batched", "single", "in-process",
                                                                           "latency")))
        if "memory" in parts:
            server, port = start(ours)
            try:
                samples, refused, seconds = memory_run(port, server.pid, key, args.memory_events or 1_000_000,
                                                       args.memory_every)
            finally:
                stop(server)
            print(f"memory: {samples[-1][0]:,} events in batches of {MEMORY_BATCH} from {MEMORY_CLIENTS} clients "
                  f"in {seconds:.0f} s ({samples[-1][0] / seconds:,.0f} events/s), {refused} requests refused; "
                  f"load average {os.getloadavg()[0]:.2f}")
            print(f"{'events':>10}" + "".join(f"{name + ' MB':>12}" for name in RSS_FIELDS))
            for events, mb in samples:
                print(f"{events:>10,}" + "".join(f"{value:>12.1f}" for value in mb))
            if url.startswith("sqlite:///"):
                files = [Path(url.removeprefix("sqlite:///") + suffix) for suffix in ("", "-wal", "-shm")]
                print("  files: " + ", ".join(f"{f.name} {f.stat().st_size / 2**20:,.1f} MB" for f in files
                                             if f.exists()))
            for field, name in enumerate(RSS_FIELDS):
                growth, flat = memory_verdict(samples, args.memory_warmup, MEMORY_TOLERANCE_MB, field)
                print(f"{name} growth from {args.memory_warmup:,} events to the end: {growth:+.1f} MB "
                      f"({'flat' if flat else 'NOT flat'}: tolerance {MEMORY_TOLERANCE_MB:g} MB)")
        rates: list[float] = []
        for label, command, tag in ((f"ours, batches of {args.batch:,}", ours, "b"),
                                    (f"naive, batches of {args.batch:,} (a transaction each)", naive, "n")):
            if "batched" not in parts:
                break
            server, port = start(command)
            try:
                seen = batched(port, key, args.seconds, tag, args.batch)
            finally:
                stop(server)
            rates.append(report(label, seen))
        if len(rates) == 2 and rates[1]:
            print(f"  batched: ours {rates[0] / rates[1]:.1f}x the naive path's events/s")
        if "single" in parts:
            server, port = start(ours)
            try:
                cpu_before = cpu_seconds(server.pid)
                seen = single(port, key, args.seconds, args.concurrency, "s")
                cpu_used = cpu_seconds(server.pid) - cpu_before
            finally:
                stop(server)
            report(f"ours, one event a request, {args.concurrency} clients", seen)
            if cpu_used == cpu_used:  # not NaN: the server's CPU time is known (Linux)
                print(f"  the API process used {1000 * cpu_used / max(seen.requests, 1):.2f} ms of CPU a request "
                      f"(the database server's own CPU not included)")
            if shutil.which("wrk"):
                server, port = start(ours)
                try:
                    figures = single_wrk(port, key, args.seconds, args.concurrency, "w", url)
                finally:
                    stop(server)
                print(f"{f'ours, one event a request, wrk, {args.concurrency} conns':<42}{figures['requests']:>9,}"
                      f"{figures['acknowledged']:>9,}{figures['acknowledged'] / figures['seconds']:>10,.0f}"
                      f"{figures['requests'] / figures['seconds']:>8,.0f}{figures['p50']:>8.1f}{figures['p99']:>9.1f}"
                      f"{figures['failed']:>8}{figures['lost']:>6}")
            else:
                print("  (wrk is not installed: `apt-get install wrk` adds a run with a C client)")
        if "in-process" in parts:
            os.environ["LOYALTY_MAIL_SECRET"] = SECRET
            seen, cpu_used = in_process(project, url, key, args.seconds, args.concurrency, "i")
            report(f"in process (no HTTP), {args.concurrency} tasks", seen)
            print(f"  this process used {1000 * cpu_used / max(seen.requests, 1):.2f} ms of CPU a request")
        if "latency" not in parts:
            return

        server, port = start(ours)
        daemon = subprocess.Popen([*cli, "daemon", "--interval", "3600", "--wake"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(5)  # the daemon's first tick plans every member once, then waits for new data
            outbox = project / "outbox"
            outbox.mkdir(exist_ok=True)
            latencies = to_transport(port, key, outbox, args.latency_events)
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=120)
            stop(server)
        missing = sum(1 for value in latencies if value == float("inf"))
        print(f"event to transport ({len(latencies)} purchases, daemon waking on new data): "
              f"p50 {percentile(latencies, 0.5):.2f} s, p99 {percentile(latencies, 0.99):.2f} s, "
              f"max {max(latencies):.2f} s; {missing} not delivered within 30 s")
        print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()

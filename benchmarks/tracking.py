"""Tracking service throughput and durability: the real server (`loyalty-mail serve`, one uvicorn
process) on 127.0.0.1 under a keep-alive HTTP load at a fixed concurrency, then the rows counted in
the database; kill -9 in the middle of a load; and SendGrid webhook batches of 1,000 events.

    python benchmarks/tracking.py                      # 10 s per load run, concurrency 32
    python benchmarks/tracking.py --seconds 5 --kill-runs 3
    python benchmarks/tracking.py --database postgresql+psycopg://postgres@127.0.0.1/bench  # an empty db

Load: hits/s and p50/p99 latency of answered hits, measured by the client (asyncio, HTTP/1.1
keep-alive, one connection per concurrent client). The naive path in the same run: the same routes
with each hit written in its own transaction before answering (a small Starlette app defined here,
run by uvicorn the same way). kill -9: every hit has its own send id; the server is killed
mid-load; "lost" counts hits answered 2xx/3xx whose row is not in the database (must be 0).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SECRET = "benchmark-secret-0123456789"
SENDS = 2000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(url: str) -> None:
    import httpx
    for _ in range(300):
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} never answered")


def naive_app(url: str):  # noqa: ANN201 - a Starlette app
    """Same token checks, one INSERT and COMMIT per hit before answering."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse, RedirectResponse, Response
    from starlette.routing import Route

    from loyalty_mail import db
    from loyalty_mail.models import tracking_events_table
    from loyalty_mail.signing import BadToken, TokenSigner

    engine, signer = db.create_db_engine(url), TokenSigner(SECRET)

    def write(kind: str, claims, request) -> None:  # noqa: ANN001
        with engine.begin() as conn:
            conn.execute(tracking_events_table.insert().values(
                send_id=claims.send_id, kind=kind, source="naive", occurred_at=datetime.now(timezone.utc),
                url=claims.url, link=claims.link, user_agent=request.headers.get("user-agent"),
                machine=False, bot=False, detail={}))

    def pixel(request):  # noqa: ANN001, ANN202
        try:
            claims = signer.verify(request.path_params["token"], "open")
        except BadToken:
            return PlainTextResponse("not found", status_code=404)
        write("open", claims, request)
        return Response(b"GIF89a", media_type="image/gif")

    def click(request):  # noqa: ANN001, ANN202
        try:
            claims = signer.verify(request.path_params["token"], "click")
        except BadToken:
            return PlainTextResponse("not found", status_code=404)
        write("click", claims, request)
        return RedirectResponse(claims.url, status_code=302)

    def health(request):  # noqa: ANN001, ANN202
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/o/{token}.gif", pixel), Route("/c/{token}", click), Route("/health", health)])


USER_AGENT = "Mozilla/5.0 (Windows NT 10.0) Chrome/120"


class Load:
    """What a load run saw: answered hits (by index into the paths), failures, latencies."""

    def __init__(self) -> None:
        self.answered: list[int] = []
        self.refused = 0          # answered with a status other than 2xx/3xx
        self.broken = 0           # connection closed or reset before an answer
        self.latencies: list[float] = []
        self.elapsed = 0.0

    def percentile(self, share: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(int(len(ordered) * share), len(ordered) - 1)] * 1000 if ordered else 0.0


async def _client(port: int, paths: list[str], next_index: Iterator[int], stop: float, cycle: bool,
                  seen: Load) -> None:
    """One keep-alive connection sending GETs one after another until `stop` or the server dies."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        seen.broken += 1
        return
    try:
        while time.monotonic() < stop:
            index = next(next_index)
            if index >= len(paths) and not cycle:
                return
            path = paths[index % len(paths)]
            started = time.perf_counter()
            writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\nUser-Agent: {USER_AGENT}\r\n\r\n".encode())
            try:
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
                await reader.readexactly(int(length.group(1)) if length else 0)
            except (asyncio.IncompleteReadError, ConnectionError):
                seen.broken += 1
                return
            seen.latencies.append(time.perf_counter() - started)
            if 200 <= int(head[9:12]) < 400:
                seen.answered.append(index)
            else:
                seen.refused += 1
    finally:
        writer.close()


def load(port: int, paths: list[str], seconds: float, concurrency: int,
         kill: subprocess.Popen[bytes] | None = None, kill_after: float = 0.0) -> Load:
    """`concurrency` clients for `seconds`, cycling through `paths`. With `kill`, each path is sent
    once, that process gets SIGKILL after `kill_after` seconds and the run ends when every client
    has seen its connection die."""
    seen = Load()

    async def run() -> None:
        counter = itertools.count()
        started = time.monotonic()
        clients = [asyncio.create_task(_client(port, paths, counter, started + seconds, kill is None, seen))
                   for _ in range(concurrency)]
        if kill is not None:
            await asyncio.sleep(kill_after)
            kill.send_signal(signal.SIGKILL)
        await asyncio.wait_for(asyncio.gather(*clients), timeout=seconds + 60)
        seen.elapsed = time.monotonic() - started

    try:
        import uvloop
        uvloop.run(run())
    except ImportError:
        asyncio.run(run())
    return seen


def stored_send_ids(url: str) -> set[str]:
    import sqlalchemy as sa
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        ids = {r for (r,) in conn.execute(sa.text("select send_id from tracking_events"))}
    engine.dispose()
    return ids


def count_rows(url: str) -> int:
    import sqlalchemy as sa
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        count = conn.execute(sa.text("select count(*) from tracking_events")).scalar_one()
        conn.execute(sa.text("delete from tracking_events"))
        conn.commit()
    engine.dispose()
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10, help="length of each load run")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--kill-runs", type=int, default=3, help="kill -9 runs (0: none)")
    parser.add_argument("--repeat", type=int, default=1, help="load runs of our path per kind (p99 varies run to run)")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive path")
    parser.add_argument("--no-webhook", action="store_true", help="skip the webhook batches")
    parser.add_argument("--database", help="an empty database (default: a SQLite file in a temporary folder)")
    parser.add_argument("--naive-server", nargs=2, metavar=("PORT", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.naive_server:
        import uvicorn
        uvicorn.run(naive_app(args.naive_server[1]), host="127.0.0.1", port=int(args.naive_server[0]),
                    log_level="warning", access_log=False)
        return

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from loyalty_mail import db
    from loyalty_mail.signing import TokenClaims, TokenSigner

    private = ec.generate_private_key(ec.SECP256R1())
    public = base64.b64encode(private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        (scratch / "config.yaml").write_text(
            "program: {name: Bench}\ntracking: {base_url: 'https://t.example', secret: '${LOYALTY_MAIL_SECRET}', "
            f"sendgrid_webhook_key: '{public}', max_body_bytes: 5000000}}\n")
        url = args.database or f"sqlite:///{scratch / 'tracking.db'}"
        engine = db.create_db_engine(url)
        db.ensure_schema(engine)
        engine.dispose()
        count_rows(url)
        signer = TokenSigner(SECRET)
        send_ids = [f"{n:032x}" for n in range(SENDS)]
        pixels = [f"/o/{signer.sign(TokenClaims('open', s))}.gif" for s in send_ids]
        clicks = [f"/c/{signer.sign(TokenClaims('click', s, 0, 'https://shop.example/sale?id=' + s[-6:]))}"
                  for s in send_ids]
        env = {**os.environ, "LOYALTY_MAIL_SECRET": SECRET}
        ours = [sys.executable, "-m", "loyalty_mail", "--project", str(scratch), "--database", url, "serve",
                "--port", "{port}"]
        naive = [sys.executable, __file__, "--naive-server", "{port}", url]

        def start(command: list[str]) -> tuple[subprocess.Popen[bytes], int]:
            port = free_port()
            server = subprocess.Popen([c.replace("{port}", str(port)) for c in command], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_for(f"http://127.0.0.1:{port}/health")
            return server, port

        print(f"database: {db.display_url(url)}; concurrency {args.concurrency}, {args.seconds:g} s per load run")
        print(f"{'path':<36}{'answered':>10}{'hits/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'non-2xx':>8}{'rows':>9}{'lost':>6}")
        paths_run = [("ours (group commit)", ours, args.repeat)]
        if not args.no_naive:
            paths_run.append(("naive (a transaction per hit)", naive, 1))
        for label, command, repeat in paths_run:
            for kind, paths in [(k, p) for k, p in (("pixel", pixels), ("click", clicks)) for _ in range(repeat)]:
                server, port = start(command)
                seen = load(port, paths, args.seconds, args.concurrency)
                server.send_signal(signal.SIGTERM)
                server.wait(timeout=60)
                rows = count_rows(url)
                # "lost": answered hits missing from the table (each hit is answered once committed)
                print(f"{label + ', ' + kind:<36}{len(seen.answered):>10,}{len(seen.answered) / seen.elapsed:>9,.0f}"
                      f"{seen.percentile(0.5):>8.1f}{seen.percentile(0.99):>8.1f}{seen.refused:>8}{rows:>9,}"
                      f"{max(len(seen.answered) - rows, 0):>6}")
        # kill -9 mid-load: every hit its own send id, so each answered hit is looked up by id.
        for run in range(args.kill_runs):
            ids = [f"{run:04x}{n:028x}" for n in range(int(args.seconds * 6000))]
            paths = [f"/o/{signer.sign(TokenClaims('open', i))}.gif" if n % 2 else
                     f"/c/{signer.sign(TokenClaims('click', i, 0, 'https://shop.example/'))}"
                     for n, i in enumerate(ids)]
            server, port = start(ours)
            seen = load(port, paths, args.seconds + 30, args.concurrency, kill=server,
                        kill_after=args.seconds / 2)
            server.wait(timeout=60)
            stored = stored_send_ids(url)
            lost = sum(1 for index in seen.answered if ids[index] not in stored)
            count_rows(url)
            print(f"kill -9 run {run + 1}: killed after {args.seconds / 2:g} s (exit {server.returncode}); "
                  f"{len(seen.answered):,} hits answered, {len(stored):,} rows, {seen.broken} connections cut, "
                  f"lost {lost}")
        if args.no_webhook:
            return
        # Webhook batches of 1,000 events, signed, posted one after another.
        import httpx
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "loyalty_mail", "--project", str(scratch), "--database", url, "serve",
                                   "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(f"http://127.0.0.1:{port}/health")
        kinds = ["processed", "delivered", "open", "click", "deferred"]
        batches = []
        for b in range(20):
            events = [{"email": f"m{n}@example.com", "event": kinds[n % 5], "timestamp": int(time.time()),
                       "sg_event_id": f"b{b}-e{n}", "sg_message_id": f"m{n}", "send_id": send_ids[n % SENDS],
                       "useragent": "Mozilla/5.0", "url": "https://shop.example/"} for n in range(1000)]
            body = json.dumps(events).encode()
            stamp = str(int(time.time()))
            signature = base64.b64encode(private.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()
            batches.append((body, {"Content-Type": "application/json",
                                   "X-Twilio-Email-Event-Webhook-Signature": signature,
                                   "X-Twilio-Email-Event-Webhook-Timestamp": stamp}))
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            started = time.perf_counter()
            for body, headers in batches:
                assert client.post("/webhooks/sendgrid", content=body, headers=headers).json()["new"] == 1000
            elapsed = time.perf_counter() - started
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        print(f"webhook: 20 batches of 1,000 events in {elapsed:.2f} s = {20000 / elapsed:,.0f} events/s "
              f"({count_rows(url):,} rows stored)")


if __name__ == "__main__":
    main()

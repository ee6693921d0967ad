"""Tracking service throughput: the real server (`loyalty-mail serve`) on 127.0.0.1 under wrk,
then the rows counted in the database; and SendGrid webhook batches of 1,000 events.

    python benchmarks/tracking.py                  # 15 s per load run, 32 connections
    python benchmarks/tracking.py --seconds 5

The naive path in the same run: the same routes with each hit written in its own transaction
before answering (a small Starlette app defined here, run by uvicorn the same way). Needs wrk
(Debian: `apt-get install wrk`). SQLite, as configured by default.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
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


def wrk(base: str, paths: list[str], seconds: int, connections: int, scratch: Path) -> dict[str, float]:
    script = scratch / "paths.lua"
    script.write_text("paths = {" + ",".join(json.dumps(p) for p in paths) + "}\n"
                      "i = 0\nrequest = function()\n  i = i % #paths + 1\n"
                      "  return wrk.format('GET', paths[i], {['User-Agent'] = 'Mozilla/5.0 (Windows NT 10.0) Chrome/120'})\nend\n")
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), base],
                         capture_output=True, text=True, check=True).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1, "s": 1000}[p99.group(2)]
    return {"requests": requests, "errors": int(errors.group(1)) if errors else 0,
            "rate": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p99_ms": float(p99.group(1)) * scale}


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
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=32)
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
        url = f"sqlite:///{scratch / 'tracking.db'}"
        engine = db.create_db_engine(url)
        db.ensure_schema(engine)
        engine.dispose()
        signer = TokenSigner(SECRET)
        send_ids = [f"{n:032x}" for n in range(SENDS)]
        pixels = [f"/o/{signer.sign(TokenClaims('open', s))}.gif" for s in send_ids]
        clicks = [f"/c/{signer.sign(TokenClaims('click', s, 0, 'https://shop.example/sale?id=' + s[-6:]))}"
                  for s in send_ids]
        env = {**os.environ, "LOYALTY_MAIL_SECRET": SECRET}
        print(f"{'path':<40}{'requests':>10}{'req/s':>10}{'p99 ms':>9}{'non-2xx':>9}{'rows':>8}{'lost':>6}")
        for label, command in (
            ("ours (batched writes)", [sys.executable, "-m", "loyalty_mail", "--project", str(scratch), "--database", url,
                                       "serve", "--port", "{port}"]),
            ("naive (a transaction per hit)", [sys.executable, __file__, "--naive-server", "{port}", url]),
        ):
            for kind, paths in (("pixel", pixels), ("click", clicks)):
                port = free_port()
                server = subprocess.Popen([c.replace("{port}", str(port)) for c in command], env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                wait_for(f"http://127.0.0.1:{port}/health")
                figures = wrk(f"http://127.0.0.1:{port}", paths, args.seconds, args.connections, scratch)
                server.send_signal(signal.SIGTERM)
                server.wait(timeout=60)
                rows = count_rows(url)
                accepted = figures["requests"] - figures["errors"]
                # rows may exceed wrk's count: requests still in flight when wrk stops are answered
                # (and stored) after it stopped counting. "lost" is accepted hits missing from the table.
                print(f"{label + ' ' + kind:<40}{figures['requests']:>10,}{figures['rate']:>10,.0f}"
                      f"{figures['p99_ms']:>9.1f}{figures['errors']:>9}{rows:>8,}{max(accepted - rows, 0):>6}")
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

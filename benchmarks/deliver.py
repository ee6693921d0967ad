"""Delivery speed: rendered messages to a local SendGrid stand-in (through the official client) and
to a local SMTP sink, our transports against a naive one-at-a-time, one-connection-per-message
path, in the same run.

    python benchmarks/deliver.py                 # 20,000 messages each way; naive on 1,000
    python benchmarks/deliver.py --messages 5000

The stand-in and the sink run in child processes of their own (so they do not share our GIL).
The stand-in parses each JSON body but does not run the schema check here (the tests do, on
every request); the sink is aiosmtpd. Messages are the example welcome email rendered for 500
members, each sent under its own send id.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import smtplib
import socket
import sys
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from loyalty_mail.config import SendGridSettings, SmtpSettings, load_settings  # noqa: E402
from loyalty_mail.rendering import Renderer  # noqa: E402
from loyalty_mail.transports.sendgrid_api import SendGridTransport, build_mail  # noqa: E402
from loyalty_mail.transports.smtp import SmtpTransport  # noqa: E402
from loyalty_mail.tracking.tokens import TokenSigner  # noqa: E402

NOW = datetime(2026, 11, 23, 3, 0, tzinfo=timezone.utc)
SECRET = "benchmark-secret-0123456789"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class StandIn(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):  # noqa: N802
        json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.send_header("X-Message-Id", "bench")
        self.end_headers()

    def log_message(self, *args):
        pass


def serve_http(port: int) -> None:
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer(("127.0.0.1", port), StandIn).serve_forever()


def serve_smtp(port: int, counter) -> None:  # noqa: ANN001
    from aiosmtpd.controller import Controller

    class Sink:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802
            with counter.get_lock():
                counter.value += 1
            return "250 OK"

    Controller(Sink(), hostname="127.0.0.1", port=port).start()
    while True:
        time.sleep(3600)


def wait_for(port: int) -> None:
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def messages(count: int) -> list:
    import render as render_bench
    settings = load_settings(REPO, environ={"LOYALTY_MAIL_SECRET": SECRET})
    renderer = Renderer.for_program(settings, signer=TokenSigner(SECRET))
    base = [renderer.render("welcome", m, now=NOW, flow={"name": "welcome"}, occurrence={"kind": "signup", "key": "w"})
            for m in render_bench.members(500)]
    return [dataclasses.replace(base[n % len(base)], send_id=f"{n:032x}") for n in range(count)]


def naive_sendgrid(batch: list, host: str) -> None:
    import sendgrid
    for email in batch:  # a new client (and connection) per message, one at a time
        sendgrid.SendGridAPIClient(api_key="SG.bench", host=host).send(build_mail(email, SendGridSettings()))


def naive_smtp(batch: list, port: int) -> None:
    for email in batch:  # a new connection per message
        with smtplib.SMTP("127.0.0.1", port) as connection:
            connection.sendmail(email.sender.email, [email.to.email], email.to_bytes())


def timed(label: str, count: int, run) -> float:  # noqa: ANN001
    started = time.perf_counter()
    run()
    rate = count / (time.perf_counter() - started)
    print(f"{label:<52}{count:>8,}{rate:>12,.0f}")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--naive", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    batch = messages(args.messages)
    http_port, smtp_port = free_port(), free_port()
    counter = multiprocessing.Value("i", 0)
    servers = [multiprocessing.Process(target=serve_http, args=(http_port,), daemon=True),
               multiprocessing.Process(target=serve_smtp, args=(smtp_port, counter), daemon=True)]
    for server in servers:
        server.start()
    wait_for(http_port), wait_for(smtp_port)
    host = f"http://127.0.0.1:{http_port}"
    print(f"{'path':<52}{'messages':>8}{'msgs/s':>12}")
    sendgrid = SendGridTransport(SendGridSettings(api_key="SG.bench", host=host), concurrency=args.concurrency)

    def ours_sendgrid() -> None:
        for start in range(0, len(batch), 100):
            results = sendgrid.send(batch[start:start + 100])
            assert all(r.outcome == "sent" for r in results), results[0]

    ours_sg = timed(f"sendgrid: ours ({args.concurrency} concurrent requests)", len(batch), ours_sendgrid)
    sendgrid.close()
    naive_sg = timed("sendgrid: naive (one at a time, new client each)", args.naive,
                     lambda: naive_sendgrid(batch[:args.naive], host))
    smtp = SmtpTransport(SmtpSettings(host="127.0.0.1", port=smtp_port, security="none"))

    def ours_smtp() -> None:
        for start in range(0, len(batch), 100):
            assert all(r.outcome == "sent" for r in smtp.send(batch[start:start + 100]))

    ours_mail = timed("smtp: ours (one connection reused)", len(batch), ours_smtp)
    smtp.close()
    naive_mail = timed("smtp: naive (new connection per message)", args.naive,
                       lambda: naive_smtp(batch[:args.naive], smtp_port))
    print(f"speed-up: sendgrid {ours_sg / naive_sg:.1f}x, smtp {ours_mail / naive_mail:.1f}x; "
          f"the sink received {counter.value:,} messages")
    for server in servers:
        server.terminate()


if __name__ == "__main__":
    main()

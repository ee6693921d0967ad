"""Delivery speed: rendered messages to a local SendGrid stand-in (through the official client) and
to a local SMTP sink, our transports against a naive one-at-a-time, one-connection-per-message
path, and the SMTP sink's own maximum, in the same run.

    python benchmarks/deliver.py                 # 20,000 messages each way; naive on 1,000
    python benchmarks/deliver.py --messages 5000 --latency 0,20,50 --concurrency 8

The stand-in and the sink run in child processes of their own (so they do not share our GIL).
The stand-in parses each JSON body but does not run the schema check here (the tests do, on
every request); the sink is aiosmtpd, offering PIPELINING as most relays do. Messages are the
example welcome email rendered for 500 members, each sent under its own send id.

The sink's maximum is what a raw client gets through it: as many connections as ours, each
writing all its messages (envelope, DATA and content, prepared beforehand) without waiting for a
reply, and reading the replies as they come; it runs before and after ours, and the better of
the two counts. Our SMTP transport is measured on batches of 100
and on windows of `--concurrency` messages (how delivery hands them over, each window recorded
as handed over first), each as a fraction of that maximum.

`--latency` runs the whole comparison once per value (milliseconds): the stand-in waits that
long before it answers each request, the sink before it accepts each message's DATA. 0 is
loopback, where both paths are bound by the CPU of this machine; a real provider answers after
a network round trip and its own work, which is what concurrency and reused connections overlap.
With latency the naive path runs on a tenth of `--naive` (it would take minutes otherwise).
"server" and "client" are the CPU time the server process and this process used during each
path, as a share of the wall time (100%: one core busy all along).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
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
from loyalty_mail.signing import TokenSigner  # noqa: E402

NOW = datetime(2026, 11, 23, 3, 0, tzinfo=timezone.utc)
SECRET = "benchmark-secret-0123456789"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class StandIn(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    latency = 0.0

    def do_POST(self):  # noqa: N802
        json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.latency:
            time.sleep(self.latency)
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.send_header("X-Message-Id", "bench")
        self.end_headers()

    def log_message(self, *args):
        pass


def serve_http(port: int, latency: float) -> None:
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.request_queue_size = 128  # the default backlog of 5 drops concurrent connects
    StandIn.latency = latency
    ThreadingHTTPServer(("127.0.0.1", port), StandIn).serve_forever()


def serve_smtp(port: int, counter, latency: float) -> None:  # noqa: ANN001
    import asyncio

    from aiosmtpd.controller import Controller

    class Sink:
        async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: N802
            session.host_name = hostname
            return [*responses[:-1], "250-PIPELINING", responses[-1]]

        async def handle_DATA(self, server, session, envelope):  # noqa: N802
            if latency:
                await asyncio.sleep(latency)
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


def blast_smtp(payloads: list[bytes], port: int, connections: int) -> None:
    """The sink's maximum: each connection writes all its messages at once, then reads every reply."""
    import asyncio

    async def one(stream: bytes, replies: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await reader.readline()
        writer.write(b"EHLO bench\r\n")
        while not (await reader.readline()).startswith(b"250 "):
            pass
        writer.write(stream)
        seen = 0
        while seen < replies:  # MAIL, RCPT, DATA and end of data: four one-line replies a message
            line = await reader.readline()
            if not line:
                raise RuntimeError("the sink closed the connection")
            if line[3:4] == b" ":
                if not line.startswith((b"250", b"354")):
                    raise RuntimeError(f"the sink answered {line!r}")
                seen += 1
        writer.write(b"QUIT\r\n")
        writer.close()

    async def run() -> None:
        parts = [payloads[n::connections] for n in range(connections)]
        await asyncio.gather(*(one(b"".join(part), 4 * len(part)) for part in parts if part))

    asyncio.run(run())


def raw_payloads(batch: list) -> list[bytes]:
    """Each message as a raw client writes it: envelope, DATA, dot-stuffed content, end."""
    from loyalty_mail.transports.smtp import _data
    return [f"MAIL FROM:<{e.sender.email}>\r\nRCPT TO:<{e.to.email}>\r\nDATA\r\n".encode()
            + _data(e.to_bytes()) for e in batch]


def naive_smtp(batch: list, port: int) -> None:
    for email in batch:  # a new connection per message
        with smtplib.SMTP("127.0.0.1", port) as connection:
            connection.sendmail(email.sender.email, [email.to.email], email.to_bytes())


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(label: str, count: int, run, server: int) -> float:  # noqa: ANN001
    """Messages/s of `run`, and how busy the server process was meanwhile (100%: one core)."""
    started, server_cpu, own_cpu = time.perf_counter(), cpu_seconds(server), time.process_time()
    run()
    elapsed = time.perf_counter() - started
    server_busy = (cpu_seconds(server) - server_cpu) / elapsed
    own_busy = (time.process_time() - own_cpu) / elapsed
    rate = count / elapsed
    print(f"{label:<52}{count:>8,}{rate:>12,.0f}{server_busy:>10.0%}{own_busy:>10.0%}")
    return rate


def compare(batch: list, latency_ms: float, naive_count: int, concurrency: int) -> None:
    latency = latency_ms / 1000
    http_port, smtp_port = free_port(), free_port()
    counter = multiprocessing.Value("i", 0)
    servers = [multiprocessing.Process(target=serve_http, args=(http_port, latency), daemon=True),
               multiprocessing.Process(target=serve_smtp, args=(smtp_port, counter, latency), daemon=True)]
    for server in servers:
        server.start()
    wait_for(http_port), wait_for(smtp_port)
    host = f"http://127.0.0.1:{http_port}"
    print(f"\n{latency_ms:g} ms latency")
    print(f"{'path':<52}{'messages':>8}{'msgs/s':>12}{'server':>10}{'client':>10}")
    sendgrid = SendGridTransport(SendGridSettings(api_key="SG.bench", host=host), concurrency=concurrency)

    def ours_sendgrid() -> None:
        for start in range(0, len(batch), 100):
            results = sendgrid.send(batch[start:start + 100])
            assert all(r.outcome == "sent" for r in results), results[0]

    ours_sg = timed(f"sendgrid: ours ({concurrency} concurrent requests)", len(batch), ours_sendgrid,
                   servers[0].pid)
    sendgrid.close()
    naive_sg = timed("sendgrid: naive (one at a time, new client each)", naive_count,
                     lambda: naive_sendgrid(batch[:naive_count], host), servers[0].pid)
    smtp = SmtpTransport(SmtpSettings(host="127.0.0.1", port=smtp_port, security="none"),
                         concurrency=concurrency)

    def ours_smtp() -> None:
        for start in range(0, len(batch), 100):
            assert all(r.outcome == "sent" for r in smtp.send(batch[start:start + 100]))

    payloads = raw_payloads(batch)
    sink_max = timed(f"smtp: the sink's maximum (raw, {concurrency} connections)", len(batch),
                     lambda: blast_smtp(payloads, smtp_port, concurrency), servers[1].pid)
    ours_mail = timed(f"smtp: ours ({concurrency} connections, batches of 100)", len(batch), ours_smtp,
                      servers[1].pid)

    def ours_smtp_windows() -> None:
        for start in range(0, len(batch), concurrency):
            assert all(r.outcome == "sent" for r in smtp.send(batch[start:start + concurrency]))

    ours_windows = timed(f"smtp: ours (windows of {concurrency}, as delivery hands over)", len(batch),
                         ours_smtp_windows, servers[1].pid)
    smtp.close()
    sink_max = max(sink_max, timed("smtp: the sink's maximum, measured again", len(batch),
                                   lambda: blast_smtp(payloads, smtp_port, concurrency), servers[1].pid))
    naive_mail = timed("smtp: naive (new connection per message)", naive_count,
                       lambda: naive_smtp(batch[:naive_count], smtp_port), servers[1].pid)
    print(f"speed-up: sendgrid {ours_sg / naive_sg:.1f}x, smtp {ours_mail / naive_mail:.1f}x; "
          f"smtp at {ours_mail / sink_max:.2f} of the sink's maximum in batches, "
          f"{ours_windows / sink_max:.2f} in windows; the sink received {counter.value:,} messages")
    for server in servers:
        server.terminate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--naive", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency", default="0,20", help="provider latency in ms, comma-separated")
    args = parser.parse_args()
    batch = messages(args.messages)
    for latency in (float(value) for value in args.latency.split(",")):
        compare(batch, latency, args.naive if not latency else max(args.naive // 10, 20), args.concurrency)


if __name__ == "__main__":
    main()

"""Live data end to end, with real processes only: an event posted to the HTTP API (uvicorn)
reaches a real SMTP server through a real daemon with a one-hour tick, once (an API killed with
SIGKILL under load is in test_api_durability.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx

from loyalty_mail.api import keys

from .flow_program import SECRET, Program
from .processes import free_port, stop, wait_until_answering
from .test_delivery import SmtpSink, configure, start_sink
from .test_wake import RECEIPT, _arrived, _log_has, engine_of

REPO = Path(__file__).resolve().parents[1]
WAIT_S = 30


def api_key(program: Program) -> str:
    engine = engine_of(program)
    with engine.begin() as conn:
        key = keys.create(conn, "till", "ingest", datetime.now(timezone.utc))
    engine.dispose()
    return key


def start(program: Program, log: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "LOYALTY_MAIL_SECRET": SECRET, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "loyalty_mail", "--project", str(program.dir), "--database", program.url, *args]
    with log.open("a") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


def test_an_event_posted_over_http_is_emailed_once_by_a_daemon_with_a_one_hour_tick(program, tmp_path):
    sink = SmtpSink()
    controller = start_sink(sink)
    log, port = tmp_path / "processes.log", free_port()
    daemon = api = None
    try:
        configure(program, f"  transport: smtp\n  smtp: {{host: 127.0.0.1, port: {sink.port}, security: none}}\n")
        config = (program.dir / "config.yaml").read_text().replace(
            'quiet_hours: {start: "21:00", end: "08:00"}', "quiet_hours: null")
        (program.dir / "config.yaml").write_text(config + RECEIPT)
        key = api_key(program)
        headers = {"Authorization": f"Bearer {key}"}
        api = start(program, log, "api", "--port", str(port))
        wait_until_answering(port, api, log.read_text)
        joined = (datetime.now(timezone.utc) - timedelta(days=400)).isoformat()
        r = httpx.put(f"http://127.0.0.1:{port}/v1/members/OLD", headers=headers, timeout=10, json={
            "email": "old@example.com", "first_name": "Lan", "locale": "en", "timezone": "Asia/Ho_Chi_Minh",
            "points": 25_000, "joined_at": joined})
        assert r.status_code == 200, r.text
        daemon = start(program, log, "daemon", "--interval", "3600")
        assert _log_has(log, "tick at ", 60), log.read_text()   # the first tick is over: nothing due
        assert sink.messages == []

        event = {"member_id": "OLD", "type": "purchase", "amount": 2_000_000, "currency": "VND",
                 "occurred_at": datetime.now(timezone.utc).isoformat(), "event_id": "till-1"}
        r = httpx.post(f"http://127.0.0.1:{port}/v1/events", headers=headers, json=event, timeout=10)
        assert r.status_code == 200, r.text
        assert _arrived(sink, 1, WAIT_S) is not None, f"no email within {WAIT_S} s\n" + log.read_text()
        assert sink.messages[0]["Subject"] == "You earned 2,000 points, Lan"

        r = httpx.post(f"http://127.0.0.1:{port}/v1/events", headers=headers, json=event, timeout=10)
        assert r.status_code == 200, r.text                     # a retried request: accepted, not applied twice
        time.sleep(2)
        assert len(sink.messages) == 1
    finally:
        stop(daemon)
        stop(api)
        controller.stop()
    assert key not in log.read_text()

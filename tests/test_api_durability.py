"""The ingest API under kill -9: an event it acknowledged (200) is in the database, and a client
that retries what was not acknowledged, under the same event_id, gets each event applied once;
one event a request and batches, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from loyalty_mail import db
from loyalty_mail.api import keys
from loyalty_mail.models import events_table, members_table

from .conftest import FIXED_NOW, REPO, TEST_CONFIG
from .processes import api_program, free_port, stop, wait_until_answering

EVENTS = 300
MEMBERS = 20
POINTS_EACH = 50  # a purchase of 50,000 VND at 0.001 points per VND


class Api:
    """`loyalty-mail api` in its own process, started again on the same port after a kill."""

    def __init__(self, project: Path, url: str):
        self.command = [sys.executable, "-m", "loyalty_mail", "--project", str(project), "--database", url,
                        "api", "--port", str(free_port())]
        self.port = int(self.command[-1])
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(self.command, env={**os.environ, "PYTHONPATH": str(REPO)},
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until_answering(self.port, self.process)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        stop(self.process, seconds=60)


class RetryingClient(threading.Thread):
    """Posts EVENTS purchases, `per_request` a request (one: a JSON object, more: an array); a
    request not answered 200 is sent again, same body."""

    def __init__(self, port: int, key: str, per_request: int):
        super().__init__(daemon=True)
        self.port, self.key, self.per_request = port, key, per_request
        self.acknowledged: list[str] = []
        self.retries = 0
        self.failure: str | None = None

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        deadline = time.monotonic() + 240
        with httpx.Client(base_url=f"http://127.0.0.1:{self.port}", headers=headers, timeout=10) as client:
            for first in range(0, EVENTS, self.per_request):
                events = [{"event_id": f"E{n:05d}", "member_id": f"M{n % MEMBERS:03d}", "type": "purchase",
                           "occurred_at": "2026-11-20T10:00:00+07:00", "amount": 50_000, "currency": "VND"}
                          for n in range(first, min(first + self.per_request, EVENTS))]
                body = events[0] if self.per_request == 1 else events
                while True:
                    if time.monotonic() > deadline:
                        self.failure = f"event {first} was never acknowledged"
                        return
                    try:
                        answer = client.post("/v1/events", json=body)
                    except httpx.TransportError:
                        answer = None
                    if answer is not None and answer.status_code == 200:
                        self.acknowledged += [event["event_id"] for event in events]
                        break
                    if answer is not None and answer.status_code not in (502, 503):
                        self.failure = f"event {first}: {answer.status_code} {answer.text}"
                        return
                    self.retries += 1
                    time.sleep(0.02)


@pytest.mark.slow
@pytest.mark.parametrize("per_request", [1, 10], ids=["one event a request", "batches of 10"])
def test_no_acknowledged_event_is_lost_when_the_api_is_killed(tmp_path, database_url, per_request):
    project, url, engine = api_program(tmp_path, TEST_CONFIG, database_url)
    with db.writer(engine).begin() as conn:
        key = keys.create(conn, "shop", "ingest", FIXED_NOW)
    api = Api(project, url)
    api.start()
    try:
        members = {"members": [{"member_id": f"M{n:03d}", "email": f"m{n}@example.com"} for n in range(MEMBERS)]}
        assert httpx.post(f"http://127.0.0.1:{api.port}/v1/members/batch", json=members,
                          headers={"Authorization": f"Bearer {key}"}, timeout=30).status_code == 200
        client = RetryingClient(api.port, key, per_request)
        client.start()
        kills = 0
        for wanted in (EVENTS // 4, EVENTS // 2):  # kill -9 twice while the client is sending
            while len(client.acknowledged) < wanted and client.is_alive():
                time.sleep(0.005)
            api.kill()
            kills += 1
            acknowledged_before_restart = list(client.acknowledged)
            with engine.connect() as conn:
                stored = set(conn.execute(sa.select(events_table.c.event_id)).scalars())
            assert set(acknowledged_before_restart) <= stored  # committed before the answer, not after
            api.start()
        client.join(timeout=240)
        assert client.failure is None, client.failure
        assert not client.is_alive()
        assert kills == 2 and client.retries > 0  # the kills did cut requests off
    finally:
        api.stop()
    with engine.connect() as conn:
        stored_ids = list(conn.execute(sa.select(events_table.c.event_id)).scalars())
        points = conn.execute(sa.select(sa.func.sum(members_table.c.points))).scalar_one()
    engine.dispose()
    assert sorted(client.acknowledged) == sorted(stored_ids) == [f"E{n:05d}" for n in range(EVENTS)]
    assert points == EVENTS * POINTS_EACH  # each event applied once, retries included

"""`loyalty-mail serve --workers N`: several uvicorn worker processes on one port, as a real process."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
import sqlalchemy as sa

from loyalty_mail import db
from loyalty_mail.models import tracking_events_table
from loyalty_mail.signing import TokenClaims, TokenSigner

from .flow_program import SECRET, make_program

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_serve_with_two_workers_answers_records_and_stops_cleanly(tmp_path):
    url = f"sqlite:///{tmp_path / 'serve.db'}"
    program = make_program(tmp_path, url)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "loyalty_mail", "--project", str(program.dir), "--database", url,
         "serve", "--port", str(port), "--workers", "2"],
        env={**os.environ, "LOYALTY_MAIL_SECRET": SECRET}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120   # two processes import the package anew
        while True:
            assert process.poll() is None, process.communicate()[1]
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "no answer on /health within 120 s"
            time.sleep(0.2)
        token = TokenSigner(SECRET).sign(TokenClaims("click", "s" * 32, 0, "https://shop.example/perks"))
        with httpx.Client(base_url=base, timeout=10) as http:
            answers = [http.get(f"/c/{token}") for _ in range(6)]   # new connections: both workers serve
        assert [(r.status_code, r.headers["location"]) for r in answers] == \
            [(302, "https://shop.example/perks")] * 6
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert len(set(re.findall(r"Started server process \[(\d+)\]", stderr))) == 2, stderr
    engine = db.create_db_engine(url)
    with engine.connect() as conn:   # every worker writes the hits it accepted before it exits
        kinds = conn.execute(sa.select(tracking_events_table.c.kind)).scalars().all()
    engine.dispose()
    assert kinds == ["click"] * 6


def test_serve_with_workers_refuses_a_missing_secret_before_starting(tmp_path):
    url = f"sqlite:///{tmp_path / 'serve.db'}"
    program = make_program(tmp_path, url)
    env = {k: v for k, v in os.environ.items() if k != "LOYALTY_MAIL_SECRET"}
    result = subprocess.run(
        [sys.executable, "-m", "loyalty_mail", "--project", str(program.dir), "--database", url,
         "serve", "--port", str(free_port()), "--workers", "2"],
        env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "LOYALTY_MAIL_SECRET" in result.stderr, result.stderr

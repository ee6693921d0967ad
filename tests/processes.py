"""Real processes for tests: a free port, waiting until an HTTP service answers, and stopping a
process the way an operator would (SIGTERM, then SIGKILL if it does not stop)."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import sqlalchemy as sa

from loyalty_mail import db


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_answering(port: int, process: subprocess.Popen[bytes], output: Callable[[], str] = str,
                         seconds: float = 60) -> None:
    """Until GET /health on `port` answers 200; fails with the process's output if it exits or
    `seconds` pass first."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline and process.poll() is None, "the service did not start\n" + output()
        time.sleep(0.05)


def stop(process: subprocess.Popen[bytes] | None, seconds: float = 30) -> None:
    """SIGTERM, then SIGKILL after `seconds`; nothing if it already exited."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def api_program(tmp_path: Path, config: str, url: str | None = None) -> tuple[Path, str, sa.Engine]:
    """A program folder with this config.yaml and an empty database with the schema (a SQLite
    file unless `url` names one), for a real `loyalty-mail api` process: (folder, database URL, engine)."""
    project = tmp_path / "program"
    project.mkdir()
    (project / "config.yaml").write_text(config, encoding="utf-8")
    url = url or f"sqlite:///{tmp_path / 'api.db'}"
    engine = db.create_db_engine(url)
    db.ensure_schema(engine)
    return project, url, engine

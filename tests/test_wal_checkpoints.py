"""SQLite: a service's write-ahead log stays bounded under a writer that never pauses."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from loyalty_mail import db

pytestmark = pytest.mark.slow


def largest_log(path: Path, restart_pages: int, seconds: float = 2.0, writer_restarts: bool = False) -> int:
    """The largest size the log reaches while commits follow each other for `seconds`, with
    the service's checkpointer running (and, with `writer_restarts`, the writer restarting the
    log between its transactions, as the services' writers do)."""
    engine = db.create_db_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    checkpoints = db.WalCheckpointer(engine, every=0.02, restart_pages=restart_pages)
    writer = db.writer(checkpoints.writer)
    largest = 0
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            with writer.begin() as conn:
                conn.exec_driver_sql("INSERT INTO t (v) VALUES (?)", [("x" * 3000,) for _ in range(4)])
            largest = max(largest, Path(f"{path}-wal").stat().st_size)
            if writer_restarts:
                checkpoints.between_transactions()
    finally:
        checkpoints.close()
        engine.dispose()
    return largest


def test_the_writer_restarts_the_log_near_its_limit(tmp_path):
    """Passive checkpoints alone never catch up with a writer that never pauses: the log only
    grows. Cut back by the writer between its transactions, it stays within a few times its limit."""
    unbounded = largest_log(tmp_path / "passive.db", restart_pages=10**9)
    bounded = largest_log(tmp_path / "restarted.db", restart_pages=64, writer_restarts=True)
    assert bounded * 4 < unbounded, (bounded, unbounded)
    assert bounded < 64 * 1024 * 1024
    restart_pages = 256  # 1 MB
    near = largest_log(tmp_path / "writer.db", restart_pages=restart_pages, writer_restarts=True)
    assert near < 4 * restart_pages * 4096 < unbounded, (near, unbounded)


def test_a_reader_on_older_frames_does_not_hold_the_writer_up(tmp_path):
    """While a reader's snapshot keeps frames in the log, the writer's restart does not wait for
    it (it would keep the writer out): commits go on at their own pace."""
    path = tmp_path / "read.db"
    engine = db.create_db_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    checkpoints = db.WalCheckpointer(engine, every=0.01, restart_pages=1)
    writer = db.writer(checkpoints.writer)
    slowest = 0.0
    try:
        with engine.connect() as reader:
            reader.exec_driver_sql("SELECT count(*) FROM t").scalar_one()  # its transaction's snapshot, held
            with writer.begin() as conn:
                conn.exec_driver_sql("INSERT INTO t (v) VALUES ('x')")
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                started = time.monotonic()
                with writer.begin() as conn:
                    conn.exec_driver_sql("INSERT INTO t (v) VALUES (?)", [("x" * 3000,) for _ in range(4)])
                checkpoints.between_transactions()  # the log is past its limit: the writer tries, and does not wait
                slowest = max(slowest, time.monotonic() - started)
            reader.rollback()
    finally:
        checkpoints.close()
        engine.dispose()
    assert slowest < 0.15, slowest

"""Every open and click the tracking service answers is stored: a hit is answered once it is
committed, a hit the database refuses is kept aside without stopping the writer, /health fails
while writing is stuck, `check` warns about links too long to track, and kill -9 in the middle of
a load loses no answered hit (a real uvicorn process)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from loyalty_mail import db
from loyalty_mail.config import load_settings
from loyalty_mail.models import rejected_hits_table, tracking_events_table
from loyalty_mail.rendering import Renderer
from loyalty_mail.rendering.checks import check_templates
from loyalty_mail.tracking.app import create_app
from loyalty_mail.signing import TokenClaims, TokenSigner

SECRET = "Dq7-vLm2Kx9RtPz4Wn"
NOW = datetime(2026, 11, 23, 3, 0, tzinfo=timezone.utc)
SIGNER = TokenSigner(SECRET)
LONG_URL = "https://shop.example/sale?ref=" + "x" * 2500


def open_path(send_id: str) -> str:
    return f"/o/{SIGNER.sign(TokenClaims('open', send_id))}.gif"


def click_path(send_id: str, url: str = "https://shop.example/sale", link: int = 0) -> str:
    return f"/c/{SIGNER.sign(TokenClaims('click', send_id, link, url))}"


def configure(project: Path, extra: str = "") -> None:
    config = project / "config.yaml"
    config.write_text(config.read_text() + f"tracking:\n  secret: ${{LOYALTY_MAIL_SECRET}}\n{extra}")


def rows(engine: sa.Engine, table: sa.Table) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(table).order_by(table.c.id)).mappings()]


def refuse_long_urls_on_sqlite(engine: sa.Engine) -> None:
    """SQLite keeps strings of any length; give it PostgreSQL's refusal of a URL longer than the
    column, so both databases see the same bad row."""
    if engine.dialect.name == "sqlite":
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "CREATE TRIGGER url_column_limit BEFORE INSERT ON tracking_events "
                "WHEN length(NEW.url) > 2000 BEGIN SELECT RAISE(ABORT, 'value too long for url'); END")


async def in_process(app: Any, requests: Any) -> Any:
    """Run `requests(client)` against the app with its lifespan (which stops the writer)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t.test") as client:
            return await asyncio.wait_for(requests(client), timeout=60)


@pytest.fixture
def engine(database_url):
    engine = db.create_db_engine(database_url)
    yield engine
    engine.dispose()


def test_a_refused_hit_is_kept_aside_and_the_writer_keeps_recording(project, engine):
    configure(project)
    refuse_long_urls_on_sqlite(engine)
    app = create_app(load_settings(project, environ={"LOYALTY_MAIL_SECRET": SECRET}), engine, lambda: NOW)

    async def requests(client: httpx.AsyncClient) -> list[httpx.Response]:
        alone = await client.get(click_path("a" * 32, LONG_URL))
        later = [await client.get(open_path(f"{n:032x}")) for n in range(5)]
        # one refused hit among many committed together: the batch is split to find it
        crowd = await asyncio.gather(*[client.get(click_path(f"{n + 100:032x}", LONG_URL if n == 17 else
                                                             f"https://shop.example/p{n}")) for n in range(40)])
        health = await client.get("/health")
        return [alone, *later, *crowd, health]

    answers = asyncio.run(in_process(app, requests))
    assert [a.status_code for a in answers[:-1]] == [302] + [200] * 5 + [302] * 40
    stored = {r["send_id"] for r in rows(engine, tracking_events_table)}
    assert stored == {f"{n:032x}" for n in range(5)} | {f"{n + 100:032x}" for n in range(40) if n != 17}
    kept = rows(engine, rejected_hits_table)
    assert [(k["kind"], k["raw"].count("x" * 2500)) for k in kept] == [("click", 1), ("click", 1)]
    assert all("the database refused it" in k["reason"] for k in kept)
    health = answers[-1].json()
    assert answers[-1].status_code == 200 and health["status"] == "ok"
    assert health["writer"]["rejected"] == 2 and health["writer"]["written"] == 44


def hold_write_lock(engine: sa.Engine, database_url: str) -> Any:
    """Another client holding the tracking table: every write of the service waits behind it.
    Returns the function that lets go."""
    if engine.dialect.name == "sqlite":
        blocker = sqlite3.connect(sa.engine.make_url(database_url).database, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        return lambda: (blocker.execute("ROLLBACK"), blocker.close())
    conn = engine.connect()
    conn.exec_driver_sql("LOCK TABLE tracking_events IN EXCLUSIVE MODE")
    return lambda: (conn.rollback(), conn.close())


def test_health_shows_the_backlog_and_fails_while_writing_is_stuck(project, engine, database_url):
    configure(project, "  write_timeout: 1 second\n")
    app = create_app(load_settings(project, environ={"LOYALTY_MAIL_SECRET": SECRET}), engine, lambda: NOW)

    async def requests(client: httpx.AsyncClient) -> dict[str, Any]:
        seen: dict[str, Any] = {"before": await client.get("/health")}
        release = hold_write_lock(engine, database_url)
        try:
            started = time.monotonic()
            seen["pixel"] = await client.get(open_path("b" * 32))   # answered after write_timeout
            seen["pixel_seconds"] = time.monotonic() - started
            # stuck once its group has waited write_timeout since the writer took it, which is a
            # moment after the pixel's own wait began: ask until it says so (or give up at 10 s)
            seen["stuck"] = await client.get("/health")
            while seen["stuck"].status_code != 503 and time.monotonic() - started < 10:
                await asyncio.sleep(0.05)
                seen["stuck"] = await client.get("/health")
        finally:
            release()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            seen["after"] = await client.get("/health")
            if seen["after"].status_code == 200 and seen["after"].json()["writer"]["backlog"] == 0:
                break
            await asyncio.sleep(0.05)
        return seen

    seen = asyncio.run(in_process(app, requests))
    before = seen["before"].json()
    assert seen["before"].status_code == 200
    assert before["writer"]["backlog"] == 0 and before["writer"]["state"] == "idle"
    assert seen["pixel"].status_code == 200 and 0.9 <= seen["pixel_seconds"] < 10
    stuck = seen["stuck"].json()
    assert seen["stuck"].status_code == 503, stuck
    assert stuck["status"] == "stuck" and stuck["writer"]["backlog"] == 1 and stuck["writer"]["stuck"]
    assert stuck["writer"]["waiting_seconds"] >= 1
    after = seen["after"].json()
    assert seen["after"].status_code == 200 and after["writer"]["written"] == 1, after
    assert [r["send_id"] for r in rows(engine, tracking_events_table)] == ["b" * 32]


def test_check_warns_about_a_link_too_long_to_track(project):
    unsignable = "https://shop.example/?q=" + "y" * 3500
    (project / "templates" / "sale").mkdir(parents=True)
    body = ('---\nsubject: "Sale"\n---\n<p>Hello</p>\n'
            '<p><a href="https://shop.example/ok">fine</a></p>\n'
            f'<p><a href="{LONG_URL}">too long to store</a></p>\n'
            f'<p><a href="{unsignable}">too long to sign</a></p>\n')
    for locale in ("vi", "en"):
        (project / "templates" / "sale" / f"{locale}.html").write_text(body, encoding="utf-8")
    configure(project)
    settings = load_settings(project, environ={"LOYALTY_MAIL_SECRET": SECRET})
    report = check_templates(Renderer.for_program(settings, signer=SIGNER), NOW)
    assert report.errors == []
    warnings = [str(w) for w in report.warnings if "characters" in str(w)]
    assert len(warnings) == 4, report.warnings  # two links in each of the two files
    assert [w.replace("/en.html", "/vi.html") for w in warnings[2:]] == warnings[:2]
    assert warnings[0].startswith(f"templates/sale/vi.html:6: a link of {len(LONG_URL)} characters")
    assert "its clicks cannot be stored (URLs of more than 2000 characters" in warnings[0]
    assert "token" not in warnings[0]
    assert warnings[1].startswith(f"templates/sale/vi.html:7: a link of {len(unsignable)} characters")
    assert "more than 4096" in warnings[1] and "cannot be stored" in warnings[1]


# -- kill -9 under load: a real process -------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(project: Path, database_url: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "loyalty_mail", "--project", str(project), "--database", database_url,
         "serve", "--port", str(port)],
        env={**os.environ, "LOYALTY_MAIL_SECRET": SECRET}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return server, base
        except httpx.HTTPError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError(f"the tracking service did not start: {server.communicate(timeout=10)[1]!r}")


@pytest.mark.slow
def test_kill_9_under_load_loses_no_answered_hit(project, engine, database_url):
    configure(project)
    server, base = start_server(project, database_url)
    hits, kill_after = 500, 150
    paths = [open_path(f"{n:032x}") if n % 2 else click_path(f"{n:032x}") for n in range(hits)]
    answered: list[str] = []

    async def fire() -> None:
        gate = asyncio.Semaphore(64)
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=base, timeout=10, limits=limits) as client:
            async def hit(n: int) -> None:
                async with gate:
                    try:
                        answer = await client.get(paths[n])
                    except httpx.HTTPError:
                        return  # in flight when the process died: not answered
                    if answer.status_code in (200, 302):
                        answered.append(f"{n:032x}")
                        if len(answered) == kill_after:
                            server.send_signal(signal.SIGKILL)
            await asyncio.gather(*[hit(n) for n in range(hits)])

    try:
        asyncio.run(asyncio.wait_for(fire(), timeout=120))
        server.wait(timeout=10)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=10)
        server.communicate(timeout=10)
    assert server.returncode == -signal.SIGKILL
    assert kill_after <= len(answered) < hits, "the process was not killed in the middle of the load"
    stored = {r["send_id"] for r in rows(engine, tracking_events_table)}
    lost = sorted(set(answered) - stored)
    assert lost == [], f"{len(lost)} of {len(answered)} answered hits were lost"


def test_on_sqlite_hits_are_committed_without_checkpoints_and_checkpointed_apart(tmp_path):
    """The hit writer's connections never checkpoint the write-ahead log at commit (its fsyncs
    held up a group of hits every few hundred commits); the service's checkpointer copies it back
    while it runs and once more at close."""
    from datetime import timedelta

    from loyalty_mail.tracking.store import Hit, HitWriter

    url = f"sqlite:///{tmp_path / 'hits.db'}"
    engine = db.create_db_engine(url)
    db.ensure_schema(engine)
    writer = HitWriter(engine, 0, timedelta(seconds=5))
    assert writer.engine is not engine
    with writer.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one() == 0
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one() == 1000
    before = (tmp_path / "hits.db").stat().st_size
    for n in range(300):
        writer.add(Hit("open", f"s{n:04d}", datetime(2026, 11, 23, tzinfo=timezone.utc))).result(timeout=10)
    writer.close()
    assert len(rows(engine, tracking_events_table)) == 300
    assert (tmp_path / "hits.db").stat().st_size > before   # copied back from the log, by the service
    engine.dispose()

"""Real databases for the tests: a fresh SQLite file per test, and one PostgreSQL database per
session (emptied between tests). In CI (CI=true) PostgreSQL must be there: if it is down we try to
start it, and if that fails the PostgreSQL tests fail instead of skipping.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from loyalty_mail import db
from loyalty_mail.cli import cli
from loyalty_mail.models import members_table
from loyalty_mail.runtime import Runtime


def blank_member_row() -> dict[str, Any]:
    """A members row naming every column (executemany takes its columns from the first row):
    None, or 0 for the tier period's measures, which cannot be null."""
    return {column.name: None for column in members_table.columns} | {"period_spend": Decimal(0),
                                                                       "period_points_earned": 0}

PG_ADMIN_URL = os.environ.get("LOYALTY_MAIL_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"  # the large data sets beside a checkout; no test may need it outside CI
FIXTURES = REPO / "tests" / "fixtures"  # real third-party files the tests read (see its README.md)
FIXED_NOW = datetime(2026, 11, 23, 3, 0, tzinfo=timezone.utc)

TEST_CONFIG = """\
program:
  name: Test Rewards
  currency: VND
  default_locale: vi
  locales: [vi, en]
  default_timezone: Asia/Ho_Chi_Minh
  points_per_currency_unit: 0.001
tiers:
  basis: points
  levels:
    - {name: member, threshold: 0, perks: [Birthday voucher]}
    - {name: silver, threshold: 1000, perks: [5% off]}
    - {name: gold, threshold: 5000, perks: [10% off, Free delivery]}
    - {name: platinum, threshold: 20000, perks: [15% off, Personal shopper]}
"""


def _postgres_reason() -> str | None:
    """None when PostgreSQL answers; otherwise why not (after trying to start it)."""
    def ping() -> str | None:
        try:
            engine = sa.create_engine(PG_ADMIN_URL)
            with engine.connect():
                pass
            engine.dispose()
            return None
        except Exception as exc:  # noqa: BLE001 - any failure means "not available"
            return str(exc).splitlines()[0]

    reason = ping()
    if reason is None:
        return None
    versions = sorted(Path("/etc/postgresql").glob("*")) if Path("/etc/postgresql").exists() else []
    if versions:
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1].name, "main", "start"],
                       capture_output=True, timeout=60, check=False)
        reason = ping()
    return reason


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    reason = _postgres_reason()
    if reason is not None:
        message = f"PostgreSQL is not available at {db.display_url(PG_ADMIN_URL)}: {reason}"
        if IN_CI:
            pytest.fail(message + " (CI must run the PostgreSQL tests)")
        pytest.skip(message + " (set LOYALTY_MAIL_TEST_POSTGRES to point at a server)")
    name = f"lm_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    yield url
    with admin.connect() as connection:
        connection.execute(sa.text(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' "
            "AND pid <> pg_backend_pid()"))
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


@pytest.fixture(scope="session")
def _postgres_schema(postgres_url: str) -> str:
    engine = db.create_db_engine(postgres_url)
    db.ensure_schema(engine)
    engine.dispose()
    return postgres_url


def _empty_postgres(url: str) -> None:
    engine = db.create_db_engine(url)
    with engine.begin() as connection:
        tables = [t for t in sa.inspect(connection).get_table_names() if t != "alembic_version"]
        if tables:
            connection.execute(sa.text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database with the current schema and no data: SQLite file, then PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'test.db'}"
        engine = db.create_db_engine(url)
        db.ensure_schema(engine)
        engine.dispose()
        return url
    url = request.getfixturevalue("_postgres_schema")
    _empty_postgres(url)
    return url


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A program directory with the test config.yaml."""
    directory = tmp_path / "program"
    directory.mkdir()
    (directory / "config.yaml").write_text(TEST_CONFIG, encoding="utf-8")
    return directory


@pytest.fixture
def runtime(project: Path, database_url: str) -> Iterator[Runtime]:
    rt = Runtime.load(project, database_url=database_url, clock=lambda: FIXED_NOW)
    yield rt
    rt.close()


class Cli:
    """Runs `loyalty-mail --project P --database URL ...` in-process, as a user would type it."""

    def __init__(self, project: Path, database_url: str | None):
        self.project = project
        self.database_url = database_url

    def __call__(self, *args: str, input: str | None = None) -> Result:
        prefix = ["--project", str(self.project)]
        if self.database_url:
            prefix += ["--database", self.database_url]
        return CliRunner().invoke(cli, [*prefix, *args], input=input, catch_exceptions=False)


@pytest.fixture
def run(project: Path, database_url: str) -> Cli:
    return Cli(project, database_url)


# For a test of what `check` says of config.yaml and templates: the answer does not depend on the
# database, so it runs on SQLite alone (the PostgreSQL runs of the planner and ledger are elsewhere).
CONFIG_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def program(tmp_path: Path, database_url: str):
    """The flow-test program (tests/flow_program.py) on SQLite, then PostgreSQL."""
    from .flow_program import make_program
    return make_program(tmp_path, database_url)


@pytest.fixture
def sqlite_program(tmp_path: Path):
    """The flow-test program on SQLite only (for tests with several real processes)."""
    from .flow_program import make_program
    url = f"sqlite:///{tmp_path / 'delivery.db'}"
    engine = db.create_db_engine(url)
    db.ensure_schema(engine)
    engine.dispose()
    return make_program(tmp_path, url)

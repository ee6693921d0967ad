"""The command line as a user meets it: help, exit codes, init, check, seed, demo, members show."""

from __future__ import annotations

import email
import email.policy
import json
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from loyalty_mail.cli import LoyaltyGroup, cli
from loyalty_mail.errors import LoyaltyMailError
from loyalty_mail.models import events_table, members_table

from .conftest import FIXED_NOW, REPO


def all_commands(group: click.Group = cli, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in group.commands.items():
        path = prefix + (name,)
        if isinstance(command, click.Group):
            found += all_commands(command, path)
        else:
            found.append(path)
    return found


@pytest.mark.parametrize("path", all_commands(), ids=" ".join)
def test_every_command_has_help_with_an_example(path):
    result = CliRunner().invoke(cli, [*path, "-h"])
    assert result.exit_code == 0
    assert "Example:" in result.output and f"loyalty-mail {' '.join(path)}" in result.output


def test_usage_mistakes_exit_1_without_traceback(run):
    result = run("members", "import")
    assert result.exit_code == 1
    assert "Missing argument 'FILE'" in result.stderr and "Traceback" not in result.output
    unknown = run("frobnicate")
    assert unknown.exit_code == 1 and "No such command 'frobnicate'" in unknown.stderr


def test_bugs_exit_2_and_ask_for_a_report():
    @click.group(cls=LoyaltyGroup)
    @click.option("-v", "--verbose", count=True)
    def app(verbose: int) -> None:
        """App."""

    @app.command()
    def broken() -> None:
        raise ZeroDivisionError("division by zero")

    @app.command()
    def mistake() -> None:
        raise LoyaltyMailError("the segment 'vip' does not exist")

    result = CliRunner().invoke(app, ["broken"])
    assert result.exit_code == 2
    assert "Internal error: ZeroDivisionError: division by zero" in result.stderr
    assert "This is a bug in loyalty-mail" in result.stderr
    assert "Traceback" not in result.stderr
    verbose = CliRunner().invoke(app, ["-v", "broken"])
    assert verbose.exit_code == 2
    assert "Traceback" in verbose.stderr and 'raise ZeroDivisionError("division by zero")' in verbose.stderr
    user_error = CliRunner().invoke(app, ["mistake"])
    assert user_error.exit_code == 1 and user_error.stderr == "Error: the segment 'vip' does not exist\n"


def test_config_errors_exit_1_with_file_and_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.yaml").write_text("program:\n  currency: XYZ\n")
    result = CliRunner().invoke(cli, ["check"])
    assert result.exit_code == 1
    assert result.stderr == ("Error: config.yaml:2:13: program.currency: 'XYZ' is not an ISO 4217 "
                             "currency code (e.g. VND, USD, EUR)\n")


def test_init_scaffolds_a_program_that_checks(tmp_path, monkeypatch):
    monkeypatch.delenv("LOYALTY_MAIL_DATABASE_URL", raising=False)
    target = tmp_path / "new-program"
    result = CliRunner().invoke(cli, ["init", str(target)])
    assert result.exit_code == 0, result.output
    assert (target / "config.yaml").read_text() == (REPO / "config.yaml").read_text()
    assert (target / "segments").is_dir() and (target / "templates").is_dir()
    checked = CliRunner().invoke(cli, ["--project", str(target), "check"])
    assert checked.exit_code == 0 and "config.yaml: ok (program 'Sen Vàng Rewards'" in checked.stdout
    again = CliRunner().invoke(cli, ["init", str(target)])
    assert again.exit_code == 1 and "already exist(s); use --force to overwrite" in again.stderr


def test_seed_is_deterministic_and_realistic(run, runtime):
    assert run("seed", "--members", "300", "--seed", "7", "--at", FIXED_NOW.isoformat()).exit_code == 0
    with runtime.engine().connect() as connection:
        first = connection.execute(sa.select(members_table.c.member_id, members_table.c.email,
                                             members_table.c.points, members_table.c.tier,
                                             members_table.c.timezone).order_by(members_table.c.id)).all()
        purchases = connection.execute(sa.select(sa.func.count()).where(events_table.c.type == "purchase")).scalar_one()
        locales = dict(connection.execute(sa.select(members_table.c.locale, sa.func.count())
                                          .group_by(members_table.c.locale)).all())
        late = connection.execute(sa.select(sa.func.count()).where(events_table.c.occurred_at > FIXED_NOW)).scalar_one()
    assert len(first) == 300 and set(locales) == {"vi", "en"}
    assert late == 0  # no history from the future
    assert 1.5 < purchases / 300 < 4.5  # CDNOW customers average about 2.5 orders in 18 months
    assert {row.tier for row in first} >= {"member", "silver"}

    # Seeding again with the same seed into a fresh database gives the same program.
    other = Path(str(runtime.project_dir)) / "again.db"
    result = CliRunner().invoke(cli, ["--project", str(runtime.project_dir), "--database", f"sqlite:///{other}",
                                      "seed", "--members", "300", "--seed", "7", "--at", FIXED_NOW.isoformat()])
    assert result.exit_code == 0, result.output
    engine = sa.create_engine(f"sqlite:///{other}")
    with engine.connect() as connection:
        second = connection.execute(sa.text(
            "SELECT member_id, email, points, tier, timezone FROM members ORDER BY id")).all()
    engine.dispose()
    assert [tuple(r) for r in second] == [tuple(r) for r in first]


def test_members_show_table_and_json(run, tmp_path):
    (tmp_path / "m.csv").write_text("member_id,email,first_name,points,city\nV1,v1@example.com,Vy,1200,Huế\n",
                                    encoding="utf-8")
    assert run("members", "import", str(tmp_path / "m.csv")).exit_code == 0
    table = run("members", "show", "V1")
    assert table.exit_code == 0
    assert "v1@example.com" in table.stdout and "attributes.city" in table.stdout and "silver" in table.stdout
    shown = json.loads(run("members", "show", "V1", "--format", "json").stdout)
    assert shown["member_id"] == "V1" and shown["tier"] == "silver" and shown["attributes"] == {"city": "Huế"}
    assert shown["tier_history"] == [] and shown["event_count"] == 0
    missing = run("members", "show", "NOPE")
    assert missing.exit_code == 1
    assert missing.stderr.startswith("Error: no member with id 'NOPE'.")


@pytest.mark.slow
def test_demo_runs_the_pipeline_over_simulated_days(tmp_path):
    """The demo seeds its own database, walks the days through the real planner, writes .eml files
    and the HTML report; everything it made up is labelled simulated; a second run starts afresh."""
    import sqlalchemy as sa
    from freezegun import freeze_time

    project = tmp_path / "p"
    CliRunner().invoke(cli, ["init", str(project)])
    with freeze_time("2026-11-23 03:00:00"):
        result = CliRunner().invoke(cli, ["--project", str(project), "demo", "--members", "300", "--days", "6"])
    assert result.exit_code == 0, result.output
    folder = project / "demo"
    assert (folder / "demo.db").exists() and not (project / "loyalty_mail.db").exists()
    assert "6 simulated days, 2026-11-17 to 2026-11-22" in result.stdout
    assert "Planner: 24 ticks" in result.stdout and "Members by tier" in result.stdout
    engine = sa.create_engine(f"sqlite:///{folder / 'demo.db'}")
    with engine.connect() as conn:
        sent = set(conn.execute(sa.text("SELECT send_id FROM sends WHERE state = 'sent'")).scalars())
        sources = set(conn.execute(sa.text("SELECT DISTINCT source FROM tracking_events")).scalars())
        late = conn.execute(sa.text("SELECT properties FROM events WHERE occurred_at >= '2026-11-16 17:00'")).scalars().all()
        first_send = conn.execute(sa.text("SELECT min(sent_at) FROM sends WHERE state = 'sent'")).scalar_one()
    engine.dispose()
    assert sent and {p.stem for p in (folder / "outbox").glob("*.eml")} == sent
    assert sources == {"simulated"}
    assert late and all('"simulated": true' in properties for properties in late)
    assert first_send >= "2026-11-16 17:00"   # nothing is sent before the first simulated day
    page = (folder / "report.html").read_text(encoding="utf-8")
    assert "Demo data." in page and "2026-11-17 to 2026-11-22" in page and page.count("<svg") >= 4
    # The throwaway secret is kept beside the outbox (owner-only), so the demo's coupons verify.
    secret = folder / "secret"
    assert secret.stat().st_mode & 0o777 == 0o600 and f"LOYALTY_MAIL_SECRET=$(cat {secret})" in result.stdout
    codes = {code for eml in (folder / "outbox").glob("*.eml")
             for part in email.message_from_bytes(eml.read_bytes(), policy=email.policy.default).walk()
             if part.get_content_type() == "text/plain"
             for code in re.findall(r"\b(?:BACK20|YEAR\d+)-[A-Z2-9]{8}\b", part.get_content())}
    assert codes
    verified = CliRunner(env={"LOYALTY_MAIL_SECRET": secret.read_text().strip()}).invoke(
        cli, ["--project", str(project), "--database", f"sqlite:///{folder / 'demo.db'}", "coupons", "verify",
              sorted(codes)[0]])
    assert verified.exit_code == 0 and " is genuine: member " in verified.stdout, verified.output
    (folder / "outbox" / "stray.eml").write_text("left over")
    with freeze_time("2026-11-23 03:00:00"):
        again = CliRunner().invoke(cli, ["--project", str(project), "demo", "--members", "300", "--days", "6"])
    assert again.exit_code == 0, again.output
    assert not (folder / "outbox" / "stray.eml").exists()
    assert len(list((folder / "outbox").glob("*.eml"))) == len(sent)   # same seed, same story


def test_demo_without_a_terminal_prints_plain_progress_lines(tmp_path):
    """In a CI log or a pipe the demo says what it is doing and how far the simulation is, in plain
    lines on stderr: no bar redrawn with control characters."""
    from freezegun import freeze_time

    project = tmp_path / "p"
    CliRunner().invoke(cli, ["init", str(project)])
    with freeze_time("2026-11-23 03:00:00"):
        result = CliRunner().invoke(cli, ["--project", str(project), "demo", "--members", "30", "--days", "5"])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert lines[0].startswith("demo: seeding 30 members with their history up to ")
    assert "demo: simulating 5 days, 4 planner ticks a day ..." in lines
    progress = [line for line in lines if line.startswith("Simulating days: ")]
    assert [line.split(" (")[0] for line in progress] == [f"Simulating days: {p}%" for p in range(10, 101, 10)]
    assert progress[-1].startswith("Simulating days: 100% (20/20, ") and progress[-1].endswith(" s)")
    assert lines[-1].startswith("demo: writing the report to ")
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f]", result.stderr + result.stdout)


def test_python_dash_m_and_version():
    result = subprocess.run([sys.executable, "-m", "loyalty_mail", "--version"], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0 and result.stdout.startswith("loyalty-mail, version ")


@pytest.mark.parametrize("where", ["no/such/folder/out.html", "a-file/out.html"])
def test_an_out_file_that_cannot_be_written_is_a_user_error(tmp_path, monkeypatch, where):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("not a folder")
    result = CliRunner().invoke(cli, ["--project", str(REPO), "preview", "welcome", "--sample", "--out", where],
                                env={"LOYALTY_MAIL_SECRET": "test-secret-0123456789abcdef"})
    assert result.exit_code == 1, result.output
    assert f"Error: cannot write {where}: " in result.output
    assert "Internal error" not in result.output and "Traceback" not in result.output

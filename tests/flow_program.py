"""The flow-test program: a config with the four flows, the example templates, a `lapsed`
segment; driven through the CLI with the clock pinned by freezegun. Shared by the flow,
delivery, tracking and scale-out tests (fixtures `program` and `sqlite_program` in conftest)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import sqlalchemy as sa
from click.testing import CliRunner
from freezegun import freeze_time

from loyalty_mail.cli import cli
from loyalty_mail.models import sends_table

REPO = Path(__file__).resolve().parents[1]

SECRET = "flow-test-secret-0123456789"
FLOW_CONFIG = """\
program:
  name: Test Rewards
  currency: VND
  default_locale: vi
  locales: [vi, en]
  default_timezone: Asia/Ho_Chi_Minh
  points_per_currency_unit: 0.001
  sender_email: rewards@test.example
tiers:
  levels:
    - {name: member, threshold: 0, perks: [Birthday voucher]}
    - {name: silver, threshold: 1000, perks: [5% off]}
    - {name: gold, threshold: 5000, perks: [10% off, Free delivery]}
    - {name: platinum, threshold: 20000, perks: [15% off]}
tracking:
  base_url: https://t.test.example
  secret: ${LOYALTY_MAIL_SECRET:-}
sending:
  directory: outbox
  quiet_hours: {start: "21:00", end: "08:00"}
  frequency_cap: {max: 1, per: 1 day}
flows:
  - {name: welcome, trigger: welcome, template: welcome, priority: 100, lateness: 2 days,
     frequency_cap: false}
  - {name: milestones, trigger: milestone, template: milestone, thresholds: [1000, 5000],
     crossings: highest, anniversaries: true, priority: 60, lateness: 3 days}
  - {name: tier_upgrade, trigger: tier_upgrade, template: tier_upgrade, priority: 80, lateness: 3 days}
  - {name: winback, trigger: reengagement, template: reengagement, segment: lapsed, priority: 20,
     reentry: {max: 2, cooldown: 30 days}}
"""


class Program:
    """A flow-test program on one database; `run(...)` is the CLI, `at(...)` pins the clock."""

    def __init__(self, directory: Path, database_url: str):
        self.dir, self.url = directory, database_url

    def run(self, *args: str, at: str | None = None):
        runner = CliRunner(env={"LOYALTY_MAIL_SECRET": SECRET})
        argv = ["--project", str(self.dir), "--database", self.url, *args]
        if at is None:
            return runner.invoke(cli, argv, catch_exceptions=False)
        with freeze_time(at):
            return runner.invoke(cli, argv, catch_exceptions=False)

    def load(self, kind: str, rows: list[dict], at: str) -> None:
        path = self.dir / f"{kind}-{len(list(self.dir.glob('*.jsonl')))}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        result = self.run(kind, "import", str(path), at=at)
        assert result.exit_code == 0, result.output

    def dry(self, at: str, *flows: str) -> list[dict]:
        args = ["run", "--dry-run", "--format", "json"] + [a for f in flows for a in ("--flow", f)]
        result = self.run(*args, at=at)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    def variant_report(self, since: str, until: str, at: str) -> tuple[str, str]:
        """The A/B test report of a period as `report --by variant` prints it, and as the HTML page
        (written to r.html in the program's folder)."""
        table = self.run("report", "--since", since, "--until", until, "--by", "variant", at=at)
        page = self.run("report", "--since", since, "--until", until, "--format", "html",
                        "--out", str(self.dir / "r.html"), at=at)
        assert page.exit_code == 0
        return table.output, (self.dir / "r.html").read_text()

    def sends(self) -> list[tuple]:
        engine = sa.create_engine(self.url.replace("postgresql://", "postgresql+psycopg://"))
        with engine.connect() as conn:
            rows = conn.execute(sa.select(sends_table.c.flow, sends_table.c.occurrence_key, sends_table.c.state)
                                .order_by(sends_table.c.flow, sends_table.c.occurrence_key)).all()
        engine.dispose()
        return [tuple(r) for r in rows]


def make_program(tmp_path: Path, database_url: str) -> Program:
    """The flow-test program (config, example templates, a `lapsed` segment) on that database."""
    directory = tmp_path / "flows"
    directory.mkdir()
    (directory / "config.yaml").write_text(FLOW_CONFIG, encoding="utf-8")
    shutil.copytree(REPO / "templates", directory / "templates")
    (directory / "segments").mkdir()
    (directory / "segments" / "lapsed.yaml").write_text(
        "name: lapsed\ndescription: no purchase for 90 days\ndays_since_last_purchase: {gte: 90}\n")
    return Program(directory, database_url)


def member(member_id: str, zone: str = "Asia/Ho_Chi_Minh", **extra: object) -> dict:
    return {"member_id": member_id, "email": f"{member_id.lower()}@example.com", "first_name": "Lan",
            "locale": "vi", "timezone": zone, **extra}

"""`report` as a table in an 80-column terminal or a pipe: every heading and figure whole."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from loyalty_mail.cli import cli
from loyalty_mail.runtime import Runtime

from .conftest import FIXED_NOW
from .test_reports import build

PERFORMANCE = ["flow", "sent", "delivered", "opens", "clicks", "open", "click", "CTO", "unsub", "spam",
               "converted", "revenue", "rev/email"]
LIFT = ["sent_converted", "held_out", "held_out_converted", "sent_conversion_rate", "held_out_conversion_rate",
        "absolute_lift", "ci95_low", "ci95_high", "relative_lift", "note"]


@pytest.fixture
def history_url(project, tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'report.db'}"
    runtime = Runtime.load(project, database_url=url, clock=lambda: FIXED_NOW)
    build(runtime.engine())
    runtime.close()
    return url


@pytest.mark.parametrize("columns", [80, 60])
def test_report_table_fits_the_terminal_with_whole_headings(project, history_url, columns):
    result = CliRunner(env={"COLUMNS": str(columns)}).invoke(
        cli, ["--project", str(project), "--database", history_url, "report", "--since", "2026-11-01",
              "--until", "2026-11-23", "--by", "flow"], terminal_width=columns, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "…" not in out, out
    table_lines = [line for line in out.splitlines() if set(line) & set("┃│━")]   # titles soft-wrap
    assert max(len(line) for line in table_lines) <= columns, out
    words = set(re.findall(r"[\w/]+", out))
    assert set(PERFORMANCE + LIFT) <= words, sorted(set(PERFORMANCE + LIFT) - words)
    assert "750,000" in out and "welcome" in out and "winback" in out   # figures whole too


def test_report_table_in_a_wide_terminal_is_one_table(project, history_url):
    result = CliRunner(env={"COLUMNS": "200"}).invoke(
        cli, ["--project", str(project), "--database", history_url, "report", "--since", "2026-11-01",
              "--until", "2026-11-23"], terminal_width=200, catch_exceptions=False)
    header = next(line for line in result.stdout.splitlines() if line.startswith("flow"))
    assert re.findall(r"[\w/]+", header) == PERFORMANCE


def test_report_in_a_narrow_terminal_keeps_group_values_whole(project, history_url):
    """At 40 columns four group columns leave no room for a figure: they are printed once,
    numbered, and the figures refer to the number."""
    result = CliRunner(env={"COLUMNS": "40"}).invoke(
        cli, ["--project", str(project), "--database", history_url, "report", "--since", "2026-11-01",
              "--until", "2026-11-23", "--by", "flow,segment,tier,locale"], terminal_width=40,
        catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "…" not in out, out
    assert max(len(line) for line in out.splitlines() if set(line) & set("┃│━")) <= 40, out
    groups = [re.findall(r"[\w-]+", line) for line in out.splitlines() if re.match(r"^\d+ │ (welcome|winback)", line)]
    assert ["4", "winback", "lapsed", "member", "en"] in groups, out
    words = set(re.findall(r"[\w/]+", out))
    assert set(PERFORMANCE[1:] + LIFT) <= words, sorted(set(PERFORMANCE[1:] + LIFT) - words)
    assert "750,000" in out

"""CSV exports cannot smuggle spreadsheet formulas: formula-like text is quoted, values stay stored."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal

import sqlalchemy as sa

from loyalty_mail.csv_output import csv_writer, safe_cell
from loyalty_mail.models import sends_table

from .test_reports import build

FORMULAS = {
    "first_name": '=HYPERLINK("http://evil.example/?x","Click")',
    "last_name": "+SUM(1,2)",
    "city": "=cmd|' /C calc'!A0",
    "team": "@SUM(A1)",
    "nickname": "-2+3",
}


def test_text_that_a_spreadsheet_would_run_is_quoted_and_numbers_are_left_alone():
    assert [safe_cell(v) for v in ("=1+1", "+A1", "-A1", "@A1", "\t=1", "\r=1", "-2+3")] == [
        "'=1+1", "'+A1", "'-A1", "'@A1", "'\t=1", "'\r=1", "'-2+3"]
    assert [safe_cell(v) for v in (-5, Decimal("-1.50"), -0.25, "-40", "+1.5", "-1e5", "Lan", "", None)] == [
        -5, Decimal("-1.50"), -0.25, "-40", "+1.5", "-1e5", "Lan", "", None]
    buffer = io.StringIO()
    csv_writer(buffer, lineterminator="\n").writerows([["=1", -3, Decimal("-2.5")]])
    assert buffer.getvalue() == "'=1,-3,-2.5\n"


def test_segment_members_csv_quotes_formula_cells_and_keeps_the_stored_values(run, project, tmp_path):
    source = tmp_path / "members.csv"
    with source.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=["member_id", "email", "points", *FORMULAS])
        writer.writeheader()
        writer.writerow({"member_id": "M1", "email": "m1@example.com", "points": "10", **FORMULAS})
    assert run("members", "import", str(source)).exit_code == 0
    (project / "segments").mkdir()
    (project / "segments" / "everyone.yaml").write_text("points: {gte: 0}\n", encoding="utf-8")

    result = run("segments", "members", "everyone", "--format", "csv")

    assert result.exit_code == 0, result.output
    [row] = list(csv.DictReader(io.StringIO(result.stdout)))
    assert row["first_name"] == "'" + FORMULAS["first_name"]
    assert row["last_name"] == "'+SUM(1,2)"
    assert row["points"] == "10"
    stored = json.loads(run("members", "show", "M1", "--format", "json").stdout)
    assert stored["first_name"] == FORMULAS["first_name"] and stored["last_name"] == "+SUM(1,2)"
    assert stored["attributes"] == {k: FORMULAS[k] for k in ("city", "team", "nickname")}


def test_report_csv_quotes_formula_cells(runtime, run):
    build(runtime.engine())
    with runtime.engine().begin() as connection:
        connection.execute(sends_table.update().where(sends_table.c.segment == "lapsed")
                           .values(segment="=cmd|' /C calc'!A0"))

    result = run("report", "--since", "2026-11-01", "--until", "2026-11-23", "--by", "segment",
                 "--format", "csv")

    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert sorted(r["segment"] for r in rows) == ["", "'=cmd|' /C calc'!A0"]
    assert {r["sent"] for r in rows} == {"3"}
    with runtime.engine().connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).where(
            sends_table.c.segment == "=cmd|' /C calc'!A0")).scalar_one() == 5


def test_rejects_file_quotes_formula_cells_and_keeps_plain_numbers(run, tmp_path):
    source = tmp_path / "members.csv"
    source.write_text('member_id,email,points\nM1,"=HYPERLINK(""http://evil.example"")",5\n'
                      "M2,m2@example.com,-40\nM3,m3@example.com,7\n", encoding="utf-8")
    rejects = tmp_path / "rejects.csv"

    result = run("members", "import", str(source), "--skip-invalid", "--rejects", str(rejects))

    assert result.exit_code == 0, result.output
    with rejects.open(encoding="utf-8", newline="") as handle:
        written = list(csv.DictReader(handle))
    assert [(r["row"], r["email"], r["points"]) for r in written] == [
        ("2", "'=HYPERLINK(\"http://evil.example\")", "5"), ("3", "m2@example.com", "-40")]

"""Imports against hostile files: unstorable text, huge cells and lines, wide headers, files that
change mid-import, and database errors that must not leak members' data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from loyalty_mail.errors import InputFileError
from loyalty_mail.importing import InputFile, import_file
from loyalty_mail.importing.readers import MAX_CELL_CHARS, MAX_COLUMNS, MAX_LINE_BYTES
from loyalty_mail.models import events_table, members_table

from .conftest import FIXED_NOW

NUL = "contains a NUL character (\\u0000), which cannot be stored; remove it"
# What each import is given: a file whose row 3 (CSV; line 2 in JSON Lines) has a NUL character.
NUL_FILES = {
    ("members", "csv"): ("member_id,email,first_name\nM1,m1@example.com,Lan\nM2,m2@example.com,Bad\x00Name\n",
                         3, "first_name"),
    ("members", "jsonl"): ('{"member_id": "M1", "email": "m1@example.com"}\n'
                           '{"member_id": "M2", "email": "m2@example.com", "first_name": "Bad\\u0000Name"}\n',
                           2, "first_name"),
    ("events", "csv"): ("member_id,type,occurred_at,note\nM0,visit,2026-11-01T10:00:00,ok\n"
                        "M0,visit,2026-11-02T10:00:00,bad\x00\n", 3, "note"),
    ("events", "jsonl"): ('{"member_id": "M0", "type": "visit", "occurred_at": "2026-11-01T10:00:00"}\n'
                          '{"member_id": "M0", "type": "visit", "occurred_at": "2026-11-02T10:00:00", '
                          '"properties": {"note": ["x\\u0000"]}}\n', 2, "properties"),
}


def count(runtime, table: sa.Table) -> int:
    with runtime.engine().connect() as connection:
        return connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def add_member(run, tmp_path: Path) -> None:
    (tmp_path / "m0.csv").write_text("member_id,email\nM0,m0@example.com\n", encoding="utf-8")
    assert run("members", "import", str(tmp_path / "m0.csv")).exit_code == 0


@pytest.mark.parametrize(("kind", "fmt"), list(NUL_FILES))
def test_a_nul_character_is_a_row_error_on_every_database(run, runtime, tmp_path, kind, fmt):
    add_member(run, tmp_path)
    text, row, column = NUL_FILES[kind, fmt]
    path = tmp_path / f"input.{fmt}"
    path.write_text(text, encoding="utf-8")
    table = members_table if kind == "members" else events_table
    before = count(runtime, table)

    result = run(kind, "import", str(path))

    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines()[0] == f"Error: {path}: row {row}: {column}: {NUL}"
    assert count(runtime, table) == before

    skipped = run(kind, "import", str(path), "--skip-invalid", "--rejects", str(tmp_path / "rejects.csv"))

    assert skipped.exit_code == 0, skipped.output
    assert "1 rejected" in skipped.stdout
    assert count(runtime, table) == before + 1
    with (tmp_path / "rejects.csv").open(encoding="utf-8", newline="") as handle:
        [written] = list(csv.DictReader(handle))
    assert (written["row"], written["error"]) == (str(row), f"{column}: {NUL}")


def test_an_unpaired_surrogate_and_deep_nesting_are_row_errors(run, runtime, tmp_path):
    path = tmp_path / "members.jsonl"
    path.write_text('{"member_id": "M1", "email": "m1@example.com", "city": "\\ud800"}\n'
                    '{"member_id": "M2", "email": "m2@example.com", "tags": ' + "[" * 100_000 + "}\n"
                    '{"member_id": "M3", "email": "m3@example.com"}\n', encoding="utf-8")

    result = run("members", "import", str(path))

    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines()[:2] == [
        f"Error: {path}: row 1: city: contains an unpaired UTF-16 surrogate (\\ud800-\\udfff), which is not text",
        f"{path}: row 2: invalid JSON (nested too deeply)"]
    assert count(runtime, members_table) == 0


def test_database_errors_never_show_the_statement_parameters(run, runtime, tmp_path):
    (tmp_path / "m.csv").write_text("member_id,email\nSECRET-7,lan@example.com\n", encoding="utf-8")
    assert run("members", "import", str(tmp_path / "m.csv")).exit_code == 0
    with runtime.engine().begin() as connection:
        connection.execute(sa.text("ALTER TABLE members RENAME COLUMN email TO mail"))
    try:
        result = run("members", "show", "SECRET-7")
    finally:  # the PostgreSQL database is shared by the tests that follow
        with runtime.engine().begin() as connection:
            connection.execute(sa.text("ALTER TABLE members RENAME COLUMN mail TO email"))

    assert result.exit_code == 2
    assert result.stderr.startswith("Internal error: ")
    assert "SECRET-7" not in result.output and "lan@example.com" not in result.output
    assert "[SQL" not in result.output and "parameters" not in result.output


@pytest.mark.parametrize("change", ["truncated", "deleted"])
@pytest.mark.parametrize("kind", ["members", "events"])
def test_a_file_that_changes_mid_import_imports_nothing_and_leaves_no_rejects(runtime, run, tmp_path, kind, change):
    add_member(run, tmp_path)
    path = tmp_path / "input.csv"
    if kind == "members":
        path.write_text("member_id,email\n" + "".join(f"M{n},m{n}@example.com\n" for n in range(1, 10))
                        + "M10,not-an-email\n", encoding="utf-8")
    else:
        path.write_text("member_id,type,occurred_at\n" + "M0,visit,2026-11-01T10:00:00\n" * 9
                        + "M0,visit,yesterday\n", encoding="utf-8")
    size = path.stat().st_size
    seen = 0

    def after_reading(n: int) -> None:  # the first pass has read the whole file: now it changes
        nonlocal seen
        seen += n
        if seen == size:
            if change == "truncated":
                with path.open("r+b") as handle:
                    handle.truncate(size // 2)
            else:
                path.unlink()

    table = members_table if kind == "members" else events_table
    before = count(runtime, table)
    rejects = tmp_path / "rejects.csv"

    with pytest.raises(InputFileError) as raised:
        import_file(runtime.engine(), runtime.settings, kind, InputFile.open(path), now=FIXED_NOW,
                    skip_invalid=True, rejects_path=rejects, on_bytes=after_reading)

    assert str(raised.value).startswith(f"{path}: ")
    assert "nothing was imported" in str(raised.value)
    assert count(runtime, table) == before
    assert sorted(p.name for p in tmp_path.iterdir() if "rejects" in p.name) == []


def test_a_rejects_file_that_cannot_be_written_imports_nothing(run, runtime, tmp_path):
    path = tmp_path / "members.csv"
    path.write_text("member_id,email\nM1,m1@example.com\nM2,bad\n", encoding="utf-8")
    rejects = tmp_path / "missing-folder" / "rejects.csv"

    result = run("members", "import", str(path), "--skip-invalid", "--rejects", str(rejects))

    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"Error: cannot write the rejects file {rejects} (No such file or directory); "
                                    "nothing was imported.")
    assert count(runtime, members_table) == 0


def read_all(path: Path) -> tuple[str, int]:
    """The error reading `path` gives, and how many bytes were read before it."""
    read = 0

    def add(n: int) -> None:
        nonlocal read
        read += n

    with pytest.raises(InputFileError) as raised:
        for _ in InputFile.open(path).rows(add):
            pass
    return str(raised.value), read


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_line_over_the_limit_stops_the_import_before_it_is_read_whole(tmp_path, fmt):
    path = tmp_path / f"members.{fmt}"
    big = "x" * (2 << 20)
    if fmt == "csv":
        path.write_text(f"member_id,email,note\nM1,m1@example.com,ok\nM2,m2@example.com,{big}\n", encoding="utf-8")
    else:
        path.write_text(f'{{"member_id": "M1"}}\n{{"member_id": "M2", "note": "{big}"}}\n', encoding="utf-8")

    message, read = read_all(path)

    line = 3 if fmt == "csv" else 2
    assert message == (f"{path}: line {line}: longer than 1,048,576 bytes, the most a line may hold; "
                       "split the file's long values or leave them out")
    assert read <= MAX_LINE_BYTES + (256 << 10)  # about a line, never the whole 2 MB cell


def test_a_csv_cell_over_the_limit_across_short_lines_stops_the_import(tmp_path):
    path = tmp_path / "members.csv"
    cell = "\n".join(["y" * 1000] * 2000)  # 2 MB in one quoted cell of 1 KB lines
    path.write_text(f'member_id,email,note\nM1,m1@example.com,"{cell}"\n', encoding="utf-8")

    message, read = read_all(path)

    assert message == f"{path}: row 2: a cell is longer than 131,072 characters, the most a cell may hold"
    assert read <= MAX_CELL_CHARS + (256 << 10)


def test_a_json_value_over_the_cell_limit_is_a_row_error(run, runtime, tmp_path):
    path = tmp_path / "members.jsonl"
    long_city = "z" * (MAX_CELL_CHARS + 1)
    path.write_text(json.dumps({"member_id": "M1", "email": "m1@example.com", "city": long_city}) + "\n"
                    + json.dumps({"member_id": "M2", "email": "m2@example.com", "city": "Huế"}) + "\n",
                    encoding="utf-8")

    result = run("members", "import", str(path))

    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines()[0] == (
        f"Error: {path}: row 1: city: longer than 131,072 characters, the most a value may hold")
    assert count(runtime, members_table) == 0


def test_a_header_wider_than_the_limit_is_refused(run, runtime, tmp_path):
    columns = [f"c{i}" for i in range(1000)]
    csv_path = tmp_path / "members.csv"
    csv_path.write_text(",".join(["member_id", "email", *columns]) + "\n"
                        + ",".join(["M1", "m1@example.com", *"1" * 1000]) + "\n", encoding="utf-8")
    jsonl_path = tmp_path / "members.jsonl"
    jsonl_path.write_text(json.dumps({"member_id": "M1", "email": "m1@example.com", **dict.fromkeys(columns, 1)})
                          + "\n", encoding="utf-8")

    from_csv = run("members", "import", str(csv_path))
    from_jsonl = run("members", "import", str(jsonl_path))

    assert from_csv.exit_code == 1, from_csv.output
    assert from_csv.stderr == (f"Error: {csv_path}: row 1: the header has 1,002 columns; at most {MAX_COLUMNS} "
                               "are allowed\n")
    assert from_jsonl.exit_code == 1, from_jsonl.output
    assert from_jsonl.stderr.splitlines()[0] == (
        f"Error: {jsonl_path}: row 1: has 1,002 keys; at most {MAX_COLUMNS} are allowed")
    assert count(runtime, members_table) == 0


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_amounts_are_stored_to_the_cent(run, runtime, tmp_path, fmt):
    """Money goes to the database as a decimal, never through a float: 99,999,999,999,999.99 is
    stored as written (on SQLite, whose NUMERIC is a float, amounts this large are out of reach)."""
    sqlite = runtime.engine().dialect.name == "sqlite"
    amount, total = ("12345678901.23", "24691357802.46") if sqlite else ("99999999999999.99", "199999999999999.98")
    members, events = tmp_path / f"members.{fmt}", tmp_path / f"events.{fmt}"
    if fmt == "csv":
        members.write_text(f"member_id,email,total_spend\nM1,m1@example.com,{amount}\n")
        events.write_text(f"event_id,member_id,type,amount,points,occurred_at\nE1,M1,purchase,{amount},1,"
                          "2026-11-01T00:00:00Z\n")
    else:
        members.write_text(json.dumps({"member_id": "M1", "email": "m1@example.com", "total_spend": amount}) + "\n")
        events.write_text(json.dumps({"event_id": "E1", "member_id": "M1", "type": "purchase", "amount": amount,
                                      "points": 1, "occurred_at": "2026-11-01T00:00:00Z"}) + "\n")
    assert run("members", "import", str(members)).exit_code == 0
    assert run("events", "import", str(events)).exit_code == 0, run
    with runtime.engine().connect() as connection:
        spend = connection.execute(sa.select(members_table.c.total_spend)).scalar_one()
        stored = connection.execute(sa.select(events_table.c.amount)).scalar_one()
    assert (str(stored), str(spend)) == (amount, total)


@pytest.mark.parametrize("fmt, text, row", [
    ("csv", "member_id,email,joined_at\nM1,m1@example.com,2026-01-01\nM2,m2@example.com,9999-12-31T23:59:59-14:00\n",
     3),
    ("csv", "member_id,email,joined_at\nM1,m1@example.com,1899-12-31T23:00:00Z\n", 2),
    ("jsonl", '{"member_id": "M1", "email": "m1@example.com", "last_purchase_at": "0001-01-01T00:00:00+14:00"}\n', 1),
])
def test_member_times_outside_the_years_are_row_errors(run, runtime, tmp_path, fmt, text, row):
    path = tmp_path / f"members.{fmt}"
    path.write_text(text)
    result = run("members", "import", str(path))
    assert result.exit_code == 1, result.output
    assert f"row {row}: " in result.stderr and "is outside the years 1900 to 2200" in result.stderr, result.stderr
    assert count(runtime, members_table) == 0


def test_an_event_past_the_years_is_a_row_error_with_expiry(run, runtime, tmp_path):
    """An event in year 9999 would expire past year 9999: a row error, not an internal error."""
    (runtime.project_dir / "config.yaml").write_text(
        (runtime.project_dir / "config.yaml").read_text().replace(
            "  points_per_currency_unit: 0.001\n", "  points_per_currency_unit: 0.001\n  points:\n"
                                                 "    expiry: {after: 100 years}\n"))
    add_member(run, tmp_path)
    path = tmp_path / "events.csv"
    path.write_text("member_id,type,points,occurred_at\nM0,points_earned,5,2200-06-01T00:00:00Z\n"
                    "M0,points_earned,5,9999-06-01T00:00:00Z\n")
    result = run("events", "import", str(path))
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines()[0] == (
        f"Error: {path}: row 3: occurred_at: '9999-06-01T00:00:00Z' is outside the years 1900 to 2200")
    assert count(runtime, events_table) == 0

"""The column-wise members import against the row-by-row one, on the same awkward file.

A members CSV is validated a column at a time (importing/columns.py), in this process or in
worker processes; JSON Lines and the rows of `import_rows` go row by row. Both must store the
same members and reject the same rows with the same words, whatever the cells hold.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from loyalty_mail import db
from loyalty_mail.importing import InputFile, import_file, import_rows, partitioned, readers
from loyalty_mail.importing.batch import indexes_rebuilt
from loyalty_mail.models import members_table, tier_changes_table
from loyalty_mail.runtime import Runtime

from .conftest import Cli

# For each column, cells a real export could hold; the last ones of some columns are bad.
CELLS: dict[str, list[str]] = {
    "email": ["{id}@example.com", " {id}@Example.COM ", "{id}.x+tag@example.co.uk", "{id}@", ""],
    "first_name": ["Lan", "", "   ", " Ôn  ", 'O"Neil', "Trần\tThị", "x" * 101],
    "last_name": ["Nguyễn", "", "Smith-Jones"],
    "locale": ["vi", "en", "EN", "vi_VN", "en-US", "", " vi ", "xx_QQ"],
    "timezone": ["Asia/Ho_Chi_Minh", "America/New_York", "", " Asia/Singapore", "UTC", "Mars/Base"],
    "joined_at": ["2025-06-01T10:00:00", "2025-03-09T02:30:00", "2025-11-02T01:30:00", "2025-06-01",
                  "2025-06-01T10:00:00+07:00", "2025-06-01T10:00:00Z", "2025-06-01 10:00:00.123456",
                  "", " 2025-06-01T08:00:00", "2025-02-30"],
    "birthday": ["1990-02-28", "", "19900228", " 1985-07-04", "1990-13-01"],
    "points": ["12", " 7 ", "5.0", "1_000", "", "0", "2147483647", "-3", "abc", "3000000000"],
    "total_spend": ["12.345", "1500000", " 3.10 ", "", "1e3", "0.005", "NaN", "-1", "1e17"],
    "purchase_count": ["3", "", "0"],
    "last_purchase_at": ["2026-10-01T12:00:00+07:00", "2026-10-01T12:00:00", "", "2026-10-01T12:00:00-04:00"],
    "nps_score": [str(n) for n in range(11)] + ["", "11"],
    "subscribed": ["true", "Yes", "0", "", "F", "maybe"],
    "city": ["Hà Nội", "", ' "quoted" ', "tab\there", "\\back\\slash", "emoji 🎉"],
    "segment_hint": ["vip", "", "line\nbreak"],
}
HEADER = ["member_id", *CELLS]


def write_awkward_csv(path: Path, rows: int, seed: int = 7) -> Path:
    """Mostly good rows; one cell in ~30 picks a bad value; a few member_ids repeat."""
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(HEADER)
        for n in range(1, rows + 1):
            member_id = f"M{rng.randrange(n - 5, n) if n > 5 and rng.random() < 0.01 else n:05d}"
            record = [f" {member_id} " if rng.random() < 0.05 else member_id]
            for column, cells in CELLS.items():
                cell = cells[0] if rng.random() < 0.5 else rng.choice(cells)
                record.append(cell.format(id=member_id.lower()))
            writer.writerow(record)
        writer.writerow(["M-RAGGED", "ragged@example.com"])  # a row with too few fields
    return path


def snapshot(engine: sa.Engine) -> dict[str, dict[str, Any]]:
    """Every member by member_id, without the database id."""
    with engine.connect() as connection:
        rows = connection.execute(sa.select(members_table)).mappings().all()
    return {row["member_id"]: {k: v for k, v in row.items() if k != "id"} for row in rows}


def clear(engine: sa.Engine) -> None:
    with engine.begin() as connection:
        connection.execute(tier_changes_table.delete())
        connection.execute(members_table.delete())


def import_by_route(runtime: Runtime, path: Path, route: str) -> tuple[int, list[tuple[int, str]]]:
    """Import `path` the way `route` names; return (rows read, rejected rows with reasons)."""
    engine, settings, now = runtime.engine(), runtime.settings, runtime.now()
    if route == "rows":  # row by row, as JSON Lines and generated rows go
        summary, rejects = import_rows(engine, settings, "members", InputFile.open(path).rows(),
                                       source=str(path), now=now, skip_invalid=True)
        return summary.rows_read, [(e.row, e.reason) for e in rejects.errors()]
    workers = {"columns": 0, "workers": 2}[route]
    progress: list[int] = []
    summary = import_file(engine, settings, "members", InputFile.open(path), now=now, skip_invalid=True,
                          workers=workers, rejects_path=path.with_suffix(".rejects.csv"),
                          on_bytes=progress.append)
    assert sum(progress) == path.stat().st_size  # the progress bar reaches the end
    if summary.rejects_file is None:
        return summary.rows_read, []
    with summary.rejects_file.open(encoding="utf-8") as handle:
        return summary.rows_read, [(int(r["row"]), r["error"]) for r in csv.DictReader(handle)]


@pytest.mark.parametrize("route", ["columns", "workers"])
def test_column_wise_import_stores_and_rejects_exactly_what_row_by_row_does(runtime, tmp_path, monkeypatch, route):
    monkeypatch.setattr(readers, "BATCH_RECORDS", 97)  # many batches, and a short last one
    monkeypatch.setattr(partitioned, "MIN_BYTES", 0)  # workers for any file (on SQLite)
    path = write_awkward_csv(tmp_path / "awkward.csv", rows=1500)
    engine = runtime.engine()
    assert partitioned.worth_it(engine, InputFile.open(path), 2) == (engine.dialect.name == "sqlite")

    expected_read, expected_rejects = import_by_route(runtime, path, "rows")
    expected = snapshot(runtime.engine())
    clear(runtime.engine())
    read, rejects = import_by_route(runtime, path, route)

    assert read == expected_read == 1501
    assert rejects == expected_rejects
    assert 50 < len(rejects) < 1000  # the file did exercise both paths
    assert any("has 2 fields" in reason for _, reason in rejects)
    assert snapshot(runtime.engine()) == expected
    assert len(expected) > 500


def test_a_clean_column_of_each_kind_takes_the_fast_path(runtime, tmp_path):
    """The fast parsers give the cell parsers' values (checked above); here, that they are used:
    on a file with no odd cell, no column falls back to parsing cell by cell."""
    from loyalty_mail.importing import columns

    calls: list[str] = []
    original = columns.cell_by_cell

    def counting(cells, parse):  # type: ignore[no-untyped-def]
        calls.append(getattr(parse, "__name__", getattr(getattr(parse, "func", None), "__name__", "?")))
        return original(cells, parse)

    path = tmp_path / "clean.csv"
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(HEADER)
        for n in range(1, 201):
            writer.writerow([f"M{n:05d}", *(cells[0].format(id=f"m{n}") for cells in CELLS.values())])
    columns.cell_by_cell = counting  # type: ignore[assignment]
    try:
        read, rejects = import_by_route(runtime, path, "columns")
    finally:
        columns.cell_by_cell = original  # type: ignore[assignment]
    assert (read, rejects, calls) == (200, [], [])


def test_workers_report_file_problems_and_bad_rows_as_one_process_does(run, runtime, tmp_path, monkeypatch):
    """What a worker finds (a column that cannot be imported, text that is not UTF-8, bad rows)
    reaches the user as the same one-line errors, and nothing is imported."""
    monkeypatch.setattr(partitioned, "MIN_BYTES", 0)
    tier = tmp_path / "tier.csv"
    tier.write_text("member_id,email,tier\n" + "".join(f"X{n},x{n}@example.com,gold\n" for n in range(300)))
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes(b"member_id,email,city\n" + b"".join(b"L%d,l%d@example.com,Hu\xe9\n" % (n, n) for n in range(300)))
    bad = write_awkward_csv(tmp_path / "awkward.csv", rows=400)
    for path, message in [(tier, f"{tier}: row 1: column 'tier' cannot be imported"), (latin1, "not UTF-8 text"),
                          (bad, "bad row(s); nothing was imported")]:
        result = run("members", "import", str(path), "--workers", "2")
        assert result.exit_code == 1, (path, result.output)
        assert message in result.stderr, (path, result.stderr)
        assert "Traceback" not in result.output
    assert snapshot(runtime.engine()) == {}
    good = tmp_path / "good.csv"
    good.write_text("member_id,email\n" + "".join(f"G{n},g{n}@example.com\n" for n in range(700)))
    result = run("members", "import", str(good), "--workers", "3")
    assert result.exit_code == 0, result.output
    assert "700 rows read, 700 inserted" in result.stdout
    assert len(snapshot(runtime.engine())) == 700


@pytest.fixture
def sqlite_cli(project: Path, tmp_path: Path) -> tuple[Cli, sa.Engine]:
    """The CLI on a SQLite database (workers and their scratch files are SQLite's alone)."""
    url = f"sqlite:///{tmp_path / 'workers.db'}"
    engine = db.create_db_engine(url)
    db.ensure_schema(engine)
    return Cli(project, url), engine


def test_scratch_space_problems_are_clear_errors_and_import_nothing(sqlite_cli, tmp_path, monkeypatch):
    run, engine = sqlite_cli
    monkeypatch.setattr(partitioned, "MIN_BYTES", 0)
    good = tmp_path / "good.csv"
    good.write_text("member_id,email\n" + "".join(f"G{n},g{n}@example.com\n" for n in range(300)))

    def full(*args, **kwargs):  # what a worker meets when the scratch folder's disk is full
        raise partitioned.sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(partitioned.sqlite3, "connect", full)  # workers are forked: they inherit it
    result = run("members", "import", str(good), "--workers", "2")
    assert result.exit_code == 1, result.output
    assert "scratch files in" in result.stderr and "database or disk is full" in result.stderr
    assert "--workers 0" in result.stderr and "Traceback" not in result.output
    monkeypatch.undo()

    monkeypatch.setattr(partitioned, "MIN_BYTES", 0)
    monkeypatch.setattr(partitioned.tempfile, "tempdir", str(tmp_path / "no" / "such" / "folder"))
    result = run("members", "import", str(good), "--workers", "2")
    assert result.exit_code == 1, result.output
    assert "could not be written" in result.stderr and "Traceback" not in result.output
    assert snapshot(engine) == {}

    monkeypatch.undo()
    monkeypatch.setattr(partitioned, "MIN_BYTES", 0)
    result = run("members", "import", str(good), "--workers", "2")
    assert result.exit_code == 0, result.output
    assert len(snapshot(engine)) == 300
    engine.dispose()


def test_a_bulk_import_rebuilds_the_members_indexes_as_they_were(sqlite_cli, tmp_path):
    """10,000+ rows and a quarter of the table or more: the indexes are dropped and built again
    in the import's transaction; after it, and after a failure meanwhile, they are all there."""
    run, engine = sqlite_cli

    def indexes() -> list[tuple[str, str]]:
        with engine.connect() as connection:
            return connection.exec_driver_sql(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'members' "
                "ORDER BY name").all()

    before = indexes()
    assert len([sql for _, sql in before if sql]) >= 6
    path = tmp_path / "bulk.csv"
    path.write_text("member_id,email,joined_at\n" + "".join(
        f"B{n},b{n}@example.com,2025-{n % 12 + 1:02d}-{n % 28 + 1:02d}T08:00:00\n" for n in range(12_000)))
    result = run("members", "import", str(path), "--workers", "0")
    assert result.exit_code == 0, result.output
    assert indexes() == before
    with engine.connect() as connection:
        plan = " ".join(str(row) for row in connection.exec_driver_sql(
            "EXPLAIN QUERY PLAN SELECT id FROM members WHERE email = 'b7@example.com'"))
        assert "ix_members_email" in plan
        assert connection.exec_driver_sql("SELECT count(*) FROM members").scalar_one() == 12_000

    # Something failing while the indexes are dropped: the rollback brings them back.
    with pytest.raises(RuntimeError, match="mid-import"):
        with db.writer(engine).begin() as connection:
            with indexes_rebuilt(connection, members_table, 50_000):
                assert connection.exec_driver_sql(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'members' "
                    "AND sql IS NOT NULL").scalar_one() == 0
                raise RuntimeError("mid-import")
    assert indexes() == before
    engine.dispose()


def test_a_worker_that_dies_is_a_clear_error_and_leaves_no_scratch_files(tmp_path, monkeypatch):
    """A worker killed from outside (the OOM killer, say) sends no word: the importing process
    notices its exit code, says so in a line, and removes the scratch folder."""
    import os
    import tempfile

    from loyalty_mail.errors import LoyaltyMailError
    from loyalty_mail.importing.members import STAGING

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    path = tmp_path / "m.csv"
    path.write_text("member_id,email\n" + "".join(f"D{n},d{n}@example.com\n" for n in range(50)))

    def dies() -> partitioned.Stager:
        os._exit(9)

    with pytest.raises(LoyaltyMailError, match=r"stopped unexpectedly \(exit code 9\).*--workers 0"):
        with partitioned.staged_by_workers(InputFile.open(path), dies, STAGING, 2):
            pass
    assert [p.name for p in tmp_path.iterdir()] == ["m.csv"]

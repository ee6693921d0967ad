"""Member import: all-or-nothing validation, --skip-invalid, upsert rules, tiers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import sqlalchemy as sa
from freezegun import freeze_time

from loyalty_mail.models import members_table, tier_changes_table
from loyalty_mail.runtime import Runtime

HEADER = ["member_id", "email", "first_name", "last_name", "locale", "timezone", "joined_at",
          "birthday", "points", "total_spend", "purchase_count", "last_purchase_at", "nps_score",
          "subscribed", "city"]

# Row numbers count the header as row 1, so data row k (1-based) is file row k + 1.
BAD_ROWS = {
    101: ({"email": "not-an-email"}, "email: 'not-an-email' is not a valid email address"),
    202: ({"joined_at": "2025-02-30"}, "joined_at: '2025-02-30' is not a valid ISO 8601 date or time "
                                       "(e.g. 2026-03-01T09:30:00+07:00)"),
    303: ({"timezone": "Asia/Atlantis"}, "timezone: unknown time zone 'Asia/Atlantis' "
                                         "(an IANA name such as Asia/Ho_Chi_Minh)"),
    404: ({"points": "-40"}, "points: -40 is negative"),
    505: ({"member_id": "M00010"}, "member_id: 'M00010' already appears in row 11"),
    606: ({"email": ""}, "email: is empty"),
    707: ({"locale": "xx_QQ"}, "locale: unknown locale 'xx_QQ' (e.g. en, vi, en_US, vi_VN)"),
}


def good_row(n: int) -> dict[str, str]:
    return {
        "member_id": f"M{n:05d}", "email": f"member{n}@example.com", "first_name": "Lan",
        "last_name": "Nguyễn", "locale": "vi" if n % 3 else "en",
        "timezone": "Asia/Ho_Chi_Minh" if n % 2 else "America/New_York",
        "joined_at": "2025-06-01T10:00:00", "birthday": "1990-02-28", "points": str(n * 30),
        "total_spend": "1500000", "purchase_count": "3", "last_purchase_at": "2026-10-01T12:00:00+07:00",
        "nps_score": str(n % 11), "subscribed": "true", "city": "Hà Nội",
    }


def write_members_csv(path: Path, rows: int = 1000, bad: bool = True) -> Path:
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=HEADER)
        writer.writeheader()
        for n in range(1, rows + 1):
            row = good_row(n)
            if bad and n + 1 in BAD_ROWS:
                row.update(BAD_ROWS[n + 1][0])
            writer.writerow(row)
    return path


def count_members(runtime: Runtime) -> int:
    with runtime.engine().connect() as connection:
        return connection.execute(sa.select(sa.func.count()).select_from(members_table)).scalar_one()


def test_bad_rows_fail_the_whole_import_and_name_each_row(run, runtime, tmp_path):
    # Something already in the database must survive a failed import untouched.
    (tmp_path / "first.csv").write_text("member_id,email,points\nM00002,keep@example.com,7\n")
    assert run("members", "import", str(tmp_path / "first.csv")).exit_code == 0

    path = write_members_csv(tmp_path / "members.csv")
    result = run("members", "import", str(path))

    assert result.exit_code == 1
    expected = [f"Error: {path}: row {row}: {message}" if i == 0 else f"{path}: row {row}: {message}"
                for i, (row, (_, message)) in enumerate(sorted(BAD_ROWS.items()))]
    lines = result.stderr.splitlines()
    assert lines[:len(BAD_ROWS)] == expected
    assert lines[len(BAD_ROWS)].startswith("7 bad row(s); nothing was imported.")
    assert "Traceback" not in result.output
    assert count_members(runtime) == 1
    with runtime.engine().connect() as connection:
        kept = connection.execute(sa.select(members_table.c.email, members_table.c.points)).one()
    assert tuple(kept) == ("keep@example.com", 7)


def test_skip_invalid_imports_good_rows_and_writes_exactly_the_bad_ones(run, runtime, tmp_path):
    path = write_members_csv(tmp_path / "members.csv")
    rejects = tmp_path / "rejects.csv"
    result = run("members", "import", str(path), "--skip-invalid", "--rejects", str(rejects))

    assert result.exit_code == 0, result.output
    assert "1,000 rows read, 993 inserted, 0 updated, 7 rejected" in result.stdout
    assert count_members(runtime) == 993
    with rejects.open(encoding="utf-8") as handle:
        written = list(csv.DictReader(handle))
    assert [(int(r["row"]), r["error"]) for r in written] == [
        (row, message) for row, (_, message) in sorted(BAD_ROWS.items())
    ]
    # The rejects carry the original columns, so they can be fixed and re-imported.
    assert written[0]["email"] == "not-an-email" and written[0]["member_id"] == "M00100"


def test_import_stores_typed_values_in_utc_with_tier_and_attributes(runtime, run, tmp_path):
    path = write_members_csv(tmp_path / "members.csv", rows=40, bad=False)
    assert run("members", "import", str(path)).exit_code == 0
    with runtime.engine().connect() as connection:
        row = connection.execute(
            sa.select(members_table).where(members_table.c.member_id == "M00034")).mappings().one()
    assert row["joined_at"].isoformat() == "2025-06-01T03:00:00+00:00"  # 10:00 in Ho Chi Minh City
    assert row["last_purchase_at"].isoformat() == "2026-10-01T05:00:00+00:00"
    assert row["points"] == 1020 and row["tier"] == "silver"
    assert row["attributes"] == {"city": "Hà Nội"}
    assert row["birthday"].isoformat() == "1990-02-28"
    assert row["nps_score"] == 1 and row["locale"] == "vi" and row["subscribed"] is True


def test_upsert_keeps_blank_columns_merges_attributes_and_records_tier_changes(runtime, run, tmp_path):
    first = tmp_path / "first.csv"
    first.write_text("member_id,email,first_name,points,city,segment_hint\n"
                     "A1,a1@example.com,An,900,Huế,vip\nA2,a2@example.com,Bảo,6000,Huế,\n",
                     encoding="utf-8")
    assert run("members", "import", str(first)).exit_code == 0
    second = tmp_path / "second.jsonl"
    second.write_text(
        json.dumps({"member_id": "A1", "email": "new@example.com", "points": 5200, "city": "Đà Nẵng"}) + "\n"
        + json.dumps({"member_id": "A2", "email": "a2@example.com", "first_name": None, "points": 100}) + "\n",
        encoding="utf-8")
    result = run("members", "import", str(second))
    assert result.exit_code == 0, result.output
    assert "0 inserted, 2 updated" in result.stdout and "2 tier changes" in result.stdout

    with runtime.engine().connect() as connection:
        rows = {r["member_id"]: r for r in connection.execute(
            sa.select(members_table).order_by(members_table.c.member_id)).mappings()}
        history = connection.execute(
            sa.select(tier_changes_table.c.member_ref, tier_changes_table.c.from_tier,
                      tier_changes_table.c.to_tier, tier_changes_table.c.reason)
            .order_by(tier_changes_table.c.member_ref)).all()
    assert rows["A1"]["email"] == "new@example.com" and rows["A1"]["first_name"] == "An"
    assert rows["A1"]["attributes"] == {"city": "Đà Nẵng", "segment_hint": "vip"}
    assert rows["A1"]["tier"] == "gold" and rows["A2"]["tier"] == "member"
    assert rows["A2"]["first_name"] == "Bảo"
    assert [(h.from_tier, h.to_tier, h.reason) for h in history] == [
        ("member", "gold", "members import"), ("gold", "member", "members import")]


def test_import_can_unsubscribe_but_never_resubscribe(runtime, run, tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("member_id,email,subscribed\nU1,u1@example.com,yes\n")
    assert run("members", "import", str(path)).exit_code == 0
    path.write_text("member_id,email,subscribed\nU1,u1@example.com,no\n")
    assert run("members", "import", str(path)).exit_code == 0
    path.write_text("member_id,email,subscribed\nU1,u1@example.com,true\n")
    assert run("members", "import", str(path)).exit_code == 0
    with runtime.engine().connect() as connection:
        subscribed, left_at = connection.execute(
            sa.select(members_table.c.subscribed, members_table.c.unsubscribed_at)).one()
    assert subscribed is False and left_at is not None


def test_file_level_problems_are_clear_errors(run, tmp_path):
    cases = {
        "tier.csv": ("member_id,email,tier\nX,x@example.com,gold\n",
                     "tier.csv: row 1: column 'tier' cannot be imported: the tier follows from points"),
        "space.csv": ("member_id,email,Favourite Store\nX,x@example.com,Q1\n",
                      "space.csv: row 1: column 'Favourite Store' is not a member field"),
        "dup.csv": ("member_id,email,email\nX,x@example.com,y@example.com\n",
                    "dup.csv: row 1: repeated column(s) in the header: email"),
        "tier.jsonl": ('{"member_id": "X", "email": "x@example.com"}\n{"member_id": "Y", "tier": "gold"}\n',
                       "tier.jsonl: row 2: column 'tier' cannot be imported"),
        "members.txt": ("member_id,email\n", "cannot tell the format from the extension '.txt'"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_text(content)
        result = run("members", "import", str(path))
        assert result.exit_code == 1, name
        assert message in result.stderr, (name, result.stderr)
        assert "Traceback" not in result.output
    missing = run("members", "import", str(tmp_path / "nope.csv"))
    assert missing.exit_code == 1 and "nope.csv: file not found" in missing.stderr


def test_ragged_rows_and_bad_json_lines_are_row_errors(run, tmp_path):
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("member_id,email\nA,a@example.com\nB,b@example.com,extra\n")
    result = run("members", "import", str(ragged))
    assert result.exit_code == 1
    assert f"{ragged}: row 3: has 3 fields, the header has 2" in result.stderr

    lines = tmp_path / "m.jsonl"
    lines.write_text('{"member_id": "A", "email": "a@example.com"}\n{"member_id": \n[1, 2]\n')
    result = run("members", "import", str(lines))
    assert result.exit_code == 1
    assert f"{lines}: row 2: invalid JSON" in result.stderr
    assert f"{lines}: row 3: each line must be a JSON object" in result.stderr


def test_a_file_of_known_and_new_members_updates_some_and_inserts_the_rest(runtime, run, tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("member_id,email,points\nK1,k1@example.com,10\nK2,k2@example.com,20\n")
    assert run("members", "import", str(path)).exit_code == 0
    path.write_text("member_id,email,points\nK2,k2@example.com,25\nK3,k3@example.com,30\nK1,k1@example.com,\n")
    result = run("members", "import", str(path))
    assert result.exit_code == 0, result.output
    assert "3 rows read, 1 inserted, 2 updated" in result.stdout
    with runtime.engine().connect() as connection:
        points = dict(connection.execute(sa.select(members_table.c.member_id, members_table.c.points)).all())
    assert points == {"K1": 10, "K2": 25, "K3": 30}


def test_a_birthday_before_1900_or_after_the_day_of_the_import_is_an_error_of_its_row(run, runtime, tmp_path):
    """0001-01-01 (a placeholder for "unknown") and a date not yet come are refused with the row and
    the field, in the column-wise CSV path and in JSON Lines alike; the bounds themselves are taken.
    The import is on 2026-11-24 at 01:00 UTC: already 24 November from UTC+1 on, 15:00 in UTC+14."""
    rows = [("B1", "0001-01-01"), ("B2", "1899-12-31"), ("B3", "1900-01-01"), ("B4", "2026-11-24"),
            ("B5", "2026-11-25"), ("B6", "3026-01-01")]
    path = tmp_path / "birthdays.csv"
    path.write_text("member_id,email,birthday\n" + "".join(f"{m},{m.lower()}@example.com,{b}\n" for m, b in rows))
    jsonl = tmp_path / "birthdays.jsonl"
    jsonl.write_text("".join(json.dumps({"member_id": m, "email": f"{m.lower()}@example.com", "birthday": b}) + "\n"
                             for m, b in rows))
    for source, first_row in ((path, 2), (jsonl, 1)):
        with freeze_time("2026-11-24T01:00:00Z"):
            result = run("members", "import", str(source))
        assert result.exit_code == 1
        assert result.stderr.splitlines()[:4] == [
            f"Error: {source}: row {first_row}: birthday: 0001-01-01 is before 1900-01-01: leave the cell blank "
            "when the birthday is not known",
            f"{source}: row {first_row + 1}: birthday: 1899-12-31 is before 1900-01-01: leave the cell blank "
            "when the birthday is not known",
            f"{source}: row {first_row + 4}: birthday: 2026-11-25 is in the future (the import is on 2026-11-24)",
            f"{source}: row {first_row + 5}: birthday: 3026-01-01 is in the future (the import is on 2026-11-24)",
        ]
    assert count_members(runtime) == 0
    with freeze_time("2026-11-24T01:00:00Z"):
        result = run("members", "import", str(path), "--skip-invalid", "--rejects", str(tmp_path / "r.csv"))
    assert result.exit_code == 0, result.output
    with runtime.engine().connect() as connection:
        kept = connection.execute(sa.select(members_table.c.member_id, members_table.c.birthday)
                                  .order_by(members_table.c.member_id)).all()
    assert [(m, b.isoformat()) for m, b in kept] == [("B3", "1900-01-01"), ("B4", "2026-11-24")]

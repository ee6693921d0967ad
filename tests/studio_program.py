"""The studio-test program: the example program (`init`), committed to a git repository, with
40 members whose points step by 500 (0 to 19,500), imported through the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from click.testing import CliRunner

from loyalty_mail.cli import cli
from loyalty_mail.scaffold import init_program

AT = "2026-11-23T10:00:00+07:00"
MEMBERS = [{"member_id": f"ST{n:04d}", "email": f"member{n}@studio.example", "first_name": f"Name{n}",
            "locale": "en" if n % 2 else "vi", "timezone": "Asia/Ho_Chi_Minh", "points": n * 500,
            "joined_at": "2024-05-01T09:00:00+07:00"} for n in range(40)]


def points_between(low: int, high: int | None = None) -> list[str]:
    """The members whose points are at least `low` (and below `high`)."""
    return [m["member_id"] for m in MEMBERS
            if m["points"] >= low and (high is None or m["points"] < high)]  # type: ignore[operator]


def make_studio_program(directory: Path, database_url: str, *, git: bool = True) -> Path:
    init_program(directory)
    rows = directory.parent / f"{directory.name}-members.jsonl"
    rows.write_text("".join(json.dumps(m) + "\n" for m in MEMBERS), encoding="utf-8")
    result = CliRunner().invoke(cli, ["--project", str(directory), "--database", database_url, "members",
                                      "import", str(rows)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    if git and shutil.which("git"):
        for args in (["init", "-q"], ["add", "config.yaml", "segments", "templates"],
                     ["-c", "user.email=studio@test.example", "-c", "user.name=studio", "commit", "-qm", "program"]):
            subprocess.run(["git", "-C", str(directory), *args], check=True, capture_output=True, timeout=60)
    return directory

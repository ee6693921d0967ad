"""The README's command reference lists every command, and names the files commands really write."""

from __future__ import annotations

import re

from .conftest import REPO, Cli
from .test_cli import all_commands

README = (REPO / "README.md").read_text(encoding="utf-8")


def test_every_command_is_in_the_command_reference_table():
    reference = README.split("## Command reference", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `loyalty-mail ([a-z][a-z-]*(?: [a-z][a-z-]*)*)", reference, re.M)
    missing = [" ".join(path) for path in all_commands() if " ".join(path) not in rows]
    assert missing == []


def test_the_rejects_file_is_where_the_readme_says(project, tmp_path):
    (tmp_path / "members.csv").write_text("member_id,email\nM1,lan@example.com\nM2,not-an-email\n")
    result = Cli(project, f"sqlite:///{tmp_path / 'rejects.db'}")(
        "members", "import", str(tmp_path / "members.csv"), "--skip-invalid")
    assert result.exit_code == 0, result.output
    assert [p.name for p in tmp_path.glob("*.rejects.csv")] == ["members.rejects.csv"]
    assert "`members.rejects.csv`" in README

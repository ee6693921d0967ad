"""The examples in every command's --help name members that `seed` (and so `demo`) creates."""

from __future__ import annotations

import re

import click
import sqlalchemy as sa

from loyalty_mail.cli import cli
from loyalty_mail.models import members_table

from .conftest import Cli

MEMBER_ARGUMENT = re.compile(r"(?:explain|members show|--member)\s+(\S+)")


def every_help(group: click.Group = cli, path: str = "loyalty-mail") -> dict[str, str]:
    helps = {path: group.help or ""}
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            helps |= every_help(command, f"{path} {name}")
        else:
            helps[f"{path} {name}"] = command.help or ""
    return helps


def test_member_ids_in_help_examples_exist_after_seed(project, tmp_path):
    mentioned = {(path, found) for path, text in every_help().items() for found in MEMBER_ARGUMENT.findall(text)}
    assert {path for path, _ in mentioned} >= {"loyalty-mail explain", "loyalty-mail members show",
                                               "loyalty-mail preview", "loyalty-mail send-test"}
    url = f"sqlite:///{tmp_path / 'seeded.db'}"
    result = Cli(project, url)("seed", "--members", "100")
    assert result.exit_code == 0, result.output
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        seeded = set(conn.execute(sa.select(members_table.c.member_id)).scalars())
    engine.dispose()
    assert sorted((path, member) for path, member in mentioned if member not in seeded) == []

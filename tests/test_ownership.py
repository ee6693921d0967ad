"""One owner per table, read from the source: the CLI holds no SQL, only flows/ledger.py writes
`sends`, and only suppression.py unsubscribes a member."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "loyalty_mail"


def modules(folder: Path = PACKAGE) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "migrations" not in p.parts)


def name(path: Path) -> str:
    return str(path.relative_to(PACKAGE.parent))


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node, except what sits under `if TYPE_CHECKING:` (annotations only)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(child) for statement in node.body for child in ast.walk(statement)}
    return [node for node in ast.walk(tree) if id(node) not in skipped]


def cli_sql(path: Path) -> list[str]:
    found = []
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        where = f"{name(path)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            found += [f"{where}: import {a.name}" for a in node.names
                      if a.name.split(".")[0] in ("sqlalchemy", "sqlmodel")]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module.split(".")[0] in ("sqlalchemy", "sqlmodel") or module == "models":
                found.append(f"{where}: from {'.' * node.level}{module} import ...")
        elif isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("select", "text", "execute", "exec", "query"):
                found.append(f"{where}: {ast.unparse(func)}(...)")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and re.search(
                r"\b(select\s.+\sfrom|insert\s+into|delete\s+from|update\s+\w+\s+set)\b", node.value, re.I):
            found.append(f"{where}: SQL text {node.value!r}")
    return found


def sends_writes(path: Path, table: str = "sends", model: str = "Send") -> list[str]:
    """Statements that write `sends` (or `table`): insert/update/delete on the table (or a local
    alias of it), the model built as a row, or SQL text that writes it."""
    tree = ast.parse(path.read_text(), str(path))
    aliases = {f"{table}_table"}
    sql_write = re.compile(rf"\b(insert\s+into|update|delete\s+from)\s+\"?{table}\b", re.IGNORECASE)
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            targets = node.targets[0].elts if isinstance(node.targets[0], ast.Tuple) else node.targets
            values = node.value.elts if isinstance(node.value, ast.Tuple) else [node.value]
            for target, value in zip(targets, values):
                if isinstance(target, ast.Name) and isinstance(value, ast.Name) and value.id in aliases:
                    aliases.add(target.id)
    found = []
    for node in ast.walk(tree):
        where = f"{name(path)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Call):
            func = node.func
            args = [a.id for a in node.args if isinstance(a, ast.Name)]
            if (isinstance(func, ast.Attribute) and func.attr in ("insert", "update", "delete")
                    and isinstance(func.value, ast.Name) and func.value.id in aliases):
                found.append(f"{where}: {ast.unparse(node)[:80]}")
            elif any(a in aliases for a in args) and ast.unparse(func).split(".")[-1] in (
                    "insert", "update", "delete", "insert_ignoring_duplicates"):
                found.append(f"{where}: {ast.unparse(node)[:80]}")
            elif isinstance(func, ast.Name) and func.id == model:
                found.append(f"{where}: {model}(...)")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and sql_write.search(node.value):
            found.append(f"{where}: SQL text {node.value!r}")
    return found


def unsubscribes(path: Path) -> list[str]:
    """Writes that unsubscribe a member: `subscribed=False` or `unsubscribed_at=...` in the
    `.values(...)` of an insert or update."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "values":
            for keyword in node.keywords:
                if keyword.arg == "unsubscribed_at" or (keyword.arg == "subscribed" and not (
                        isinstance(keyword.value, ast.Constant) and keyword.value.value is True)):
                    found.append(f"{name(path)}:{node.lineno}: {ast.unparse(node)[:80]}")
                    break
    return found


def test_the_cli_calls_the_library_and_holds_no_sql():
    assert [line for path in modules(PACKAGE / "cli") for line in cli_sql(path)] == []


def test_only_the_ledger_writes_sends():
    writers = {name(path) for path in modules() if sends_writes(path)}
    assert writers == {"loyalty_mail/flows/ledger.py"}


def test_only_the_ledger_writes_journey_steps():
    writers = {name(path) for path in modules() if sends_writes(path, "journey_steps", "JourneyStep")}
    assert writers == {"loyalty_mail/flows/ledger.py"}


def test_only_suppression_unsubscribes_a_member():
    assert {name(path) for path in modules() if unsubscribes(path)} == {"loyalty_mail/suppression.py"}


def test_the_checks_see_what_they_look_for(tmp_path):
    """The scanners find each form they forbid (so the tests above cannot pass by seeing nothing)."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import sqlalchemy as sa\nfrom ..models import sends_table\n"
        "def f(conn, engine):\n"
        "    s, m = sends_table, members\n"
        "    conn.execute(s.update().values(state='x'))\n"
        "    conn.execute(db.insert_ignoring_duplicates(sends_table, 'sqlite'))\n"
        "    conn.execute(sa.text('UPDATE sends SET state = 1'))\n"
        "    conn.execute(sa.text('select id from members where member_id = :m'))\n"
        "    Send(flow='x')\n"
        "    m.update().values(subscribed=False, unsubscribed_at=now)\n")
    global PACKAGE
    saved, PACKAGE = PACKAGE, tmp_path
    try:
        assert sorted(line.split(":", 2)[1:] for line in cli_sql(sample)) == [
            ["1", " import sqlalchemy"], ["2", " from ..models import ..."], ["5", " conn.execute(...)"],
            ["6", " conn.execute(...)"], ["7", " SQL text 'UPDATE sends SET state = 1'"],
            ["7", " conn.execute(...)"], ["7", " sa.text(...)"],
            ["8", " SQL text 'select id from members where member_id = :m'"], ["8", " conn.execute(...)"],
            ["8", " sa.text(...)"]]
        assert sorted(line.split(":")[1] for line in sends_writes(sample)) == ["5", "6", "7", "9"]
        assert len(unsubscribes(sample)) == 1
    finally:
        PACKAGE = saved

"""The import graph is the data flow: no module of the package imports itself back through others.

The graph is read from the source with `ast`: every `import` and `from ... import` anywhere in a
module (inside functions too: a deferred import is still a cycle), except those under
`if TYPE_CHECKING:`. `from package import name` counts as importing the submodule when `name` is one.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "loyalty_mail"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """The import statements of a module, without those only type checkers see."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of the package it imports."""
    paths = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
    graph: dict[str, set[str]] = {name: set() for name in paths}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = package.split(".")
                if node.level:
                    base = base[:len(base) - node.level + 1]
                    base_name = ".".join(base + ([node.module] if node.module else []))
                else:
                    base_name = node.module or ""
                targets = [f"{base_name}.{alias.name}" if f"{base_name}.{alias.name}" in paths else base_name
                           for alias in node.names]
            graph[name].update(t for t in targets if t in paths and t != name)
    return graph


def under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def find_cycle(graph: dict[str, set[str]], within: str, excluding: tuple[str, ...] = ()) -> list[str] | None:
    """One cycle among the modules under `within` and not under `excluding` (as a path
    a -> b -> ... -> a), or None."""
    nodes = {n for n in graph if under(n, within) and not any(under(n, e) for e in excluding)}
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node] & nodes):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(nodes):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_graph_sees_deferred_imports_and_submodules():
    graph = import_graph()
    assert "loyalty_mail.flows.planner" in graph["loyalty_mail.flows.runner"]
    assert "loyalty_mail.flows.ledger" in graph["loyalty_mail.flows.runner"]  # from . import ledger
    assert "loyalty_mail.config" in graph["loyalty_mail.flows.planner"]
    assert find_cycle({"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}}, "p") == ["p.a", "p.b", "p.c", "p.a"]
    assert find_cycle({"p.a": {"p.b"}, "p.b": set()}, "p") is None


def test_no_import_cycle_inside_flows():
    cycle = find_cycle(import_graph(), "loyalty_mail.flows")
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_import_cycle_across_the_library():
    """All of the package but the command line, whose click group imports the command modules to
    register them while they import the group back."""
    cycle = find_cycle(import_graph(), "loyalty_mail", excluding=("loyalty_mail.cli",))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])

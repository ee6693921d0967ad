"""The import graph is the data flow: a stage never imports a later one.

Rendering sits on the message types (`loyalty_mail.message`) and the signing (`loyalty_mail.signing`)
and never on tracking, flows, transports or the outbox; a transport delivers bytes and never loads
the template engine or the CSS inliner.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

PACKAGE = REPO / "loyalty_mail"
LATER_THAN_RENDERING = ("loyalty_mail.tracking", "loyalty_mail.flows", "loyalty_mail.transports",
                        "loyalty_mail.outbox")
RENDERING_LIBRARIES = ("jinja2", "premailer", "lxml")


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module a file imports (relative imports made absolute), with its line."""
    package = ".".join(path.relative_to(REPO).with_suffix("").parts)
    if path.name != "__init__.py":
        package = package.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def test_the_import_reader_resolves_relative_imports():
    imports = {name for _, name in imported_modules(PACKAGE / "rendering" / "renderer.py")}
    assert {"loyalty_mail.signing", "loyalty_mail.message", "loyalty_mail.rendering.context"} <= imports


def test_rendering_imports_no_later_stage():
    offending = [f"{path.relative_to(REPO)}:{line}: imports {name}"
                 for path in sorted((PACKAGE / "rendering").rglob("*.py"))
                 for line, name in imported_modules(path)
                 if name.startswith(LATER_THAN_RENDERING)]
    assert offending == []


@pytest.mark.parametrize("module", ["loyalty_mail.transports.smtp", "loyalty_mail.transports.sendgrid_api",
                                    "loyalty_mail.transports.directory", "loyalty_mail.transports",
                                    "loyalty_mail.message", "loyalty_mail.signing"])
def test_a_transport_loads_no_template_engine(module):
    """In a fresh interpreter: what one import pulls in is only visible before anything else ran."""
    code = (f"import {module}, sys; "
            f"print(sorted(n for n in sys.modules if n.split('.')[0] in {RENDERING_LIBRARIES!r}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.strip() == "[]"

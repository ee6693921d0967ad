"""The emails on disk: one folder per email, one file per locale.

    templates/
      _layouts/frame.html          shared layouts and partials live in folders starting with _
      welcome/en.html              front matter (subject, preheader) + Jinja HTML body
      welcome/en.txt               optional plain-text twin; otherwise derived from the HTML
      welcome/vi.html

A body file starts with YAML front matter between `---` lines. Jinja sees the file with the front
matter blanked out, so line numbers in errors are the file's own.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jinja2
from jinja2.loaders import split_template_path

from ..errors import ConfigError, Location, Problem, TemplateError
from ..program_files import read_program_text
from ..yaml_source import load_yaml_text
from .nesting import nesting_problem

TEMPLATES_DIR = "templates"
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)^---[ \t]*\r?\n", re.DOTALL | re.MULTILINE)
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
FRONT_MATTER_KEYS = ("subject", "preheader")
_OPENED = re.compile(r"---[ \t]*\r?\n")  # a front matter begun, closed or not


@dataclass(frozen=True)
class Variant:
    """One locale of one email."""

    email: str
    locale: str
    html_path: str          # Jinja name, e.g. "welcome/vi.html"
    text_path: str | None   # "welcome/vi.txt" when the email has its own text body
    subject: str
    preheader: str
    subject_line: int
    preheader_line: int = 0  # 0: no preheader


@dataclass(frozen=True)
class Catalog:
    """Every email and its locale variants."""

    root: Path
    variants: dict[str, dict[str, Variant]]

    @property
    def names(self) -> list[str]:
        return sorted(self.variants)

    def select(self, email: str, locale: str | None, default_locale: str) -> Variant:
        """The variant for a member's locale (`vi_VN` -> `vi`), else the program's default."""
        options = self.variants[email]
        for candidate in (locale, (locale or "").split("_")[0], default_locale):
            if candidate and candidate in options:
                return options[candidate]
        return options[sorted(options)[0]]


def outside_templates(name: str) -> str | None:
    """Why a layout, include or macro file name is refused, when it leads outside templates/."""
    if ".." in name.replace("\\", "/").split("/") or name.startswith("/"):
        return (f"{name!r} leads outside {TEMPLATES_DIR}/: layouts, partials and macros are files inside "
                f"{TEMPLATES_DIR}/, named from there (\"_partials/blocks.html\")")
    return None


def strip_front_matter(source: str) -> tuple[str, str | None]:
    """(body with the front matter replaced by blank lines, front matter text or None)."""
    match = _FRONT_MATTER.match(source)
    if match is None:
        return source, None
    return "\n" * match.group(0).count("\n") + source[match.end():], match.group(1)


class FrontMatterLoader(jinja2.FileSystemLoader):
    """A file loader that hides front matter from Jinja, keeping line numbers. It reads only
    regular files inside the program (the templates folder's parent), never through a symbolic
    link (TemplateError); a file nested too deeply for Jinja's parser (`nesting`) is a syntax
    error at its line."""

    def get_source(self, environment: jinja2.Environment, template: str
                   ) -> tuple[str, str, Callable[[], bool]]:
        if not isinstance(template, str):  # `{% extends none %}`, `{% include 5 %}`
            raise jinja2.TemplateNotFound(f"{template!r} (a file name is text, such as \"_layouts/en.html\")")
        root = Path(self.searchpath[0])
        path = root.joinpath(*split_template_path(template))
        if not path.exists() and not path.is_symlink():
            raise jinja2.TemplateNotFound(template)
        source = read_program_text(path, root.parent, f"{TEMPLATES_DIR}/{template}", error=TemplateError)
        too_deep = nesting_problem(environment, source)
        if too_deep is not None:
            raise jinja2.TemplateSyntaxError(too_deep[1], too_deep[0], template, str(path))
        mtime = os.lstat(path).st_mtime

        def uptodate() -> bool:
            try:
                return os.lstat(path).st_mtime == mtime
            except OSError:
                return False

        return strip_front_matter(source)[0], str(path), uptodate


def load_catalog(root: Path) -> Catalog:
    """Find every email under `root`; all problems (bad names, bad front matter) at once."""
    problems: list[Problem] = []
    variants: dict[str, dict[str, Variant]] = {}
    if not root.is_dir():
        return Catalog(root, {})
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        for html_file in sorted(folder.glob("*.html")):
            relative = f"{folder.name}/{html_file.name}"
            where = f"{TEMPLATES_DIR}/{relative}"
            if not _NAME.match(folder.name):
                problems.append(Problem(Location(where, 1, 1), f"email folder name '{folder.name}' "
                                        "must be lowercase letters, digits, - or _"))
                continue
            locale = html_file.stem
            variant = _variant(html_file, root, folder.name, locale, relative, where, problems)
            if variant is not None:
                variants.setdefault(folder.name, {})[locale] = variant
    if problems:
        raise TemplateError(problems)
    return Catalog(root, variants)


_UNQUOTED = re.compile(r"^(subject|preheader):[ \t]+([^\s\"'|>].*?)[ \t]*\r?$")
_YAML_READS = ((lambda v: v.startswith(("{", "[")), "starts with `{`, which YAML reads as a mapping"),
               (lambda v: ": " in v, "holds `: `, which YAML reads as a key"),
               (lambda v: " #" in v, "holds ` #`, where YAML starts a comment (the rest would be dropped)"))


def _unquoted_values(front: str, where: str) -> list[Problem]:
    """A `subject:` or `preheader:` written without quotes that YAML would misread, with how to
    write it (`subject: {{ member.first_name }}` is a mapping, `Sale #1` is `Sale`)."""
    problems = []
    for number, text in enumerate(front.split("\n"), start=2):  # the front matter starts on line 2
        if (match := _UNQUOTED.match(text)) is None:
            continue
        key, value = match.groups()
        for misread, why in _YAML_READS:
            if misread(value):
                quoted = "'" + value.replace("'", "''") + "'" if '"' in value else f'"{value}"'
                problems.append(Problem(Location(where, number, match.start(2) + 1),
                                        f"the {key} {why}: quote it, {key}: {quoted}"))
                break
    return problems


def _variant(path: Path, root: Path, email: str, locale: str, relative: str, where: str,
             problems: list[Problem]) -> Variant | None:
    try:
        source = read_program_text(path, root.parent, where, error=TemplateError)  # root.parent: the program
    except TemplateError as exc:
        problems.extend(exc.problems)
        return None
    _, front = strip_front_matter(source)
    if front is None:
        if _OPENED.match(source.lstrip("\ufeff")):
            problems.append(Problem(Location(where, 1, 1), "the front matter opened here is not closed: add "
                                    "a line --- after its `subject:` (and `preheader:`) lines, before the body"))
        else:
            problems.append(Problem(Location(where, 1, 1), "missing front matter: start the file with "
                                    "---, a `subject:` line (and optionally `preheader:`), then ---"))
        return None
    if unquoted := _unquoted_values(front, where):
        problems.extend(unquoted)
        return None
    try:
        doc = load_yaml_text("\n" + front, where)  # the front matter starts on line 2
    except ConfigError as exc:
        problems.extend(exc.problems)
        return None
    data = doc.value if isinstance(doc.value, dict) else None
    if data is None:
        problems.append(Problem(Location(where, 2, 1), "front matter must be a mapping with a "
                                "`subject:` key"))
        return None
    for key in data:
        if key not in FRONT_MATTER_KEYS:
            problems.append(Problem(doc.locate((key,), key=True), f"unknown front matter key "
                                    f"'{key}' (allowed: {', '.join(FRONT_MATTER_KEYS)})"))
    subject = data.get("subject")
    if not isinstance(subject, str) or not subject.strip():
        problems.append(Problem(doc.locate(("subject",)), "subject: a non-empty text is required"))
        return None
    preheader = data.get("preheader") or ""
    text_file = path.with_suffix(".txt")
    return Variant(
        email=email, locale=locale, html_path=relative,
        text_path=f"{email}/{text_file.name}" if text_file.exists() else None,
        subject=subject, preheader=str(preheader),
        subject_line=doc.locate(("subject",)).line if doc.locate(("subject",)) else 2,
        preheader_line=doc.locate(("preheader",)).line if "preheader" in data and doc.locate(("preheader",)) else 0,
    )

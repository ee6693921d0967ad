"""Jinja template inheritance resolved at the source level, so CSS can be inlined once.

`flatten(name)` returns one self-contained Jinja source for an email: `{% extends %}` blocks
substituted into their layout (with `{{ super() }}`), `{% include "x" %}` pasted in place, and
`{% from "x" import m %}` replaced by the macro definitions it names. What cannot be resolved
from the source alone (a layout or include chosen by a variable, `import ... as`, `{% raw %}`)
raises `NotFlattenable` with the file and line, and the template falls back to inlining each
email after rendering.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

_TAG = re.compile(r"\{%-?\s*(\w+)\b(.*?)-?%\}", re.DOTALL)
_STRING = r"""(?:"([^"]*)"|'([^']*)')"""
_EXTENDS = re.compile(rf"^\s*{_STRING}\s*$")
_INCLUDE = re.compile(rf"^\s*{_STRING}\s*(with context)?\s*$")
_FROM_IMPORT = re.compile(rf"^\s*{_STRING}\s+import\s+([\w\s,]+?)\s*(with context)?\s*$")
_BODY_START = re.compile(r"<body\b[^>]*>", re.IGNORECASE)
_COMMENT = re.compile(r"\{#.*?#\}", re.DOTALL)
_SUPER = re.compile(r"\{\{-?\s*super\(\)\s*-?\}\}")


class NotFlattenable(Exception):
    """A construct that only Jinja's runtime can resolve; carries where it is and why."""

    def __init__(self, template: str, line: int, reason: str) -> None:
        super().__init__(f"{template}:{line}: {reason}")
        self.template, self.line, self.reason = template, line, reason


@dataclass(frozen=True)
class _Block:
    name: str
    start: int          # offset of `{% block %}`
    body_start: int     # offset just after it
    body_end: int       # offset of `{% endblock %}`
    end: int            # offset just after `{% endblock %}`


def _line(source: str, offset: int) -> int:
    return source.count("\n", 0, offset) + 1


def _string_arg(match: re.Match[str]) -> str:
    return match.group(1) if match.group(1) is not None else match.group(2)


def _blocks(source: str, template: str) -> dict[str, _Block]:
    """Every `{% block %}` of a source by name (nested ones included)."""
    stack: list[tuple[str, int, int]] = []
    found: dict[str, _Block] = {}
    for tag in _TAG.finditer(source):
        keyword = tag.group(1)
        if keyword == "block":
            name = tag.group(2).split()[0] if tag.group(2).split() else ""
            stack.append((name, tag.start(), tag.end()))
        elif keyword == "endblock":
            if not stack:
                raise NotFlattenable(template, _line(source, tag.start()), "endblock without block")
            name, start, body_start = stack.pop()
            found[name] = _Block(name, start, body_start, tag.start(), tag.end())
    return found


_MACRO = re.compile(r"\{%-?\s*macro\b.*?\{%-?\s*endmacro\s*-?%\}", re.DOTALL)
_DOCUMENT_START = re.compile(r"<(!doctype|html)\b", re.IGNORECASE)


def _macros_into_body(source: str) -> str:
    """Macro definitions written before <html> would be moved by an HTML parser; they print
    nothing, so move them just inside <body>, where they are styled like the rest."""
    start, body = _DOCUMENT_START.search(source), _BODY_START.search(source)
    if not start or not body or not source[:start.start()].strip():
        return source
    head = source[:start.start()]
    if _TAG.sub("", _MACRO.sub("", head)).strip():
        return source  # real output before the document: leave it to the fallback check
    rest = source[start.start():]
    inside = _BODY_START.search(rest)
    if inside is None:
        return source  # the <body> found was inside a macro: the document itself has none
    return rest[:inside.end()] + head + rest[inside.end():]


def _prelude(child: str, name: str) -> str:
    """A child's macro definitions and `{% set %}`s outside its blocks (Jinja runs those too)."""
    blocks = _blocks(child, name).values()
    outside = [b for b in blocks if not any(o.start < b.start and b.end <= o.end for o in blocks)]
    kept: list[str] = []
    depth, start = 0, 0
    for tag in _TAG.finditer(child):
        if any(b.start <= tag.start() < b.end for b in outside):
            continue
        if tag.group(1) == "macro":
            start = tag.start() if depth == 0 else start
            depth += 1
        elif tag.group(1) == "endmacro":
            depth -= 1
            if depth == 0:
                kept.append(child[start:tag.end()])
        elif tag.group(1) == "set" and depth == 0 and "=" in tag.group(2):
            kept.append(tag.group(0))
    return "".join(kept)


class Flattener:
    """Resolves inheritance, includes and macro imports; `load(name)` gives a template's source."""

    def __init__(self, load: Callable[[str], str]) -> None:
        self._load = load

    def flatten(self, name: str, _seen: tuple[str, ...] = ()) -> str:
        """The self-contained source of template `name`."""
        source = self._flatten(name, _seen)
        return _macros_into_body(source) if not _seen else source

    def _flatten(self, name: str, _seen: tuple[str, ...] = ()) -> str:
        if name in _seen:
            raise NotFlattenable(name, 1, f"includes itself through {' -> '.join(_seen)}")
        source = _COMMENT.sub(lambda m: "\n" * m.group(0).count("\n"), self._load(name))
        self._refuse_runtime_constructs(source, name)
        source = self._paste_includes(source, name, _seen + (name,))
        parent = self._parent(source, name)
        if parent is None:
            return source
        layout = self._substitute_blocks(self.flatten(parent, _seen + (name,)), source, name)
        # Macro definitions print nothing; inside <body> they are styled like the rest.
        body = _BODY_START.search(layout)
        at = body.end() if body else 0
        return layout[:at] + _prelude(source, name) + layout[at:]

    def _refuse_runtime_constructs(self, source: str, name: str) -> None:
        for tag in _TAG.finditer(source):
            keyword, args = tag.group(1), tag.group(2)
            line = _line(source, tag.start())
            if keyword == "raw":
                raise NotFlattenable(name, line, "{% raw %} blocks are not inlined at compile time")
            if keyword == "import":
                raise NotFlattenable(name, line, "`import ... as` is resolved at render time; "
                                     "use `{% from \"file\" import macro %}` instead")
            if keyword == "extends" and not _EXTENDS.match(args):
                raise NotFlattenable(name, line, "the layout is chosen at render time "
                                     "(extends needs a quoted file name)")
            if keyword == "include" and not _INCLUDE.match(args):
                raise NotFlattenable(name, line, "the included file is chosen at render time, "
                                     "or the include is `ignore missing`/`without context`")
            if keyword == "from" and not _FROM_IMPORT.match(args):
                raise NotFlattenable(name, line, "the macro file is chosen at render time")

    def _parent(self, source: str, name: str) -> str | None:
        for tag in _TAG.finditer(source):
            if tag.group(1) == "extends":
                match = _EXTENDS.match(tag.group(2))
                assert match is not None  # checked by _refuse_runtime_constructs
                return _string_arg(match)
        return None

    def _paste_includes(self, source: str, name: str, seen: tuple[str, ...]) -> str:
        def replace(tag: re.Match[str]) -> str:
            keyword, args = tag.group(1), tag.group(2)
            if keyword == "include":
                match = _INCLUDE.match(args)
                assert match is not None
                return self.flatten(_string_arg(match), seen)
            if keyword == "from":
                match = _FROM_IMPORT.match(args)
                assert match is not None
                wanted = {part.strip() for part in match.group(3).split(",")}
                return self._macros(_string_arg(match), wanted, seen, name, _line(source, tag.start()))
            return tag.group(0)

        return _TAG.sub(replace, source)

    def _macros(self, library: str, wanted: set[str], seen: tuple[str, ...], name: str,
                line: int) -> str:
        source = self.flatten(library, seen)
        chunks: list[str] = []
        depth, start, current = 0, 0, ""
        for tag in _TAG.finditer(source):
            if tag.group(1) == "macro":
                if depth == 0:
                    start, current = tag.start(), tag.group(2).split("(")[0].strip()
                depth += 1
            elif tag.group(1) == "endmacro":
                depth -= 1
                if depth == 0 and current in wanted:
                    chunks.append(source[start:tag.end()])
                    wanted.discard(current)
        if wanted:
            raise NotFlattenable(name, line, f"{library} defines no macro {', '.join(sorted(wanted))}")
        return "".join(chunks)

    def _substitute_blocks(self, layout: str, child: str, name: str) -> str:
        overrides = _blocks(child, name)
        result = layout
        # Outer blocks first: a child's outer block brings its own nested blocks along.
        for block_name in sorted(overrides, key=lambda n: overrides[n].start):
            mine = overrides[block_name]
            body = child[mine.body_start:mine.body_end]
            theirs = _blocks(result, name).get(block_name)
            if theirs is None:
                continue  # Jinja ignores child blocks the layout does not have
            parent_body = result[theirs.body_start:theirs.body_end]
            body = _SUPER.sub(lambda _m: parent_body, body)
            result = result[:theirs.body_start] + body + result[theirs.body_end:]
        return result

"""Jinja template inheritance resolved at the source level, so CSS can be inlined once.

`flatten(name)` returns one self-contained Jinja source for an email, in Jinja's order of
execution: a child's code outside its blocks first (its statements, macros and `{% set %}`
blocks, with the conditions and loops around them; not its output, which Jinja discards), then
its layout with the child's blocks substituted (with `{{ super() }}`); `{% include "x" %}` pasted
in place (in a `{% with %}` scope when it assigns names, which Jinja keeps inside the include), and
`{% from "x" import m %}` replaced by the last definition of each macro it names, with the
definitions of its own file that the macro reads put inside it. What cannot
be resolved from the source alone (a layout or include chosen by a variable, an include `without
context`, a layout chosen by a condition, `import ... as`, `{% raw %}`) raises `NotFlattenable` with the file and line, and
the template falls back to inlining each email after rendering. Tags are read with Jinja's own lexer (`jinja_source`).

`definitions_in_body` gives the HTML parser's view of such a source: the definitions written
before `<html>` moved just inside `<body>` (their markup is styled there); compile-time inlining
puts them back in front of the compiled template, where Jinja runs them before the `<head>`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import jinja2

from .jinja_source import Construct, constructs, names_read, string_value
from .origins import Traced, join

_BODY_START = re.compile(r"<body\b[^>]*>", re.IGNORECASE)
_DOCUMENT_START = re.compile(r"<(!doctype|html)\b", re.IGNORECASE)
_HTML_START = re.compile(r"<html\b", re.IGNORECASE)
_WITH_CONTEXT = (("name", "with"), ("name", "context"))


class MissingFile(Exception):
    """A file that a template extends, includes or imports from by a quoted name does not exist
    (or its name leads outside the templates folder); carries where it is named."""

    def __init__(self, template: str, line: int, missing: str) -> None:
        super().__init__(f"{template}:{line}: {missing} does not exist")
        self.template, self.line, self.missing = template, line, missing


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


def _read(source: str | Traced, template: str) -> list[Construct]:
    try:
        return constructs(str(source))
    except jinja2.TemplateSyntaxError as exc:
        raise NotFlattenable(template, exc.lineno or 1, f"Jinja cannot read this source: {exc.message}") from None


def _tags(source: str | Traced, template: str) -> list[Construct]:
    """The statements and raw blocks of a source, in order."""
    return [c for c in _read(source, template) if c.kind in ("statement", "raw")]


def _blocks(source: str | Traced, template: str) -> dict[str, _Block]:
    """Every `{% block %}` of a source by name (nested ones included)."""
    stack: list[tuple[str, int, int]] = []
    found: dict[str, _Block] = {}
    for tag in _tags(source, template):
        if tag.keyword == "block":
            name = tag.args[0][1] if tag.args else ""
            stack.append((name, tag.start, tag.end))
        elif tag.keyword == "endblock":
            if not stack:
                raise NotFlattenable(template, _line(str(source), tag.start), "endblock without block")
            name, start, body_start = stack.pop()
            found[name] = _Block(name, start, body_start, tag.start, tag.end)
    return found


def _macro_spans(tags: Iterable[Construct]) -> list[tuple[str, int, int]]:
    """(name, start, end) of each top-level `{% macro %}...{% endmacro %}`."""
    return [(tag.args[0][1] if tag.args else "", start, end)
            for tag, start, end in _spans(tags, ("macro",)) if tag.keyword == "macro"]


def _spans(tags: Iterable[Construct], keywords: tuple[str, ...]) -> list[tuple[Construct, int, int]]:
    """(opening tag, start, end) of each outermost block of these kinds (`macro`, `set` blocks,
    `call`) with its end tag; blocks of any of the kinds nest inside one another."""
    spans: list[tuple[Construct, int, int]] = []
    stack: list[Construct] = []
    for tag in tags:
        if tag.keyword in keywords and (tag.keyword != "set" or tag.is_set_block):
            stack.append(tag)
        elif tag.keyword.startswith("end") and tag.keyword[3:] in keywords and stack:
            opening = stack.pop()
            if not stack:
                spans.append((opening, opening.start, tag.end))
    return spans


_DEFINITIONS = ("macro", "set")   # blocks that print nothing where they are written
_BLOCK_STATEMENTS = frozenset({"if", "for", "with", "macro", "call", "filter", "set", "block", "autoescape"})


def _without(source: str, spans: Iterable[tuple[int, int]]) -> str:
    kept, position = [], 0
    for start, end in sorted(spans):
        kept.append(source[position:start])
        position = max(position, end)
    kept.append(source[position:])
    return "".join(kept)


@dataclass(frozen=True)
class Placed:
    """A self-contained source as the HTML parser should read it: the definitions written before
    `<html>` (macros, `{% set %}`s and the statements around them, which print nothing), before
    and after the doctype, moved just inside `<body>`, where an HTML parser keeps their markup and
    styles it like the rest. Jinja must still run them first: `inlining.compile_inlined` puts
    them back in front."""

    source: str
    moved: tuple[int, int] | None = None   # (start, end) of the definitions in `source`
    original: str = ""                     # the source as written, when they were moved
    pieces: tuple[tuple[int, int, int], ...] = ()  # (start, end) in `source` -> start as written

    def original_line(self, line: int, offset: int | None = None) -> int:
        """The line, in the source as written, of a line of `source` (or, more precisely, of an
        offset in it: a line may hold the end of the document's `<body>` tag and the first of
        the definitions moved after it)."""
        if offset is None:
            offset = sum(len(text) + 1 for text in self.source.split("\n")[:line - 1])
        for start, end, written in self.pieces:
            if start <= offset < end:
                return self.original.count("\n", 0, written + offset - start) + 1
        return line

    def original_offset(self, offset: int) -> int:
        """The offset, in the source as written, of an offset of `source`."""
        for start, end, written in self.pieces:
            if start <= offset < end:
                return written + offset - start
        return offset


_DOCTYPE = re.compile(r"<!doctype\b[^>]*>", re.IGNORECASE)


def _only_definitions(text: str) -> bool:
    """Whether `text` holds only statements, macro and `{% set %}` blocks, and white space."""
    try:
        tags = _tags(text, "")
    except NotFlattenable:
        return False
    spans = [(s, e) for _, s, e in _spans(tags, _DEFINITIONS)]
    return not _without(text, [(t.start, t.end) for t in tags] + spans).strip()


def definitions_in_body(source: str) -> Placed:
    """The source with the definitions written before `<html>` (before and after the doctype)
    moved just inside `<body>`; the source as it is when there are none, or when something before
    the document prints (the fallback check reports that), or when the document has no `<body>`
    of its own."""
    html, body = _HTML_START.search(source), _BODY_START.search(source)
    if not html or not body:
        return Placed(source)
    doctype = _DOCTYPE.search(source, 0, html.start())
    first_end, second_start = (doctype.start(), doctype.end()) if doctype else (html.start(), html.start())
    before, after = source[:first_end], source[second_start:html.start()]
    if not (before + after).strip() or not _only_definitions(before) or not _only_definitions(after):
        return Placed(source)  # nothing to move, or real output before the document
    rest = source[html.start():]
    inside = _BODY_START.search(rest)
    if inside is None:
        return Placed(source)  # the <body> found was inside a macro: the document itself has none
    declaration = source[first_end:second_start]
    into = len(declaration) + inside.end()
    moved = declaration + rest[:inside.end()] + before + after + rest[inside.end():]
    end = into + len(before) + len(after)
    pieces = ((0, len(declaration), first_end), (len(declaration), into, html.start()),
              (into, into + len(before), 0), (into + len(before), end, second_start),
              (end, len(moved), html.start() + inside.end()))
    return Placed(moved, (into, end), source, pieces)


def _top_level_code(child: Traced, name: str) -> Traced:
    """What Jinja runs of a child template outside its blocks, before its layout: every statement
    there (conditions, loops, `{% set %}`, `{% from %}`), macro and `{% set %}` blocks whole; not
    its text, expressions, `{% call %}` blocks or includes, whose output Jinja discards."""
    blocks = _blocks(child, name).values()
    outside = [b for b in blocks if not any(o.start < b.start and b.end <= o.end for o in blocks)]
    tags = [t for t in _tags(child, name) if not any(b.start <= t.start < b.end for b in outside)]
    spans = _spans(tags, ("macro", "set", "call"))
    pieces, position = [], 0
    for tag in tags:
        if tag.start < position:
            continue  # inside a span already kept or left out
        span = next(((opening, end) for opening, start, end in spans if start == tag.start), None)
        if span is not None:
            if span[0].keyword != "call":
                pieces.append(child[tag.start:span[1]])
            position = span[1]
        elif tag.keyword not in ("extends", "include"):
            pieces.append(child[tag.start:tag.end])
    return join(pieces)


def referenced_files(source: str) -> list[str]:
    """The files a source extends, includes or imports macros from by a plain quoted name, in order."""
    try:
        found = constructs(source)
    except jinja2.TemplateSyntaxError:
        return []
    names = [string_value(c.args[0]) for c in found
             if c.keyword in ("extends", "include", "from", "import") and c.args]
    return [n for n in names if n]


def _is_super(construct: Construct) -> bool:
    return construct.tokens == (("name", "super"), ("operator", "("), ("operator", ")"))


def _file_argument(tag: Construct, *rest: tuple[str, str]) -> str | None:
    """The file name of `{% extends "x" %}` / `{% include "x" [with context] %}`, when it is a
    plain string followed by exactly `rest`."""
    if len(tag.args) != 1 + len(rest) or tag.args[1:] != rest:
        return None
    return string_value(tag.args[0])


_IGNORE_MISSING = (("name", "ignore"), ("name", "missing"))


def _include_file(tag: Construct) -> tuple[str, bool] | None:
    """`{% include "x" [ignore missing] [with context] %}` -> ("x", whether missing is ignored)."""
    for ignore in (False, True):
        for rest in ((), _WITH_CONTEXT):
            name = _file_argument(tag, *(_IGNORE_MISSING if ignore else ()), *rest)
            if name:
                return name, ignore
    return None


def _from_import(tag: Construct) -> tuple[str, set[str]] | None:
    """`{% from "x" import a, b [with context] %}` -> ("x", {"a", "b"})."""
    args = list(tag.args)
    if args[-2:] == list(_WITH_CONTEXT):
        args = args[:-2]
    if len(args) < 3 or args[1] != ("name", "import"):
        return None
    library = string_value(args[0])
    names = args[2:]
    if library is None or any(kind != "name" for kind, _ in names[::2]) \
            or any(token != ("operator", ",") for token in names[1::2]) or len(names) % 2 == 0:
        return None  # `import a as b` and anything else Jinja resolves at render time
    return library, {value for _, value in names[::2]}


def _definitions(source: Traced, name: str) -> list[tuple[str, Construct, int, str]]:
    """(name, opening tag, end, kind) of each macro and `{% set %}` at the top level of a source,
    in order; kind is "macro" or "set"."""
    found: list[tuple[str, Construct, int, str]] = []
    depth, position = 0, 0
    tags = _tags(source, name)
    spans = {start: (opening, end) for opening, start, end in _spans(tags, ("macro", "set", "call"))}
    for tag in tags:
        if tag.start < position:
            continue
        if tag.start in spans:
            opening, end = spans[tag.start]
            position = end
            if depth == 0 and opening.keyword in ("macro", "set") and opening.args:
                found.append((opening.args[0][1], opening, end, opening.keyword))
        elif tag.keyword == "set":  # `{% set a = ... %}`: the blocks are spans
            targets = tag.args[:tag.args.index(("operator", "="))]
            for kind, value in () if depth or ("operator", ".") in targets else targets:
                if kind == "name":
                    found.append((value, tag, tag.end, "set"))
        elif tag.keyword in _BLOCK_STATEMENTS:
            depth += 1
        elif tag.keyword.startswith("end") and tag.keyword[3:] in _BLOCK_STATEMENTS:
            depth -= 1
    return found


def _helpers(source: Traced, definitions: list[tuple[str, Construct, int, str]], macro: str,
             tag: Construct, end: int) -> list[Traced]:
    """The definitions of `source` (in order) that the macro at `tag` reads, directly or through
    one another; not those of its own name or of its parameters, which it sees as its own."""
    text = str(source)
    try:
        signature = jinja2.Environment().parse(text[tag.start:end]).body[0]
    except jinja2.TemplateSyntaxError:
        return []
    own = {macro} | {arg.name for arg in getattr(signature, "args", [])}
    defined = {n for n, _, _, _ in definitions} - own
    needed: set[str] = set()
    reading = names_read(text[tag.start:end]) or frozenset()
    while reading & defined - needed:
        new = reading & defined - needed
        needed |= new
        reading = frozenset().union(*(names_read(text[t.start:e]) or frozenset()
                                      for n, t, e, _ in definitions if n in new))
    kept = {t.start: source[t.start:e] for n, t, e, _ in definitions if n in needed}
    return list(kept.values())


MAX_PASTED = 1_000  # included files pasted into one email: includes inside includes multiply
MAX_BLOCKS = 200    # a layout's blocks a child replaces (each replacement reads the page again)


class Flattener:
    """Resolves inheritance, includes and macro imports; `load(name)` gives a template's source,
    `exists(name)` whether there is one (for `ignore missing`). An email that pastes more than
    MAX_PASTED included files (ten includes of a file that includes ten more...) is not
    flattened: Jinja renders it within the render's limits."""

    def __init__(self, load: Callable[[str], str], exists: Callable[[str], bool] | None = None) -> None:
        self._load = load
        self._exists = exists or (lambda name: True)
        self._written: dict[str, str] = {}
        self._pasted = 0

    def flatten(self, name: str) -> str:
        """The self-contained source of template `name`, in Jinja's order of execution: a
        child's code outside its blocks first, then its layout with the blocks filled in."""
        return self.traced(name).text

    def traced(self, name: str, _seen: tuple[str, ...] = ()) -> Traced:
        """`flatten(name)`, each character traced to the file and offset it was written at
        (`location`)."""
        if name in _seen:
            raise NotFlattenable(name, 1, f"includes itself through {' -> '.join(_seen)}")
        if not _seen:
            self._pasted = 0
        text = self._written[name] = self._load(name)
        source = Traced.of(text, name)
        comments = [c for c in _read(source, name) if c.kind == "comment"]
        for comment in reversed(comments):  # blanked, keeping the lines of what follows
            blank = Traced.of("\n" * text.count("\n", comment.start, comment.end), name, comment.start, added=True)
            source = join((source[:comment.start], blank, source[comment.end:]))
        self._refuse_runtime_constructs(str(source), name)
        written = source
        source = self._paste_includes(source, name, _seen + (name,))
        parent = self._parent(str(source), name)
        if parent is None:
            return source
        if not self._exists(parent):
            extends = next(t for t in _tags(source, name) if t.keyword == "extends")
            self._missing(source, extends, name, parent)
        layout = self._substitute_blocks(self.traced(parent, _seen + (name,)), source, name)
        return self._paste_includes(_top_level_code(written, name), name, _seen + (name,)) + layout

    def location(self, traced: Traced, offset: int) -> tuple[str, int, int] | None:
        """(file, line, column), 1-based, where the character at `offset` of a source from
        `traced` was written; None when it was not written in a file flattened here."""
        origin = traced.origin(offset)
        if origin is None or origin[0] not in self._written:
            return None
        file, at = origin
        text = self._written[file]
        return file, text.count("\n", 0, at) + 1, at - (text.rfind("\n", 0, at) + 1) + 1

    def line_location(self, traced: Traced, line: int) -> tuple[str, int, int] | None:
        """`location` of the first character of a line (its first one not a space or tab)."""
        lines = traced.text.split("\n")
        if not 0 < line <= len(lines):
            return None
        start = sum(len(text) + 1 for text in lines[:line - 1])
        indent = len(lines[line - 1]) - len(lines[line - 1].lstrip(" \t"))
        return self.location(traced, start + indent if indent < len(lines[line - 1]) else start)

    def _refuse_runtime_constructs(self, source: str, name: str) -> None:
        depth, layouts = 0, 0  # blocks open around a tag; extends tags seen
        for tag in _tags(source, name):
            line = _line(source, tag.start)
            if tag.keyword in _BLOCK_STATEMENTS and (tag.keyword != "set" or tag.is_set_block):
                depth += 1
            elif tag.keyword.startswith("end") and tag.keyword[3:] in _BLOCK_STATEMENTS:
                depth -= 1
            if tag.keyword == "extends":
                layouts += 1
                if depth or layouts > 1:
                    raise NotFlattenable(name, line, "the layout is chosen at render time (an extends "
                                         "inside a condition, or more than one)")
            if tag.kind == "raw":
                raise NotFlattenable(name, line, "{% raw %} blocks are not inlined at compile time")
            if tag.keyword == "import":
                raise NotFlattenable(name, line, "`import ... as` is resolved at render time; "
                                     "use `{% from \"file\" import macro %}` instead")
            if tag.keyword == "extends" and _file_argument(tag) is None:
                raise NotFlattenable(name, line, "the layout is chosen at render time "
                                     "(extends needs a quoted file name)")
            if tag.keyword == "include" and _include_file(tag) is None:
                raise NotFlattenable(name, line, "the included file is chosen at render time, "
                                     "or the include is `without context`")
            if tag.keyword == "from" and _from_import(tag) is None:
                raise NotFlattenable(name, line, "the macro file is chosen at render time, or a "
                                     "macro is imported under another name")

    def _parent(self, source: str, name: str) -> str | None:
        for tag in _tags(source, name):
            if tag.keyword == "extends":
                return _file_argument(tag)  # checked by _refuse_runtime_constructs
        return None

    def _missing(self, source: Traced, tag: Construct, name: str, missing: str) -> None:
        where = self.location(source, tag.start)
        raise MissingFile(where[0] if where else name, where[1] if where else 1, missing)

    def _paste_includes(self, source: Traced, name: str, seen: tuple[str, ...]) -> Traced:
        pieces, position = [], 0
        for tag in _tags(source, name):
            if tag.keyword == "include":
                included = _include_file(tag)
                assert included is not None  # checked by _refuse_runtime_constructs
                if not included[1] and not self._exists(included[0]):
                    self._missing(source, tag, name, included[0])
                replacement = self._included(*included, seen, source[tag.start:tag.end])
            elif tag.keyword == "from":
                imported = _from_import(tag)
                assert imported is not None
                if not self._exists(imported[0]):
                    self._missing(source, tag, name, imported[0])
                where = self.location(source, tag.start)
                replacement = self._macros(imported[0], imported[1], seen, name, where[1] if where else 1)
            else:
                continue
            pieces.append(source[position:tag.start])
            pieces.append(replacement)
            position = tag.end
        pieces.append(source[position:])
        return join(pieces)

    def _included(self, included: str, ignore_missing: bool, seen: tuple[str, ...], tag: Traced) -> Traced:
        """An included file's source, in a `{% with %}` scope when it assigns names: Jinja runs
        an include in a scope of its own, so its `{% set %}`s and macros stay inside it."""
        if ignore_missing and not self._exists(included):
            return tag[:0]
        self._pasted += 1
        if self._pasted > MAX_PASTED:
            origin = tag.origin(0)
            written = self._written.get(origin[0], "") if origin else ""
            raise NotFlattenable(origin[0] if origin else seen[-1],
                                 written.count("\n", 0, origin[1]) + 1 if origin else 1,
                                 f"more than {MAX_PASTED:,} included files in one email (includes inside "
                                 "includes multiply), so they are included as it is rendered")
        source = self.traced(included, seen)
        if any(tag.keyword in ("set", "macro") for tag in _tags(source, included)):
            opening, closing = "{% with %}", "{% endwith %}"
            origin = tag.origin(0)
            if origin is None:
                return join((Traced(opening), source, Traced(closing)))
            return join((Traced.of(opening, *origin, added=True), source, Traced.of(closing, *origin, added=True)))
        return source

    def _macros(self, library: str, wanted: set[str], seen: tuple[str, ...], name: str,
                line: int) -> Traced:
        """The definitions of the macros `wanted` from `library`: the last definition of each, as
        the library's module holds it. A macro that reads names its file defines (another macro,
        a `{% set %}`) gets those definitions at the start of its body, where only it sees them:
        Jinja runs an imported macro with its own file's names, not the importer's."""
        source = self.traced(library, seen)
        definitions = _definitions(source, library)
        macros = {n: (tag, end) for n, tag, end, kind in definitions if kind == "macro"}
        missing = wanted - macros.keys()
        if missing:
            raise NotFlattenable(name, line, f"{library} defines no macro {', '.join(sorted(missing))}")
        chunks: list[Traced] = []
        for macro in sorted(wanted, key=lambda n: macros[n][0].start):
            tag, end = macros[macro]
            helpers = _helpers(source, definitions, macro, tag, end)
            chunks += [source[tag.start:tag.end], *helpers, source[tag.end:end]]
        return join(chunks)

    def _substitute_blocks(self, layout: Traced, child: Traced, name: str) -> Traced:
        overrides = _blocks(child, name)
        # Jinja ignores child blocks the layout does not have (a block nested in another block
        # comes along with it)
        defined = _blocks(layout, name).keys()
        replacing = sorted((n for n in overrides if n in defined), key=lambda n: overrides[n].start)
        if len(replacing) > MAX_BLOCKS:
            block = overrides[replacing[MAX_BLOCKS]]
            raise NotFlattenable(name, _line(str(child), block.start), f"more than {MAX_BLOCKS} blocks of "
                                 "the layout replaced, so they are replaced as the email is rendered")
        result = layout
        # Outer blocks first: a child's outer block brings its own nested blocks along.
        for block_name in replacing:
            mine = overrides[block_name]
            body = child[mine.body_start:mine.body_end]
            theirs = _blocks(result, name).get(block_name)
            if theirs is None:
                continue  # Jinja ignores child blocks the layout does not have
            parent_body = result[theirs.body_start:theirs.body_end]
            supers = [c for c in _read(body, name) if c.kind == "expression" and _is_super(c)]
            for call in reversed(supers):
                body = join((body[:call.start], parent_body, body[call.end:]))
            result = join((result[:theirs.body_start], body, result[theirs.body_end:]))
        return result

"""Where each Jinja construct is in a template's source, read by Jinja's own lexer.

Compile-time inlining swaps every construct for a placeholder and flattening reads `extends`,
`include`, `import` and `block` tags; both need exact spans, which only the lexer gets right: a
string holding `}}` or `%}`, a comment holding either, a `{% raw %}` block. `env.lex()` gives the
raw tokens without offsets; their values are the source text, except whitespace that a `-` marker
removed from neighbouring data, so the offsets are recovered by walking the source alongside.

`without_unused_macros` reads the node tree (`env.parse`) for what a template can print: a macro
that no printed code can name prints nothing, so compile-time inlining need not look at it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import jinja2
from jinja2 import nodes

_LEXER = jinja2.Environment()  # the renderer's syntax: Jinja's default delimiters, no line statements
_OPENING = {"variable_begin": "expression", "block_begin": "statement", "comment_begin": "comment",
            "raw_begin": "raw"}
_CLOSING = {"variable_end", "block_end", "comment_end", "raw_end"}


@dataclass(frozen=True)
class Construct:
    """One `{{ }}`, `{% %}`, `{# #}` or whole `{% raw %}...{% endraw %}` of a source."""

    start: int
    end: int
    kind: str              # expression | statement | comment | raw
    line: int
    tokens: tuple[tuple[str, str], ...] = ()  # (type, raw text) inside the delimiters, no whitespace

    def code(self, source: str) -> str:
        return source[self.start:self.end]

    @property
    def keyword(self) -> str:
        """A statement's tag name: if, for, endfor, macro, extends..."""
        if self.kind == "statement" and self.tokens and self.tokens[0][0] == "name":
            return self.tokens[0][1]
        return ""

    @property
    def is_set_block(self) -> bool:
        """`{% set name %}...{% endset %}` (or `{% set name | filter %}`), not `{% set name = value %}`."""
        return self.keyword == "set" and ("operator", "=") not in self.args

    @property
    def args(self) -> tuple[tuple[str, str], ...]:
        """A statement's tokens after its tag name."""
        return self.tokens[1:] if self.keyword else ()

    @property
    def called(self) -> str:
        """The name an expression calls first: `{{ card(x) }}` -> card."""
        if self.kind == "expression" and len(self.tokens) >= 2 and self.tokens[0][0] == "name" \
                and self.tokens[1] == ("operator", "("):
            return self.tokens[0][1]
        return ""


def string_value(token: tuple[str, str]) -> str | None:
    """A string token's value, decoded as Jinja's own token stream does; None for other tokens."""
    kind, literal = token
    if kind != "string":
        return None
    return literal[1:-1].encode("ascii", "backslashreplace").decode("unicode-escape")


def constructs(source: str) -> list[Construct]:
    """Every Jinja construct of `source` in order; raises jinja2.TemplateSyntaxError as Jinja would."""
    found: list[Construct] = []
    position = 0
    opened: tuple[int, str, int] | None = None   # (start, kind, line)
    tokens: list[tuple[str, str]] = []
    for lineno, kind, value in _LEXER.lex(source):
        while not source.startswith(value, position) and position < len(source) and source[position].isspace():
            position += 1   # whitespace a `-` marker took off the data before it
        start, position = position, position + len(value)
        if kind in _OPENING and opened is None:
            opened, tokens = (start, _OPENING[kind], lineno), []
        elif kind in _CLOSING and opened is not None:
            found.append(Construct(opened[0], position, opened[1], opened[2], tuple(tokens)))
            opened = None
        elif opened is not None and kind != "whitespace":
            tokens.append((kind, value))
    return found


def unused_macros(source: str) -> list[tuple[int, int]]:
    """The (start, end) offsets of each macro definition that nothing printed can call: a
    macro is used when code that runs names it (a call, a `{% call %}` block, or passed on as
    a value, which counts as a call), and code runs at the top of the template, in a used
    macro and in the `{% call %}` blocks of code that runs. The outermost unused definitions
    only, each with the whitespace its `{%-` removes; none when the source does not parse."""
    try:
        tree = _LEXER.parse(source)
        found = constructs(source)
    except jinja2.TemplateSyntaxError:
        return []
    spans: list[tuple[int, int]] = []
    stack: list[int] = []
    for construct in found:
        if construct.keyword == "macro":
            stack.append(len(spans))
            spans.append((construct.start, -1))
        elif construct.keyword == "endmacro" and stack:
            index = stack.pop()
            spans[index] = (spans[index][0], construct.end)
    macros = list(tree.find_all(nodes.Macro))  # depth first: the order of their tags
    if len(macros) != len(spans) or stack:
        return []  # the tags and the tree disagree: keep every macro
    where = {id(macro): span for macro, span in zip(macros, spans)}
    named, candidates = _names_and_macros(tree.body)
    used: set[int] = set()
    grown = True
    while grown:
        grown = False
        for macro in candidates:
            if id(macro) not in used and macro.name in named:
                used.add(id(macro))
                names, inner = _names_and_macros([*macro.defaults, *macro.body])
                named |= names
                candidates = candidates + inner
                grown = True
    unused = [where[id(macro)] for macro in candidates if id(macro) not in used]
    return sorted((len(source[:start].rstrip()) if source.startswith("{%-", start) else start, end)
                  for start, end in unused)


def names_read(source: str) -> frozenset[str] | None:
    """Every name the template's code reads (`self` included); None when it does not parse."""
    try:
        tree = _LEXER.parse(source)
    except jinja2.TemplateSyntaxError:
        return None
    return frozenset(node.name for node in tree.find_all(nodes.Name) if node.ctx == "load")


def _names_and_macros(body: list[nodes.Node]) -> tuple[set[str], list[nodes.Macro]]:
    """The names code read in `body` (macros aside), and the macros defined there."""
    names: set[str] = set()
    macros: list[nodes.Macro] = []
    pending = list(body)
    while pending:
        node = pending.pop()
        if isinstance(node, nodes.Macro):
            macros.append(node)
            continue
        if isinstance(node, nodes.Name) and node.ctx == "load":
            names.add(node.name)
        pending.extend(node.iter_child_nodes())
    return names, macros


def without_unused_macros(source: str) -> str:
    """`source` with each unused macro definition (`unused_macros`) replaced by a Jinja comment
    of the same length and line breaks: Jinja prints the same, and every line and offset stays
    where it was (a reason to fall back is traced to its file through them). Compiled
    sources drop comments, so a definition stays where that would let a `-` marker beside it
    strip whitespace that the definition kept from it."""
    pieces: list[str] = []
    kept: list[str] = []   # the pieces without the comments
    position = 0
    for start, end in unused_macros(source):
        before = "".join(kept) + source[position:start]
        after = source[end:]
        if (_STRIPS_AFTER.search(before) and after[:1].isspace()) or \
                (_STRIPS_BEFORE.match(after) and before[-1:].isspace()):
            continue
        pieces += [source[position:start], "{#" + _NOT_NEWLINE.sub(" ", source[start + 2:end - 2]) + "#}"]
        kept.append(source[position:start])
        position = end
    if not pieces:
        return source
    pieces.append(source[position:])
    return "".join(pieces)


_NOT_NEWLINE = re.compile(r"[^\n]")
_STRIPS_AFTER = re.compile(r"-(?:\}\}|%\}|#\})\s*\Z")   # `-}}`: strips the whitespace after it
_STRIPS_BEFORE = re.compile(r"\s*\{[{%#]-")              # `{{-`: strips the whitespace before it

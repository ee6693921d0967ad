"""Where each Jinja construct is in a template's source, read by Jinja's own lexer.

Compile-time inlining swaps every construct for a placeholder and flattening reads `extends`,
`include`, `import` and `block` tags; both need exact spans, which only the lexer gets right: a
string holding `}}` or `%}`, a comment holding either, a `{% raw %}` block. `env.lex()` gives the
raw tokens without offsets; their values are the source text, except whitespace that a `-` marker
removed from neighbouring data, so the offsets are recovered by walking the source alongside.
"""

from __future__ import annotations

from dataclasses import dataclass

import jinja2

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

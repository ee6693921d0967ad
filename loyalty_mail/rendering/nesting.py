"""How deeply a template nests, read from Jinja's own lexer before Jinja parses it.

Jinja's parser and code generator recurse once per level of nesting, and Python refuses code
with more than 20 nested loops: a template nested past a few dozen levels would stop `check`,
`preview` and sending on a RecursionError or a SyntaxError of the generated code instead of an
error at its line. So a template may nest at most `MAX_STATEMENTS` statements with an end tag
(`{% for %}`, `{% if %}`, `{% macro %}`...), `MAX_BRACKETS` brackets inside one tag, and chain at
most `MAX_CHAIN` operators (`+`, `~`, `|`, `.`, `and`...) in one expression between commas and
brackets; the lexer itself reads a flat stream, so this costs one pass and no recursion.
"""

from __future__ import annotations

import jinja2

MAX_STATEMENTS = 16
MAX_BRACKETS = 24
MAX_CHAIN = 100

ENDED_TAGS = frozenset({"for", "if", "macro", "call", "filter", "with", "block", "autoescape", "trans"})
_OPEN, _CLOSE = frozenset("([{"), frozenset(")]}")
_OPERATORS = frozenset({"+", "-", "*", "/", "//", "%", "**", "~", "|", ".", "==", "!=", "<", "<=", ">", ">="})
_WORD_OPERATORS = frozenset({"and", "or", "not", "in", "is", "if", "else"})


def nesting_problem(env: jinja2.Environment, source: str) -> tuple[int, str] | None:
    """(line, message) where `source` first nests deeper than allowed; None when it does not,
    or when it does not lex (the parser reports that)."""
    statements: list[int] = []  # the line of each open statement
    brackets = 0
    chain = [0]                 # operators since the last comma, per bracket level
    after_begin = False
    try:
        for line, kind, value in env.lex(source):
            if kind == "whitespace":
                continue
            if kind == "block_begin":
                after_begin, brackets, chain = True, 0, [0]
                continue
            if after_begin and kind == "name":
                if value in ENDED_TAGS:
                    statements.append(line)
                    if len(statements) > MAX_STATEMENTS:
                        return line, (f"statements nested more than {MAX_STATEMENTS} deep ({{% {value} %}} inside "
                                      f"{MAX_STATEMENTS} others): move the inner part into a macro or flatten it")
                elif value.startswith("end") and value[3:] in ENDED_TAGS and statements:
                    statements.pop()
            after_begin = False
            if kind == "variable_begin":
                brackets, chain = 0, [0]
            elif kind == "operator" and value in _OPEN:
                brackets += 1
                chain.append(0)
                if brackets > MAX_BRACKETS:
                    return line, f"brackets nested more than {MAX_BRACKETS} deep in one expression"
            elif kind == "operator" and value in _CLOSE:
                brackets = max(brackets - 1, 0)
                if len(chain) > 1:
                    chain.pop()
            elif kind == "operator" and value in (",", ":"):
                chain[-1] = 0
            elif (kind == "operator" and value in _OPERATORS) or (kind == "name" and value in _WORD_OPERATORS):
                chain[-1] += 1
                if sum(chain) > MAX_CHAIN:
                    return line, (f"an expression chains more than {MAX_CHAIN} operators: split it with "
                                  "{% set %} into parts")
    except jinja2.TemplateSyntaxError:
        return None
    return None

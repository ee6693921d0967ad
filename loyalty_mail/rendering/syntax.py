"""Jinja's syntax errors made useful to a template's author: the line where a block that is
never closed was opened, and "did you mean" for an unknown filter or test."""

from __future__ import annotations

import difflib
import re

import jinja2

from .nesting import ENDED_TAGS

_UNKNOWN = re.compile(r"No (filter|test) named '([^']+)'")
_INNERMOST = re.compile(r"innermost block that needs to be closed is '(\w+)'")
_BLOCKS = ENDED_TAGS | {"set"}  # a set block ends too; `set x = ...` does not (see _is_set_block)


def syntax_message(env: jinja2.Environment, exc: jinja2.TemplateSyntaxError) -> str:
    """`exc`'s message with what helps to fix it."""
    message = exc.message or "cannot be read"
    if unknown := _UNKNOWN.search(message):
        kind, name = unknown.groups()
        close = difflib.get_close_matches(name, list(env.filters if kind == "filter" else env.tests), 1, 0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return f"no {kind} named '{name}'{hint}; the {kind}s are listed in the README's \"Template context\""
    if (innermost := _INNERMOST.search(message)) and (source := _source(env, exc)) is not None:
        opened = _unclosed(env, source, innermost.group(1), exc.lineno)
        if opened is not None:
            return f"{message} (the '{innermost.group(1)}' opened at line {opened} is not closed)"
    return message


def _source(env: jinja2.Environment, exc: jinja2.TemplateSyntaxError) -> str | None:
    if exc.source is not None:
        return exc.source
    if exc.name is None or env.loader is None:
        return None
    try:
        return env.loader.get_source(env, exc.name)[0]
    except jinja2.TemplateError:
        return None


def _unclosed(env: jinja2.Environment, source: str, tag: str, before: int) -> int | None:
    """The line of the innermost block still open at line `before`, when it is a `tag` block."""
    stack: list[tuple[str, int]] = []
    tokens = list(_tokens(env, source))
    for index, (line, kind, value) in enumerate(tokens):
        if line > before:
            break
        if kind != "name" or index == 0 or tokens[index - 1][1] != "block_begin":
            continue
        if value in _BLOCKS and (value != "set" or _is_set_block(tokens, index)):
            stack.append((value, line))
        elif value.startswith("end") and stack and stack[-1][0] == value[3:]:
            stack.pop()
    return stack[-1][1] if stack and stack[-1][0] == tag else None


def _is_set_block(tokens: list[tuple[int, str, str]], index: int) -> bool:
    for _, kind, _value in tokens[index + 1:]:
        if kind == "block_end":
            return True
        if kind == "assign":
            return False
    return False


def _tokens(env: jinja2.Environment, source: str) -> list[tuple[int, str, str]]:
    found: list[tuple[int, str, str]] = []
    try:
        for line, kind, value in env.lex(source):
            if kind != "whitespace":
                found.append((line, kind, value))
    except jinja2.TemplateSyntaxError:
        pass  # the tokens up to the lexer's own error still say which blocks are open
    return found

"""Jinja's syntax errors made useful to a template's author: the line where a block that is
never closed was opened, "did you mean" for an unknown filter or test, and the column of the
unknown filter, test or tag (Jinja gives only the line)."""

from __future__ import annotations

import difflib
import re

import jinja2

from .nesting import ENDED_TAGS

_UNKNOWN = re.compile(r"No (filter|test) named '([^']+)'")
_UNKNOWN_TAG = re.compile(r"unknown tag '([^']+)'")
_UNEXPECTED_AT = re.compile(r"^unexpected char '(.+)' at (\d+)$")  # the lexer's: an offset in the source
_UNEXPECTED = re.compile(r"^unexpected '([/>])'$")  # the parser's, on an operator: `{{/if}}`, `{{> x}}`
_HANDLEBARS = {"#": "`{{#if x}}` and `{{#each xs}}` are Handlebars: Jinja writes `{% if x %}` and `{% for x in xs %}`",
               "/": "`{{/if}}` and `{{/each}}` are Handlebars: Jinja writes `{% endif %}` and `{% endfor %}`",
               "^": "`{{^x}}` is Mustache: Jinja writes `{% if not x %}`",
               ">": "`{{> partial}}` is Handlebars: Jinja writes `{% include \"_partials/partial.html\" %}`"}
_INNERMOST = re.compile(r"innermost block that needs to be closed is '(\w+)'")
_BLOCKS = ENDED_TAGS | {"set"}  # a set block ends too; `set x = ...` does not (see _is_set_block)


def syntax_message(env: jinja2.Environment, exc: jinja2.TemplateSyntaxError) -> str:
    """`exc`'s message with what helps to fix it."""
    message = exc.message or "cannot be read"
    if unknown := _UNKNOWN.search(message):
        return unknown_message(env, *unknown.groups())
    if (unexpected := _UNEXPECTED_AT.match(message)) and (source := _source(env, exc)) is not None:
        char, offset = unexpected.group(1), int(unexpected.group(2))
        after_braces = source[:offset].rstrip().endswith("{{")
        advice = f" ({_HANDLEBARS[char]})" if after_braces and char in _HANDLEBARS else ""
        return f"unexpected character '{char}'{advice}"
    if (unexpected := _UNEXPECTED.match(message)) and _handlebars_column(env, exc):
        char = unexpected.group(1)
        return f"unexpected character '{char}' ({_HANDLEBARS[char]})"
    if message == "invalid syntax for function call expression":
        return (f"{message}: arguments given by position come first, then those given by name "
                "(`button('https://shop.example/', label='Shop')`, not `button(url='https://shop.example/', 'Shop')`)")
    if (innermost := _INNERMOST.search(message)) and (source := _source(env, exc)) is not None:
        opened = _unclosed(env, source, innermost.group(1), exc.lineno)
        if opened is not None:
            return f"{message} (the '{innermost.group(1)}' opened at line {opened} is not closed)"
    return message


def unknown_message(env: jinja2.Environment, kind: str, name: str) -> str:
    """What to say about a filter or test (`kind`) that `env` does not have."""
    close = difflib.get_close_matches(name, list(env.filters if kind == "filter" else env.tests), 1, 0.6)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"no {kind} named '{name}'{hint}; the {kind}s are listed in the README's \"Template context\""


def syntax_column(env: jinja2.Environment, exc: jinja2.TemplateSyntaxError) -> int:
    """The column of the unknown filter, test or tag `exc` is about, on its line; 0 otherwise."""
    message = exc.message or ""
    before: tuple[str, ...]
    if unexpected := _UNEXPECTED_AT.match(message):
        source = _source(env, exc)
        offset = int(unexpected.group(2))
        if source is None or offset > len(source):
            return 0
        return offset - (source.rfind("\n", 0, offset) + 1) + 1
    if _UNEXPECTED.match(message):
        return _handlebars_column(env, exc)
    if unknown := _UNKNOWN.search(message):
        kind, name = unknown.groups()
        before = ("|", "filter") if kind == "filter" else ("is", "not")
    elif tag := _UNKNOWN_TAG.search(message):
        name, before = tag.group(1), ("block_begin",)
    else:
        return 0
    source = _source(env, exc)
    if source is None or not exc.lineno:
        return 0
    previous = ""
    for line, column, kind, value in _placed(env, source):
        if line == exc.lineno and kind == "name" and value == name and previous in before:
            return column
        if line > exc.lineno:
            break
        previous = value if kind in ("name", "operator") else kind
    return 0


def _handlebars_column(env: jinja2.Environment, exc: jinja2.TemplateSyntaxError) -> int:
    """For "unexpected '/'" (or '>'): the column of that character right after `{{` on the
    error's line (Handlebars' `{{/if}}`, `{{> partial}}`); 0 when it is not there."""
    unexpected = _UNEXPECTED.match(exc.message or "")
    source = _source(env, exc)
    if unexpected is None or source is None or not exc.lineno:
        return 0
    lines = source.split("\n")
    text = lines[exc.lineno - 1] if exc.lineno <= len(lines) else ""
    found = re.search(r"\{\{-?\s*" + re.escape(unexpected.group(1)), text)
    return found.end() if found else 0


def _placed(env: jinja2.Environment, source: str) -> list[tuple[int, int, str, str]]:
    """(line, column, kind, value) of each token but white space, up to the lexer's own error."""
    found: list[tuple[int, int, str, str]] = []
    position, line, line_start = 0, 1, 0
    try:
        for _, kind, value in env.lex(source):
            while not source.startswith(value, position) and position < len(source) and source[position].isspace():
                position += 1  # white space a `-` marker removed from the token
            end = position + len(value)
            if kind != "whitespace":
                line = source.count("\n", 0, position) + 1
                line_start = source.rfind("\n", 0, position) + 1
                found.append((line, position - line_start + 1, kind, value))
            position = end
    except jinja2.TemplateSyntaxError:
        pass
    return found


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

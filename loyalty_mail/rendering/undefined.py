"""What a send-time "undefined" error needs to be useful: the column of the missing name on its
line, and the closest name the email's context does have ("did you mean first_name?").

`check` finds misspellings of documented fields before anything is sent; what reaches send time
is data-dependent: a custom attribute or an event property one member's record lacks."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping
from typing import Any

import jinja2

_MISSING = re.compile(r"""(?:has no attribute|has no element) '([^']{1,200})'|^'([^']{1,200})' is undefined""")
_MAX_DEPTH = 3
_MAX_NAMES = 5000


def missing_name(exc: jinja2.UndefinedError) -> str | None:
    """The name Jinja could not find, from its message (it carries no structured field)."""
    found = _MISSING.search(exc.message or "")
    return (found.group(1) or found.group(2)) if found else None


def read_from_none(exc: jinja2.UndefinedError) -> bool:
    """Whether the name was read from a value that is none (`tier.next.label` for the highest
    tier): the name is not misspelled, the value it was read from is empty."""
    return (exc.message or "").startswith(("'None' has no attribute", "'None' has no element"))


def column_of(line: str, name: str) -> int:
    """1-based column of `name` used inside a Jinja expression on `line` (as `.name`, `['name']`
    or a bare name); 0 when it cannot be told apart."""
    escaped = re.escape(name)
    for pattern in (rf"\.({escaped})\b", rf"""\[\s*['"]({escaped})['"]\s*\]""", rf"(?<![\w.])({escaped})\b"):
        for match in re.finditer(pattern, line):
            if _inside_jinja(line, match.start(1)):
                return match.start(1) + 1
    return 0


def _inside_jinja(line: str, offset: int) -> bool:
    opened = max(line.rfind("{{", 0, offset), line.rfind("{%", 0, offset))
    closed = max(line.rfind("}}", 0, offset), line.rfind("%}", 0, offset))
    return opened > closed or (opened == -1 and closed == -1)  # a tag may span lines


def _names(value: Any, depth: int = 0) -> Iterator[str]:
    if depth >= _MAX_DEPTH or not isinstance(value, Mapping):
        return
    for key, inner in value.items():
        if isinstance(key, str) and not key.startswith("_"):
            yield key
            yield from _names(inner, depth + 1)


def suggestion(name: str, context: Mapping[str, Any]) -> str | None:
    """The context's closest name to `name` (keys of its dicts, a few levels deep), if any is close."""
    names: dict[str, None] = {}
    for key in _names(context):
        names.setdefault(key)
        if len(names) >= _MAX_NAMES:
            break
    names.pop(name, None)
    close = difflib.get_close_matches(name, list(names), n=1)
    return close[0] if close else None

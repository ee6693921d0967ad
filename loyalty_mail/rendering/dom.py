"""Compare two HTML documents as DOMs: same elements, attributes, inline styles and text.

Whitespace between and inside text is normalised, comments are ignored, and `style` attributes
compare as ordered declaration lists. Used by `check` and the tests to show that compile-time
inlining equals rendering then inlining.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

import lxml.html
from lxml import etree

_SPACE = re.compile(r"\s+")


def _text(value: str | None) -> str:
    return _SPACE.sub(" ", value or "").strip()


def _attributes(element: etree._Element) -> list[tuple[str, str]]:
    result = []
    for name, value in sorted(element.attrib.items()):
        if name == "style":
            value = ";".join(_SPACE.sub(" ", d).strip() for d in value.split(";") if d.strip())
        elif name in ("href", "src"):
            value = unquote(value)
        result.append((name, _text(value)))
    return result


def signature(document: str) -> list[tuple[str, object]]:
    """A flat, comparable walk of the document: (path, what is there)."""
    root = lxml.html.document_fromstring(document)
    out: list[tuple[str, object]] = []

    def walk(element: etree._Element, path: str) -> None:
        if not isinstance(element.tag, str):
            return
        here = f"{path}/{element.tag}"
        out.append((here, _attributes(element)))
        if _text(element.text):
            out.append((here + "#text", _text(element.text)))
        for child in element:
            walk(child, here)
            if _text(child.tail):
                out.append((here + "#tail", _text(child.tail)))

    walk(root, "")
    return out


def dom_difference(left: str, right: str) -> str | None:
    """None when equal; otherwise a short description of the first difference."""
    a, b = signature(left), signature(right)
    for index, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"at {x[0]}: {str(x[1])[:120]!r} vs {str(y[1])[:120]!r}"
    if len(a) != len(b):
        extra = (a if len(a) > len(b) else b)[min(len(a), len(b))]
        return f"one document has more content, from {extra[0]}"
    return None

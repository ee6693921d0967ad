"""The trackable links of an HTML email, found by walking the document with HTML parsers.

Elements come from lxml's tree (the one premailer builds and serializes); the markup inside
Outlook's conditional comments (`<!--[if mso]><a href="...">...<![endif]-->`), which is a comment
to lxml and real HTML to Outlook, is read with the standard library's HTML tokenizer and its
start tags rewritten in place, so a comment that opens a `<table>` another one closes stays
as written. A trackable link is an `<a>` with an `href` that is not `mailto:`, `tel:`, `sms:` or
an `#anchor`, and without `data-notrack`; in a conditional comment, also a VML shape with an
`href` (the bulletproof button `<v:roundrect href="...">`, which is what Outlook follows); links
are numbered in document order.
"""

from __future__ import annotations

import html
import html.parser
from collections.abc import Callable, Mapping
from typing import Any

import lxml.etree
import lxml.html

_UNTRACKED = ("mailto:", "tel:", "sms:", "#")
Replace = Callable[[int, str], str]  # (link number, URL) -> the URL to write; both decoded


def trackable(attributes: Mapping[str, Any]) -> bool:
    href = attributes.get("href")
    if href is None or "data-notrack" in attributes:
        return False
    return not href.lstrip().lower().startswith(_UNTRACKED)


class _StartTags(html.parser.HTMLParser):
    """Each start tag of a piece of HTML: (offset, raw text, name, attributes)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[int, str, str, list[tuple[str, str | None]]]] = []
        self._lines: list[int] = [0]

    def read(self, text: str) -> list[tuple[int, str, str, list[tuple[str, str | None]]]]:
        position = text.find("\n")
        while position >= 0:
            self._lines.append(position + 1)
            position = text.find("\n", position + 1)
        self.feed(text)
        self.close()
        return self.found

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        line, column = self.getpos()
        self.found.append((self._lines[line - 1] + column, self.get_starttag_text() or "", tag, attrs))

    handle_startendtag = handle_starttag


def _rewrite_markup(text: str, replace: Replace, first: int) -> tuple[str, int]:
    """HTML as written (the inside of a conditional comment) with each trackable link's href
    replaced; its start tag is written again from its attributes."""
    pieces, position, number = [], 0, first
    for offset, raw, tag, attrs in _StartTags().read(text):
        values = dict(attrs)
        if not (tag == "a" or tag.startswith("v:")) or not trackable(values):
            continue
        url = replace(number, values["href"] or "")
        number += 1
        written = "".join(f' {name}="{html.escape(url if name == "href" else value, quote=True)}"'
                          if value is not None else f" {name}" for name, value in attrs)
        end = "/>" if raw.endswith("/>") else ">"
        pieces += [text[position:offset], f"<{tag}{written}{end}"]
        position = offset + len(raw)
    pieces.append(text[position:])
    return "".join(pieces), number - first


def _conditional(comment: Any) -> bool:
    text = comment.text or ""
    return text.startswith("[if") and "href" in text.lower()


def rewrite_tree(root: Any, replace: Replace) -> int:
    """Put `replace(number, url)` in place of each trackable link's URL in a parsed document
    (lxml), conditional comments included; the number of links."""
    number = 0
    for node in root.iter("a", lxml.etree.Comment):
        if node.tag == "a":
            if trackable(node.attrib):
                node.set("href", replace(number, node.get("href")))
                number += 1
        elif _conditional(node):
            node.text, count = _rewrite_markup(node.text, replace, number)
            number += count
    return number


_SOURCES = ("href", "src", "background")  # the attributes that point a client at a URL


def urls_in(document: str) -> list[tuple[str, bool]]:
    """Every URL a document points a mail client at, in document order, whether tracked or not:
    (URL as the browser reads it, whether it is only inside an Outlook conditional comment). An
    `href`, `src` or `background` of any element, in conditional comments too (`<v:fill src>`,
    `<v:roundrect href>`, a `background` on a cell)."""
    found: list[tuple[str, bool]] = []
    root = lxml.html.document_fromstring(document)
    for node in root.iter():
        if node.tag is lxml.etree.Comment:
            text = node.text or ""
            if text.startswith("[if"):
                found += [(value.strip(), True) for _, _, _, attrs in _StartTags().read(text)
                          for name, value in attrs if name in _SOURCES and value and value.strip()]
        elif isinstance(node.tag, str):
            found += [(node.get(name, "").strip(), False) for name in _SOURCES if node.get(name, "").strip()]
    return found


def links_in(document: str) -> list[tuple[int, str]]:
    """The trackable links of an HTML document: (number, URL as the browser reads it)."""
    found: list[tuple[int, str]] = []

    def collect(number: int, url: str) -> str:
        found.append((number, url))
        return url

    rewrite_tree(lxml.html.document_fromstring(document), collect)
    return found

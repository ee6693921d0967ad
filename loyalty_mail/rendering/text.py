"""HTML email -> readable plain text, for the text/plain part when a template has no .txt twin.

Headings are underlined, paragraphs and table rows become lines, links read `label (url)`,
list items get bullets on consecutive lines (a blank line before and after the list, also when
the items come from a loop of the template), images their alt text; the hidden preheader, <head>, <style> and
elements marked `data-text="skip"` are left out. Template placeholders that live in HTML
comments (`<!--JX12X-->`) are kept, also in the parts left out and outside `<body>`, so the same
converter turns a compiled template into a text template that runs every statement.
"""

from __future__ import annotations

import re

from lxml import etree

_BLOCKS = {"p", "div", "table", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li",
           "blockquote", "section", "header", "footer", "center", "hr"}
_SKIP = {"head", "style", "script", "title"}
_LISTS = {"ul", "ol"}
_PLACEHOLDER = re.compile(r"^JX\d+X$")
_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")


_PARSER = etree.HTMLParser()  # lxml.html's tree without its element classes, which cost a third more


def html_to_text(document: str) -> str:
    """Readable text of an HTML document (see module docstring)."""
    root = etree.fromstring(document, _PARSER)
    if root is None:
        raise etree.ParserError("Document is empty")  # as lxml.html.document_fromstring says
    body = root.find("body")
    top = body if body is not None else root
    parts: list[str] = []
    for node in reversed(list(root.itersiblings(preceding=True))):  # before <html>
        _placeholders(node, parts)
    outside = list(root) if body is not None else []
    at = outside.index(body) if body is not None else 0
    for node in outside[:at]:  # <head>, and what stands between it and <body>
        _placeholders(node, parts)
    if top.text:
        parts.append(top.text)  # text before the body's first element
    _walk(top, parts)
    for node in [*outside[at + 1:], *root.itersiblings()]:  # after </body>
        _placeholders(node, parts)
    text = "".join(parts)
    lines = [_SPACES.sub(" ", line).strip() if line and not line.isspace() else "" for line in text.split("\n")]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip() + "\n"


def _hidden(element: etree._Element) -> bool:
    style = element.get("style")
    return (style is not None and "display:none" in style.replace(" ", "").lower()
            or element.get("data-text") == "skip" or element.get("aria-hidden") == "true" and element.tag != "img")


def _walk(element: etree._Element, parts: list[str]) -> None:
    append = parts.append
    in_list = element.tag in _LISTS  # the white space between items is not a line of its own
    for node in element.iterchildren():
        tag = node.tag
        if isinstance(tag, str):
            if tag not in _SKIP and not _hidden(node):
                _element(node, parts)
            else:
                _placeholders(node, parts)  # its text is left out, not the template code in it
        elif tag is etree.Comment:
            text = node.text
            if text and _PLACEHOLDER.match(text):
                append(text)
        tail = node.tail
        if tail and not (in_list and tail.isspace()):
            append(tail)


def _placeholders(node: etree._Element, parts: list[str]) -> None:
    """The template placeholders in a part of the document the text leaves out (<head>, a hidden
    element, what stands outside <body>): a statement there (`{% set %}`, `{% if %}`) still runs."""
    for comment in node.iter(etree.Comment):
        text = comment.text
        if text and _PLACEHOLDER.match(text):
            parts.append(text)


def _element(node: etree._Element, parts: list[str]) -> None:
    tag = node.tag
    if tag == "br":
        parts.append("\n")
        return
    if tag == "img":
        alt = (node.get("alt") or "").strip()
        if alt:
            parts.append(alt)
        return
    if tag == "hr":
        parts.append("\n" + "-" * 40 + "\n")
        return
    block = tag in _BLOCKS
    if block:
        parts.append("\n")
    if tag == "li":
        parts.append("- ")
    if tag in ("td", "th"):
        parts.append(" ")
    start = len(parts)
    if node.text and not (tag in _LISTS and node.text.isspace()):
        parts.append(node.text)
    _walk(node, parts)
    if tag == "a":
        _link(node, parts, start)
    elif tag in ("h1", "h2"):
        heading = _SPACES.sub(" ", "".join(parts[start:])).strip()
        parts.append("\n" + ("=" if tag == "h1" else "-") * max(len(heading), 3))
    if block and tag != "li":  # an item ends where the next begins (or the list ends): no blank line
        parts.append("\n")
        if tag in ("p", "h1", "h2", "h3", "table", "ul", "ol", "blockquote"):
            parts.append("\n")


def _link(node: etree._Element, parts: list[str], start: int) -> None:
    href = (node.get("href") or "").strip()
    label = _SPACES.sub(" ", "".join(parts[start:])).strip()
    if not href or href.startswith("#"):
        return
    if href.lower().startswith("mailto:") and label == href[7:]:
        return
    if label == href:
        return
    if label:
        parts.append(f" ({href})")
    else:
        parts.append(href)

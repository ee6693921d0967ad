"""HTML email -> readable plain text, for the text/plain part when a template has no .txt twin.

Headings are underlined, paragraphs and the rows of layout tables become lines, links read
`label (url)` (on the label's line, also when the source writes `<a href>` and `</a>` on lines of
their own), images their alt text; the hidden preheader, <head>, <style> and elements marked
`data-text="skip"` are left out. A list has a blank line before and after it (also when its
items come from a loop of the template); each item starts a line with "- " or, in an `<ol>`,
its number (`start` and `value` honoured), and its paragraphs and line breaks follow on lines
indented under its text, with no blank line inside an item; a list inside an item is indented
under it. A data table (`_data_table`: not a layout table, and one with a caption, a header
or a row of two cells with text) has a blank line before and after it and each row on one line,
its cells joined by `CELL_SEPARATOR` (" | "), empty cells left out and a row with none dropped;
a cell's paragraphs and line breaks run on with a space.

Template placeholders that live in HTML comments (`<!--JX12X-->`) are kept, also in the parts
left out and outside `<body>`, so the same converter turns a compiled template into a text
template that runs every statement (`template=True`): there an item's indentation and where
it starts, and where a row's cells start, are written as private characters that `settle` turns
into the final text once the email is rendered (an item line that printed nothing is dropped,
an item whose first line printed nothing starts on its next one, a row's cells are joined and
its empty ones dropped), and an `<ol>` whose items come from a loop or a condition is numbered
by Jinja as it renders.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from lxml import etree

_BLOCKS = {"p", "div", "table", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol",
           "blockquote", "section", "header", "footer", "center", "hr"}
_SKIP = {"head", "style", "script", "title"}
_LISTS = {"ul", "ol"}
_CELLS = {"td", "th"}
_PLACEHOLDER = re.compile(r"^JX\d+X$")
_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")

INDENT = "\ue000"   # one space of an item's indentation, until `settle`
ITEM = "\ue001"     # where an item's marker ("- ", "2. ") starts, until `settle`
CODE = re.compile("\ue002(.*?)\ue003", re.S)  # Jinja code the text template adds (`_code`)
CELL = "\ue004"     # where a cell of a data table's row starts, until `settle`
CELL_SEPARATOR = " | "
LEFT_OUT_START, LEFT_OUT_END = "\ue005", "\ue006"  # text the text template runs but does not print
LEFT_OUT = re.compile(f"{LEFT_OUT_START}.*?{LEFT_OUT_END}", re.S)
_IN_TEXT = re.compile(r"JX\d+X")
_BLANK_ITEM_LINE = re.compile(f"\n{INDENT}+[ \t]*(?=\n|\\Z)")
_EMPTY_FIRST_LINE = re.compile(f"{ITEM}(-|[0-9]+\\.)[ \t]*\n{INDENT}+")  # a marker alone, then its item
_BLANK_LINES = re.compile(r"\n\n\n+")


_PARSER = etree.HTMLParser()  # lxml.html's tree without its element classes, which cost a third more


def html_to_text(document: str, *, template: bool = False) -> str:
    """Readable text of an HTML document (see module docstring); with `template`, of a compiled
    template, its lists to be settled after rendering."""
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
    writer = _Writer(template)
    writer.walk(top, parts)
    for node in [*outside[at + 1:], *root.itersiblings()]:  # after </body>
        _placeholders(node, parts)
    text = "".join(parts)
    lines = [_SPACES.sub(" ", line).strip() if line and not line.isspace() else "" for line in text.split("\n")]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    text = "\n".join(out).strip() + "\n"
    return text if template else settle(text).strip("\n") + "\n"


def settle(text: str) -> str:
    """The lists and data tables of a text written by `html_to_text(..., template=True)`, once
    rendered: item lines that printed nothing dropped, an item whose first line printed nothing
    started on its next line, the indentation written as spaces; a row's cells joined by
    `CELL_SEPARATOR`, its empty cells left out, a row with no text dropped; what was run only
    for its effects (a `<title>`'s code) left out."""
    if LEFT_OUT_START in text:
        text = LEFT_OUT.sub("", text)
    if CELL in text:
        text = _ROW.sub(_row, text)
        text = _BLANK_LINES.sub("\n\n", text)
    if INDENT in text:
        text = _BLANK_ITEM_LINE.sub("", text)
        text = _EMPTY_FIRST_LINE.sub(r"\1 ", text).replace(INDENT, " ")
        text = _BLANK_LINES.sub("\n\n", text)
    return text.replace(ITEM, "") if ITEM in text else text


_ROW = re.compile(f"^[^\n{CELL}]*{CELL}[^\n]*(?:\n|\\Z)", re.MULTILINE)  # a line with cells, its line end


def _row(match: re.Match[str]) -> str:
    line = match.group(0)
    end = "\n" if line.endswith("\n") else ""
    before, _, cells = line.rstrip("\n").partition(CELL)  # before: indentation, a list's marker
    # one substitution a row, not one a cell: rows of receipts come by the dozen
    joined = CELL_SEPARATOR.join(filter(None, map(str.strip, _SPACES.sub(" ", cells).split(CELL))))
    if not joined:
        return before.rstrip() + end if before.strip() else ""
    return (before.rstrip() + " " if before.strip(INDENT + " \t") else before.strip(" \t")) + joined + end


def _hidden(element: etree._Element) -> bool:
    style = element.get("style")
    return (style is not None and "display:none" in style.replace(" ", "").lower()
            or element.get("data-text") == "skip" or element.get("aria-hidden") == "true" and element.tag != "img")


def _number(value: str | None) -> int | None:
    try:
        return int(value.strip()) if value is not None else None
    except ValueError:
        return None


class _Writer:
    """Walks a document into text pieces; `template`: the document is a compiled template."""

    def __init__(self, template: bool) -> None:
        self.template = template
        self.counters = 0   # the Jinja counters of ordered lists, named _lm_ol1, _lm_ol2...
        self.cells = 0      # how many cells of data tables the walk is in

    def walk(self, element: etree._Element, parts: list[str]) -> None:
        append = parts.append
        in_list = element.tag in _LISTS  # the white space between items is not a line of its own
        for node in element.iterchildren():
            tag = node.tag
            if isinstance(tag, str):
                if tag not in _SKIP and not _hidden(node):
                    self.element(node, parts)
                else:
                    _placeholders(node, parts)  # its text is left out, not the template code in it
            elif tag is etree.Comment:
                text = node.text
                if text and _PLACEHOLDER.match(text):
                    append(text)
            tail = node.tail
            if tail and not (in_list and tail.isspace()):
                append(tail)

    def element(self, node: etree._Element, parts: list[str]) -> None:
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
            if not self.cells:
                parts.append("\n" + "-" * 40 + "\n")
            return
        if tag in _LISTS:
            self.list(node, parts)
            return
        if tag == "table" and _data_table(node):
            self.table(node, parts)
            return
        if tag == "li":  # outside a list
            parts.append("\n" + self.item(node, "- ", 2) + "\n")
            return
        block = tag in _BLOCKS
        if block:
            parts.append("\n")
        if tag in ("td", "th"):
            parts.append(" ")
        start = len(parts)
        if node.text:
            parts.append(node.text)
        self.walk(node, parts)
        if tag == "a":
            _link(node, parts, start)
        elif tag in ("h1", "h2") and not self.cells:
            heading = _SPACES.sub(" ", "".join(parts[start:])).strip()
            parts.append("\n" + ("=" if tag == "h1" else "-") * max(len(heading), 3))
        if block:
            parts.append("\n")
            if tag in ("p", "h1", "h2", "h3", "table", "blockquote"):
                parts.append("\n")

    def table(self, node: etree._Element, parts: list[str]) -> None:
        """A data table: a blank line, its caption and each row on a line of their own (a row's
        cells marked for `settle` to join), a blank line."""
        parts.append("\n")
        self.rows(node, parts)
        parts.append("\n\n")

    def rows(self, node: etree._Element, parts: list[str]) -> None:
        """The rows of a data table or of its <thead>, <tbody> or <tfoot>."""
        def child(element: etree._Element) -> None:
            tag = element.tag
            if tag in ("thead", "tbody", "tfoot"):
                self.rows(element, parts)
            elif tag == "tr":
                parts.append("\n")
                self.row(element, parts)
            elif tag == "caption":
                parts.append("\n" + self.cell(element))
            else:
                self.element(element, parts)
        _table_children(node, parts, child)

    def row(self, node: etree._Element, parts: list[str]) -> None:
        """A row of a data table on one line, each cell's text after a `CELL` mark."""
        _table_children(node, parts,
                        lambda cell: parts.append((CELL if cell.tag in _CELLS else "") + self.cell(cell)))

    def cell(self, node: etree._Element) -> str:
        """The text of a data table's cell on one line: its paragraphs, line breaks and list
        items run on with a space, headings not underlined."""
        parts: list[str] = [node.text] if node.text else []
        self.cells += 1
        try:
            self.walk(node, parts)
        finally:
            self.cells -= 1
        text = "".join(parts)
        for mark in (INDENT, ITEM):
            text = text.replace(mark, "")
        return text.replace("\n", " ")

    def list(self, node: etree._Element, parts: list[str]) -> None:
        """A blank line, each item on its own lines (a number or "- " first), a blank line."""
        ordered = node.tag == "ol"
        number = (_number(node.get("start")) or 1) - 1
        counter = ""
        if ordered and self.template and self._varies(node):
            self.counters += 1
            counter = f"_lm_ol{self.counters}"
            parts.append(_code(f"{{% set {counter} = namespace(n={number}) %}}"))
        parts.append("\n")
        if node.text and not node.text.isspace():
            parts.append(node.text)
        for child in node.iterchildren():
            tag = child.tag
            if tag == "li":
                if _hidden(child):
                    _placeholders(child, parts)
                else:
                    value = _number(child.get("value"))
                    if not ordered:
                        marker = "- "
                    elif counter:
                        step = f"{counter}.n + 1" if value is None else str(value)
                        marker = _code(f"{{% set {counter}.n = {step} %}}{{{{ {counter}.n }}}}") + ". "
                    else:
                        number = number + 1 if value is None else value
                        marker = f"{number}. "
                    parts.append("\n" + self.item(child, marker, 3 if counter else len(marker)))
            elif isinstance(tag, str):
                if tag not in _SKIP and not _hidden(child):
                    self.element(child, parts)
                else:
                    _placeholders(child, parts)
            elif tag is etree.Comment and child.text and _PLACEHOLDER.match(child.text):
                parts.append(child.text)
            tail = child.tail
            if tail and not tail.isspace():
                parts.append(tail)
        parts.append("\n\n")

    def _varies(self, node: etree._Element) -> bool:
        """Whether template code among a list's items can change how many there are."""
        texts = [node.text or ""] + [child.tail or "" for child in node]
        return any(child.tag is etree.Comment and _PLACEHOLDER.match(child.text or "") for child in node) \
            or any("JX" in text for text in texts)

    def item(self, node: etree._Element, marker: str, width: int) -> str:
        """A list item's lines: the marker, then its text; the lines after the first indented by
        `width` (a blank one is left as indentation alone: `settle` drops it)."""
        parts: list[str] = [node.text] if node.text else []
        self.walk(node, parts)
        lines = [_SPACES.sub(" ", line).strip() for line in "".join(parts).split("\n")]
        while len(lines) > 1 and not lines[0]:
            del lines[0]  # an item that starts with a paragraph: its text after the marker
        while len(lines) > 1 and not lines[-1]:
            lines.pop()
        indent = INDENT * width
        return "\n".join([ITEM + marker + lines[0], *(indent + line for line in lines[1:])])


def _code(source: str) -> str:
    """Jinja code the text template adds, marked so that the compiler keeps it as code (`CODE`)
    where the text around it is printed as written."""
    return f"\ue002{source}\ue003"


def _table_children(node: etree._Element, parts: list[str], element: Callable[[etree._Element], None]) -> None:
    """A data table's part (the table, a row group, a row): its text, each child element shown
    by `element` (left out but for its placeholders when it is skipped or hidden), the
    placeholders between them, the text after each."""
    if node.text and not node.text.isspace():
        parts.append(node.text)
    for child in node.iterchildren():
        tag = child.tag
        if isinstance(tag, str):
            if tag in _SKIP or _hidden(child):
                _placeholders(child, parts)
            else:
                element(child)
        elif tag is etree.Comment and child.text and _PLACEHOLDER.match(child.text):
            parts.append(child.text)
        tail = child.tail
        if tail and not tail.isspace():
            parts.append(tail)


def _data_table(table: etree._Element) -> bool:
    """Whether a table holds data, its rows to be read as lines: not a layout table (a table with
    role="presentation" or "none", or one with a table inside it), and one with a <caption> or a
    <thead>, or with a row where two cells have text (images alone are not text; in a compiled
    template a placeholder that prints a value is)."""
    if (table.get("role") or "").strip().lower() in ("presentation", "none"):
        return False
    if next(table.iterdescendants("table"), None) is not None:
        return False
    if next(table.iterdescendants("caption", "thead"), None) is not None:
        return True
    return any(sum(1 for cell in row if cell.tag in _CELLS and _has_text(cell)) >= 2
               for row in table.iterdescendants("tr"))


def _has_text(node: etree._Element) -> bool:
    return any(not text.isspace() for text in node.itertext() if text)


def _placeholders(node: etree._Element, parts: list[str]) -> None:
    """The template placeholders in a part of the document the text leaves out (<head>, a hidden
    element, what stands outside <body>): a statement there (`{% set %}`, `{% if %}`) still runs.
    The code in a `<title>` is its text, not comments: that text is run and its output dropped
    when the text is settled, so a `{% block %}` there is defined for `self.name()`."""
    for found in node.iter(etree.Comment, "title"):
        text = found.text
        if found.tag == "title":
            if text and _IN_TEXT.search(text):
                parts.append(f"{LEFT_OUT_START}{text}{LEFT_OUT_END}")
        elif text and _PLACEHOLDER.match(text):
            parts.append(text)


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
        _trim_label(parts, start)
        parts.append(f" ({href})")
    else:
        parts.append(href)


_HTML_SPACE = " \t\n\r\f"


def _trim_label(parts: list[str], start: int) -> None:
    """A link's label without the line breaks the source writes around it (`<a href="...">` and
    `</a>` on lines of their own): its `(url)` follows the label on its line, and a label that
    starts on the next line in the source starts after a space."""
    end = len(parts)
    while end > start and not parts[end - 1].strip(_HTML_SPACE):
        end -= 1
        parts[end] = ""
    if end > start:
        parts[end - 1] = parts[end - 1].rstrip(_HTML_SPACE)
    first = start
    while first < end and not parts[first]:
        first += 1
    if first < end:
        text = parts[first]
        body = text.lstrip(_HTML_SPACE)
        if "\n" in text[:len(text) - len(body)]:
            parts[first] = " " + body

"""Elements nested past what lxml's HTML parser takes.

libxml2 (lxml's parser, which premailer uses) stops a document at 255 nested elements and drops
everything after that point, closing tags and all: the rest of the email, its footer and
unsubscribe link included, would be lost without an error. A template that nests that deep is an
error at the line where the limit is reached."""

from __future__ import annotations

from lxml import etree

MAX_DEPTH = 255  # libxml2's limit without XML_PARSE_HUGE, which premailer does not set


class NestedTooDeep(Exception):
    """A document nested past MAX_DEPTH; `line` and `column` are where the parser stopped
    (1-based; the column 0 when unknown)."""

    def __init__(self, line: int, column: int = 0) -> None:
        super().__init__(f"line {line}: elements nested more than {MAX_DEPTH} deep")
        self.line, self.column = line, column

    def offset_in(self, document: str) -> int | None:
        """Where the parser stopped in `document`, when the column is known."""
        lines = document.split("\n")
        if not (0 < self.line <= len(lines) and 0 < self.column <= len(lines[self.line - 1]) + 1):
            return None
        return sum(len(text) + 1 for text in lines[:self.line - 1]) + self.column - 1


def message() -> str:
    return (f"elements nested more than {MAX_DEPTH} deep: the HTML parser of the CSS inliner stops "
            "there and drops the rest of the email (its footer and unsubscribe link included); "
            "close the elements you open, or nest fewer tables and divs")


def check_parsed(parser: etree.HTMLParser) -> None:
    """Raise NestedTooDeep if the last document `parser` read hit the nesting limit."""
    for entry in parser.error_log:
        if entry.type_name == "ERR_RESOURCE_LIMIT" and "depth" in entry.message:
            raise NestedTooDeep(entry.line, entry.column)


def parse(document: str) -> etree._Element:
    """`document` parsed as premailer parses it; NestedTooDeep when it nests past the limit."""
    parser = etree.HTMLParser()
    root = etree.fromstring(document, parser)
    check_parsed(parser)
    return root

"""Bounds on one render: how long it may run and how large its values and its output may grow.

Jinja's sandbox keeps a template away from Python internals, not from running forever or filling
memory. `TemplateSandbox` (renderer.py) asks a `RenderLimits` at every call, at every loop
iteration and at every `*`, `**`, `+`, `%` and `~`; the renderer starts the clock once per email
and counts the output while it is produced. Past a limit, `RenderLimitExceeded`: a Jinja runtime
error, so it is reported with the template's file and line like any other.

Not bounded: a single filter call asked for a huge result (`'x'|center(10**10)`) allocates it at
once; Python's MemoryError is then reported as a template error.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Iterable, Iterator
from time import monotonic
from typing import Any

import jinja2
from jinja2.utils import generate_lorem_ipsum

from ..errors import TemplateError

MAX_INT_DIGITS = 4300           # Python's own limit for converting an int to text
_SIZED = (str, list, tuple)
_WIDE_FORMAT = re.compile(r"%[-+ #0]*(?:\*|\d{7,})|%[-+ #0]*\d*\.(?:\*|\d{7,})")
MAX_LIPSUM_PARAGRAPHS, MAX_LIPSUM_WORDS = 100, 1000

# A template fault that is not Jinja's own: each is the template's doing (a number too large to
# format, an int in a string, recursion without end), reported with its file and line.
TEMPLATE_FAULTS: tuple[type[Exception], ...] = (
    ArithmeticError, LookupError, TypeError, ValueError, RecursionError, MemoryError)


class RenderLimitExceeded(jinja2.TemplateRuntimeError):
    """A render went past `rendering.timeout` or `rendering.max_bytes`."""


class RenderLimitError(TemplateError):
    """The TemplateError of a render stopped at a limit (`check` renders such an email once)."""


class RenderLimits:
    """The limits of the render in progress; `start()` begins one (the environment renders one
    email at a time)."""

    __slots__ = ("timeout", "max_bytes", "deadline")

    def __init__(self, timeout: float = math.inf, max_bytes: int = sys.maxsize) -> None:
        self.timeout, self.max_bytes = timeout, max_bytes
        self.deadline = math.inf

    def start(self) -> None:
        self.deadline = monotonic() + self.timeout

    def check_time(self) -> None:
        if monotonic() > self.deadline:
            raise RenderLimitExceeded(self.too_slow())

    def too_slow(self) -> str:
        return f"rendering took longer than rendering.timeout ({self.timeout:g} s)"

    def iterate(self, iterable: Iterable[Any]) -> Iterator[Any]:
        """`iterable`, checking the clock before each item (a loop of loops has no other call)."""
        deadline = self.deadline
        for item in iterable:
            if monotonic() > deadline:
                raise RenderLimitExceeded(self.too_slow())
            yield item

    def check_size(self, size: int, what: str = "a value") -> None:
        if size > self.max_bytes:
            raise RenderLimitExceeded(f"{what} would be {size:,} characters, more than "
                                      f"rendering.max_bytes ({self.max_bytes:,})")

    def check_output(self, text: str) -> str:
        """A rendered part: at most `max_bytes` once encoded as UTF-8."""
        if len(text) * 4 > self.max_bytes and len(text.encode("utf-8", "surrogatepass")) > self.max_bytes:
            raise RenderLimitExceeded(f"the rendered email is larger than rendering.max_bytes "
                                      f"({self.max_bytes:,} bytes)")
        return text

    def check_binop(self, operator: str, left: Any, right: Any) -> None:
        """Refuse `*`, `**`, `+` and `%` whose result would be too large, before computing it."""
        if operator == "*":
            if isinstance(right, int) and isinstance(left, _SIZED):
                self.check_size(len(left) * right)
            elif isinstance(left, int) and isinstance(right, _SIZED):
                self.check_size(left * len(right))
            elif isinstance(left, int) and isinstance(right, int):
                _check_digits((left.bit_length() + right.bit_length()) * math.log10(2))
        elif operator == "**":
            if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
                _check_digits(right * math.log10(abs(left)))
        elif operator == "+":
            if isinstance(left, _SIZED) and isinstance(right, _SIZED):
                self.check_size(len(left) + len(right))
        elif operator == "%" and isinstance(left, str) and _WIDE_FORMAT.search(left):
            raise RenderLimitExceeded("a % format with a width or precision of a million or more, "
                                      "or given by *, is not allowed in templates")

    def checked_text(self, value: Any) -> Any:
        """The result of `~`, refused when larger than `max_bytes`."""
        self.check_size(len(value), "a joined text")
        return value


def _check_digits(digits: float) -> None:
    if digits > MAX_INT_DIGITS:
        raise RenderLimitExceeded(f"a number of about {digits:,.0f} digits (templates allow "
                                  f"{MAX_INT_DIGITS:,})")


def bounded_lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # noqa: A002
    """Jinja's `lipsum()`, with at most 100 paragraphs of at most 1,000 words."""
    if n > MAX_LIPSUM_PARAGRAPHS or max > MAX_LIPSUM_WORDS:
        raise RenderLimitExceeded(f"lipsum() allows at most {MAX_LIPSUM_PARAGRAPHS} paragraphs of "
                                  f"{MAX_LIPSUM_WORDS} words")
    return generate_lorem_ipsum(n, html, min, max)

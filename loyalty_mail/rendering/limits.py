"""Bounds on one render: how long it may run and how large its values and its output may grow.

Jinja's sandbox keeps a template away from Python internals, not from running forever or filling
memory. `TemplateSandbox` (renderer.py) asks a `RenderLimits` at every call, at every loop
iteration and at every `*`, `**`, `+`, `%` and `~`; the renderer starts the clock once per email
and counts the output while it is produced. Past a limit, `RenderLimitExceeded`: a Jinja runtime
error, so it is reported with the template's file and line like any other.

The filters and text methods that build a result much larger than their input (`join`, `center`,
`indent`, `replace`, `format`, `wordwrap`; `str.join`, `ljust`, `rjust`, `center`, `zfill`,
`replace`, `expandtabs`, `format`) are measured before they run (`BOUNDED_FILTERS`,
`RenderLimits.check_call`).
"""

from __future__ import annotations

import functools
import math
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from time import monotonic
from typing import Any

import jinja2
from jinja2 import filters as jinja_filters
from jinja2.utils import generate_lorem_ipsum

from ..errors import TemplateError

MAX_INT_DIGITS = 4300           # Python's own limit for converting an int to text
_SIZED = (str, list, tuple)
_WIDE_FORMAT = re.compile(r"%[-+ #0]*(?:\*|\d{7,})|%[-+ #0]*\d*\.(?:\*|\d{7,})")
_WIDE_BRACES = re.compile(r"\{[^{}]*:[^{}]*(?:\d{7,}|\{)")  # `'{:>99999999}'.format(x)`, a nested width
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

    def check_call(self, function: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        """Before a text method runs: refuse one whose result would pass `max_bytes`. Returns the
        arguments to call it with (an iterable given to `join` is read once, here)."""
        owner, name = getattr(function, "__self__", None), getattr(function, "__name__", "")
        if owner is None:  # the sandbox's own wrapper of str.format keeps the method as __wrapped__
            owner = getattr(getattr(function, "__wrapped__", None), "__self__", None)
        if not isinstance(owner, str):
            return args
        if name == "join" and args:
            items = list(self.iterate(args[0]))
            self.check_size(_joined_size(owner, items), "a joined text")
            return (items, *args[1:])
        if name in ("ljust", "rjust", "center", "zfill") and args and isinstance(args[0], int):
            self.check_size(args[0])
        elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
            self.check_size(_replaced_size(owner, args[0], args[1], args[2] if len(args) > 2 else -1))
        elif name == "expandtabs":
            width = args[0] if args else kwargs.get("tabsize", 8)
            self.check_size(len(owner) + owner.count("\t") * max(int(width), 0))
        elif name in ("format", "format_map") and _WIDE_BRACES.search(owner):
            raise RenderLimitExceeded("a format with a width or precision of a million or more, or "
                                      "given by another field, is not allowed in templates")
        return args

    def checked_text(self, value: Any) -> Any:
        """The result of `~`, refused when larger than `max_bytes`."""
        self.check_size(len(value), "a joined text")
        return value


def _joined_size(separator: str, items: list[Any]) -> int:
    return sum(len(item) if isinstance(item, str) else len(str(item)) for item in items) + \
        len(separator) * max(len(items) - 1, 0)


def _replaced_size(text: str, old: str, new: str, count: int | None) -> int:
    found = text.count(old) if old else len(text) + 1
    if count is not None and count >= 0:
        found = min(found, count)
    return len(text) + found * max(len(new) - len(old), 0)


def _limits(environment: jinja2.Environment) -> RenderLimits:
    return getattr(environment, "limits", None) or RenderLimits()


def _bounded_join(original: Callable[..., Any]) -> Callable[..., Any]:
    @jinja2.pass_eval_context
    @functools.wraps(original)
    def join(eval_ctx: Any, value: Iterable[Any], d: str = "", attribute: Any = None) -> Any:
        limits = _limits(eval_ctx.environment)
        items = list(limits.iterate(value))
        measured = items if attribute is None else [jinja_filters.make_attrgetter(
            eval_ctx.environment, attribute)(item) for item in items]
        limits.check_size(_joined_size(str(d), measured), "a joined text")
        return original(eval_ctx, items, d, attribute)
    return join


def _bounded_width(original: Callable[..., Any]) -> Callable[..., Any]:
    """center(width) and indent(width): the result is about the text plus `width` a line."""
    @jinja2.pass_environment
    @functools.wraps(original)
    def widened(environment: jinja2.Environment, value: Any, width: Any = 4, *args: Any, **kwargs: Any) -> Any:
        text = str(value)
        pad = width if isinstance(width, int) else len(str(width))
        _limits(environment).check_size(len(text) + max(pad, 0) * (text.count("\n") + 1))
        return original(value, width, *args, **kwargs)
    return widened


def _bounded_replace(original: Callable[..., Any]) -> Callable[..., Any]:
    @jinja2.pass_eval_context
    @functools.wraps(original)
    def replace(eval_ctx: Any, s: Any, old: Any, new: Any, count: int | None = None) -> Any:
        _limits(eval_ctx.environment).check_size(_replaced_size(str(s), str(old), str(new), count))
        return original(eval_ctx, s, old, new, count)
    return replace


def _bounded_format(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def format_(value: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(value, str) and _WIDE_FORMAT.search(value):
            raise RenderLimitExceeded("a % format with a width or precision of a million or more, "
                                      "or given by *, is not allowed in templates")
        return original(value, *args, **kwargs)
    return format_


def _bounded_wordwrap(original: Callable[..., Any]) -> Callable[..., Any]:
    @jinja2.pass_environment
    @functools.wraps(original)
    def wordwrap(environment: jinja2.Environment, s: Any, width: int = 79, break_long_words: bool = True,
                 wrapstring: str | None = None, break_on_hyphens: bool = True) -> Any:
        text, joint = str(s), wrapstring if wrapstring is not None else environment.newline_sequence
        lines = len(text) // max(int(width), 1) + text.count("\n") + 1
        _limits(environment).check_size(len(text) + lines * len(str(joint)))
        return original(environment, s, width, break_long_words, wrapstring, break_on_hyphens)
    return wordwrap


# Jinja's filters that can build a result far larger than their input, measured before they run.
BOUNDED_FILTERS: dict[str, Callable[..., Any]] = {
    "join": _bounded_join(jinja_filters.do_join),
    "center": _bounded_width(jinja_filters.do_center),
    "indent": _bounded_width(jinja_filters.do_indent),
    "replace": _bounded_replace(jinja_filters.do_replace),
    "format": _bounded_format(jinja_filters.do_format),
    "wordwrap": _bounded_wordwrap(jinja_filters.do_wordwrap),
}


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

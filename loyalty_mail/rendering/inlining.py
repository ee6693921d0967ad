"""CSS inlining with premailer, done once per template with the Jinja syntax protected.

premailer on every email costs milliseconds; a send should only run a compiled Jinja template.
`compile_inlined(source)` swaps every Jinja construct for an inert placeholder (an HTML comment
for statements between elements, a plain token elsewhere), runs premailer once, marks the links
for click tracking, and swaps the Jinja back. Where the result could differ from "render, then
inline" (a class, id or style that depends on data, template code inside a tag or a `<style>`,
an attribute selector reading an attribute that holds data, a control block that opens and
closes tags unevenly, sibling selectors next to loops, macros, `{% set %}` or `{% call %}` blocks
whose elements match context-dependent selectors, a `<style>` inside a condition, a loop or such
a definition, markup printed from data or rewritten by a filter, held in a `{% set %}` variable or
passed to a macro, a block whose tags the HTML parser puts in different elements, a statement
right after a `<style>` premailer removes with the text after it, or premailer moving a placeholder) it raises `NeedsFallback` with the line and the reason, and
the template is inlined per email instead (`replay`: premailer's steps on each rendered email,
the stylesheet compiled once). Only markup that can be printed is judged: a macro definition
that nothing printed calls (`jinja_source.without_unused_macros`) is left out first.
"""

from __future__ import annotations

import html
import html.parser
import itertools
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cssselect
import cssselect.parser
import cssutils
import jinja2
import lxml.etree
import lxml.html
import premailer
from lxml.cssselect import CSSSelector

from .cascade import PREMAILER_OPTIONS, Restyler, Unplannable, plan, subjects
from .links import Replace, rewrite_tree
from .replay import CompiledInliner
from .text import CODE
from .flatten import Placed, definitions_in_body
from .jinja_source import Construct, constructs, names_read, string_value, without_unused_macros

_TOKEN = re.compile(r"<!--JX(\d+)X-->|JX(\d+)X")
_OPENERS = {"if": ("endif",), "for": ("endfor",), "macro": ("endmacro",), "call": ("endcall",),
            "filter": ("endfilter",), "with": ("endwith",), "block": ("endblock",),
            "autoescape": ("endautoescape",), "set": ("endset",)}  # set: a set block (`_opens`)
_BRANCHES = {"elif", "else"}
_CLOSERS = {end for ends in _OPENERS.values() for end in ends}
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
         "track", "wbr", "!doctype"}
_DATA_ATTRIBUTES = {"class", "id", "style"}
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
_STYLE_BLOCK = re.compile(r"<style[^>]*>(.*?)</style>", re.IGNORECASE | re.DOTALL)

OPEN_PIXEL = ('{% if tracking %}<img src="{{ open_pixel_url() }}" width="1" height="1" alt="" '
              'style="display:block;border:0;width:1px;height:1px">{% endif %}')
# autoescape: data in an href is escaped as HTML in the text part too, so decoding once gives the same URL
TRACK_FILTER = "{%% autoescape true %%}{%% filter track_link(%d) %%}%s{%% endfilter %%}{%% endautoescape %%}"
TRACK_CONSTANT = "{{ '%s' | track_link(%d) }}"
TRACK_VALUE = "{{ (%s) | track_value(%d) }}"  # an href that is one expression


class NeedsFallback(Exception):
    """Compile-time inlining would not match rendering then inlining; says where and why."""

    def __init__(self, line: int, reason: str, offset: int | None = None, code: str | None = None) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line, self.reason = line, reason
        self.offset, self.code = offset, code  # where the template code it is about starts, and that code


@dataclass
class Protected:
    """HTML with placeholders, and the Jinja source each placeholder stands for."""

    html: str
    originals: dict[int, str] = field(default_factory=dict)
    lines: dict[int, int] = field(default_factory=dict)
    offsets: dict[int, int] = field(default_factory=dict)   # where each construct starts in the source
    statements: set[int] = field(default_factory=set)
    content_expressions: set[int] = field(default_factory=set)
    keywords: dict[int, str] = field(default_factory=dict)   # a statement's tag: if, for, macro...
    calls: dict[int, str] = field(default_factory=dict)      # `{{ card(x) }}` -> card, `{{ s }}` (a set block) -> s
    macro_names: dict[int, str] = field(default_factory=dict)  # `{% macro card(v) %}` -> card, `{% set s %}` -> s
    expressions: dict[int, str] = field(default_factory=dict)  # `{{ a.b | f }}` -> `a . b | f`
    markup: dict[int, str] = field(default_factory=dict)  # code that prints markup not written here: how
    data_in: dict[str, int] = field(default_factory=dict)  # attribute names holding code -> first line
    data_at: dict[str, int] = field(default_factory=dict)  # and -> where that code starts in the source


def inline_css(document: str) -> str:
    """premailer with the project's options: the reference inliner (compile time, `check`'s
    comparison, the tests); the per-email path (`replay`) writes the same bytes."""
    return premailer.Premailer(document, **PREMAILER_OPTIONS).transform()


def line_of(source: str, offset: int) -> int:
    return source.count("\n", 0, offset) + 1


def _offset_of(source: str, text: str) -> int | None:
    """Where `text` is first written in `source`; None when it is not."""
    at = source.find(text)
    return at if at >= 0 else None


def protect(source: str, *, data_attributes: bool = False) -> Protected:
    """Replace each Jinja construct (found by Jinja's lexer) by a placeholder that premailer
    passes through untouched; where each one sits in the HTML (text, an attribute, a comment,
    a <style>) is read by lxml's HTML parser, Outlook's conditional comments included. With
    `data_attributes`, template code in a class, id or style attribute is not a reason to fall
    back (its placeholder stays in the value)."""
    try:
        found = [c for c in constructs(source) if c.kind != "comment"]
    except jinja2.TemplateSyntaxError as exc:
        raise NeedsFallback(exc.lineno or 1, f"Jinja cannot read this source: {exc.message}") from None
    places = _located(source, found)
    markup_names = _markup_names(found)
    held = _markup_held(found, markup_names)
    set_blocks = {c.args[0][1] for c in found if c.is_set_block and c.args and c.args[0][0] == "name"}
    result = Protected(html="")
    forms: dict[int, str] = {}
    for number, construct in enumerate(found):
        line, place = construct.line, places.get(number, "tag")
        if place == "raw:style":
            raise NeedsFallback(line, "template code inside <style>: the CSS depends on data", construct.start)
        if place == "raw:script":
            raise NeedsFallback(line, "template code inside <script>", construct.start)
        if place.removeprefix("raw:") in _REWRITTEN_RAW:
            raise NeedsFallback(line, f"template code inside <{place.removeprefix('raw:')}>, whose text the CSS "
                                "inliner writes back escaped", construct.start)
        if place == "after":
            raise NeedsFallback(line, "template code after </html>, outside the document the CSS inliner "
                                "reads (move it before </body>)", construct.start)
        if place == "tag":
            raise NeedsFallback(line, "template code inside a tag, outside an attribute value: "
                                "the element's attributes depend on data", construct.start)
        if place.removeprefix("attr:") in _DATA_ATTRIBUTES and not data_attributes:
            raise NeedsFallback(line, f"the {place.removeprefix('attr:')} attribute depends on data, so "
                                "which CSS rules apply is only known after rendering", construct.start)
        result.originals[number], result.lines[number] = construct.code(source), line
        result.offsets[number] = construct.start
        if place.startswith("attr:"):
            result.data_in.setdefault(place.removeprefix("attr:"), line)
            result.data_at.setdefault(place.removeprefix("attr:"), construct.start)
        result.keywords[number], result.calls[number] = construct.keyword, construct.called
        if construct.kind == "expression" and len(construct.tokens) == 1 and construct.tokens[0][1] in set_blocks:
            result.calls[number] = construct.tokens[0][1]  # prints the set block's markup
        if construct.kind == "expression" and construct.tokens:
            result.expressions[number] = " ".join(value for _, value in construct.tokens)
        how = _prints_markup(construct, markup_names, held)
        if how and place == "content":
            result.markup[number] = f"{how}, whose elements only exist after rendering, so only then can CSS " \
                                    "rules style them"
        elif how and place.startswith("attr:") and not _inert_in_attribute(construct):
            result.markup[number] = f"{how} into the {place.removeprefix('attr:')} attribute, where a quote " \
                                    "in it ends the value and the rest becomes attributes CSS rules can read"
        if (construct.keyword == "macro" or construct.is_set_block) and construct.args:
            result.macro_names[number] = construct.args[0][1]
        if place == "content" and construct.kind == "statement":
            result.statements.add(number)
            forms[number] = f"<!--JX{number}X-->"
        elif place == "content":
            result.content_expressions.add(number)
    result.html = _with_placeholders(source, found, forms)
    return result


def _located(source: str, found: list[Construct]) -> dict[int, str]:
    """Where each construct sits. A control statement among the text is read again as the HTML
    comment it becomes, because as text it changes the page: one in <head> starts the body
    early, and the parser then drops the attributes of the real <body> tag, placeholders and all."""
    places = _places(_with_placeholders(source, found, {}))
    forms = {number: f"<!--JX{number}X-->" for number, construct in enumerate(found)
             if construct.kind == "statement" and places.get(number) == "content"}
    if not forms:
        return places
    return {**_places(_with_placeholders(source, found, forms)), **dict.fromkeys(forms, "content")}


_MARKUP_FILTERS = frozenset({"safe", "urlize"})  # filters whose output can hold elements


def _markup_names(found: list[Construct]) -> frozenset[str]:
    """The names whose value is markup written in the source: the macros defined there,
    `caller`, and the variables a `{% set name %}...{% endset %}` block assigns."""
    names = {"caller"}
    for construct in found:
        if construct.keyword == "macro" and construct.args:
            names.add(construct.args[0][1])
        elif construct.keyword == "set" and len(construct.args) == 1 and construct.args[0][0] == "name":
            names.add(construct.args[0][1])
    return frozenset(names)


def _names(tokens: tuple[tuple[str, str], ...]) -> list[str]:
    """The variable names code reads: name tokens not after `.` (`member.frag` reads `member`)."""
    return [value for index, (kind, value) in enumerate(tokens)
            if kind == "name" and (index == 0 or tokens[index - 1] != ("operator", "."))]


def _markup_held(found: list[Construct], markup_names: frozenset[str]) -> frozenset[str]:
    """The names `{% set name = ... %}` gives markup: a value through `| safe` or `| urlize`, a
    macro's output, `caller()`, a `{% set %}` block's markup, or another such name."""
    held: set[str] = set()
    assignments = [c.args for c in found if c.keyword == "set" and ("operator", "=") in c.args]
    grown = True
    while grown:
        grown = False
        for args in assignments:
            split = args.index(("operator", "="))
            targets, value = set(_names(args[:split])) - held, args[split + 1:]
            filters = {name for (_, before), (kind, name) in zip(value, value[1:]) if before == "|" and kind == "name"}
            if targets and (filters & _MARKUP_FILTERS or set(_names(value)) & (markup_names | held)):
                held |= targets
                grown = True
    return frozenset(held)


def _inert_in_attribute(construct: Construct) -> bool:
    """`'text' | safe` in an attribute value, its text holding no quote, angle bracket or space:
    printed as written, as premailer reads the placeholder."""
    tokens = construct.tokens
    value = string_value(tokens[0]) if len(tokens) == 3 and tokens[1:] == (("operator", "|"), ("name", "safe")) \
        else None
    return value is not None and not any(c in value for c in "\"'<>`") and not any(c.isspace() for c in value)


def _prints_markup(construct: Construct, markup_names: frozenset[str],
                   held: frozenset[str] = frozenset()) -> str | None:
    """How a construct can print elements that are not in the source as premailer sees it
    (so premailer can only style them after rendering): `| safe`, `| urlize`, a filter on
    markup the source writes (a macro's output, `caller()`, a `{% set %}` block's), a name
    `{% set %}` gave markup (`held`), markup passed to a macro (printed inside it), `{% autoescape
    false %}`, or a `{% filter %}` block that rewrites the markup inside it; None when it cannot."""
    tokens = construct.tokens
    filters = [name for (_, before), (kind, name) in zip(tokens, tokens[1:]) if before == "|" and kind == "name"]
    if construct.kind == "expression":
        for name in filters:
            if name in _MARKUP_FILTERS:
                return f"`| {name}` prints markup"
        read = _names(tokens)
        source = next((value for value in read if value in markup_names), None)
        if filters and source is not None:
            return f"`| {filters[0]}` rewrites the markup of `{source}`"
        variable = next((value for value in read if value in held), None)
        if variable is not None:
            return f"`{variable}` holds markup (a `{{% set %}}` of a macro's output or of `| safe`) and is printed here"
        passed = _markup_argument(tokens, markup_names | held)
        if passed is not None:
            return f"markup (`{passed}`) is passed to a macro that prints it"
    elif construct.keyword == "call" and (passed := _markup_argument(construct.args, markup_names | held)):
        return f"markup (`{passed}`) is passed to a macro that prints it"
    elif construct.keyword == "autoescape" and construct.args != (("name", "true"),):
        return "`{% autoescape %}` without true prints data as markup"
    elif construct.keyword == "filter" or (construct.keyword == "set" and filters
                                           and ("operator", "=") not in tokens):  # `{% set b | f %}`
        return f"a `{{% {construct.keyword} %}}` block with a filter rewrites the markup inside it"
    return None


def _markup_argument(tokens: tuple[tuple[str, str], ...], markup: frozenset[str]) -> str | None:
    """The first name holding markup among the arguments of a call (after its first `(`)."""
    if ("operator", "(") not in tokens:
        return None
    arguments = tokens[tokens.index(("operator", "(")) + 1:]
    return next((name for name in _names(arguments) if name in markup), None)


def printed_markup(protected: Protected) -> NeedsFallback | None:
    """The first construct that prints markup not written in the source, as a reason to inline
    per email (premailer must see those elements to style them); None when there is none."""
    if not protected.markup:
        return None
    number = min(protected.markup)
    return NeedsFallback(protected.lines[number], protected.markup[number], protected.offsets[number])


def _with_placeholders(source: str, found: list[Construct], forms: dict[int, str]) -> str:
    """The source with each construct replaced by its placeholder (`JXnX` unless `forms` says
    otherwise) and Jinja comments removed."""
    out, position = [], 0
    for number, construct in enumerate(found):
        out += [_without_comments(source[position:construct.start]), forms.get(number, f"JX{number}X")]
        position = construct.end
    out.append(_without_comments(source[position:]))
    return "".join(out)


def _without_comments(text: str) -> str:
    if "{#" not in text:
        return text
    comments = [c for c in constructs(text) if c.kind == "comment"]
    for comment in reversed(comments):
        text = text[:comment.start] + text[comment.end:]
    return text


# elements whose text the HTML parser reads as written; of those, the ones lxml writes back
# escaped, so premailer rewrites what Jinja prints into them (`&lt;` becomes `&amp;lt;`)
_REWRITTEN_RAW = {"xmp", "iframe", "noembed", "noframes", "plaintext"}
_RAW_TEXT = {"style", "script", "title", "textarea", *_REWRITTEN_RAW}
_IN_TEXT = re.compile(r"JX(\d+)X")
_IN_NAME = re.compile(r"jx(\d+)x", re.IGNORECASE)  # attribute names come back lower-cased


def _places(html: str) -> dict[int, str]:
    """Where the HTML parser puts each `JXnX`: content, comment, raw:style (and script, title,
    textarea), attr:NAME, tag (among attribute names), or after (the document's end); a placeholder the parser dropped is
    not in the answer."""
    places: dict[int, str] = {}

    def mark(text: str | None, place: str, pattern: re.Pattern[str] = _IN_TEXT) -> None:
        for match in pattern.finditer(text or ""):
            places.setdefault(int(match.group(1)), place)

    try:
        tree = lxml.html.document_fromstring(html)
    except (lxml.etree.ParserError, ValueError):
        return places
    root = tree.getroottree().getroot()
    for outside in root.itersiblings(preceding=True):
        mark(outside.text, "comment" if outside.tag is lxml.etree.Comment else "tag")
    for outside in root.itersiblings():
        mark(outside.text, "comment" if outside.tag is lxml.etree.Comment else "after")
    for element in root.iter():
        if element.tag is lxml.etree.Comment:
            mark(element.text, "comment")
        elif isinstance(element.tag, str):
            tag = element.tag.lower()
            mark(element.text, f"raw:{tag}" if tag in _RAW_TEXT else "content")
            for name, value in element.attrib.items():
                mark(name, "tag", _IN_NAME)
                mark(value, f"attr:{name.lower()}")
        else:
            mark(element.text, "tag")
        mark(element.tail, "content")
    return places


class _Structure(html.parser.HTMLParser):
    """The start tags, end tags and comments of an HTML document in order, as the standard
    library's tokenizer reads them (quoted `>` in attributes, comments, <style> and <script>)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.events: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _VOID:
            self.events.append(("open", tag))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        pass  # <br/>, <td/>: nothing stays open

    def handle_endtag(self, tag: str) -> None:
        self.events.append(("close", tag))

    def handle_comment(self, data: str) -> None:
        self.events.append(("comment", data))


def check_balanced(protected: Protected) -> None:
    """Every control block must open and close the same elements in each branch."""
    reader = _Structure()
    reader.feed(protected.html)
    reader.close()
    stream: list[tuple[int, str, str]] = []  # (position, kind, name)
    for position, (kind, name) in enumerate(reader.events):
        if kind == "comment":
            match = _IN_TEXT.fullmatch(name)
            if match is None:
                continue  # an HTML comment, Outlook's conditional ones included
            number = int(match.group(1))
            kind, name = "jinja", f"{protected.keywords[number]}:{number}"
        stream.append((position, kind, name))
    stack: list[str] = []
    for _offset, kind, name in stream:
        if kind == "open":
            stack.append(name)
        elif kind == "close":
            if name in stack:
                while stack and stack[-1] != name:
                    if stack[-1].startswith("jinja:"):
                        raise _unbalanced(protected, stack[-1])
                    stack.pop()  # implicitly closed element (e.g. <p>, <li>)
                stack.pop()
        else:
            keyword, index = name.split(":")
            if _opens(protected, int(index)):
                stack.append(f"jinja:{index}")
            elif keyword in _BRANCHES or keyword in _CLOSERS:
                while stack and not stack[-1].startswith("jinja:"):
                    raise NeedsFallback(protected.lines[int(index)],
                                        f"<{stack[-1]}> is opened in this control block but "
                                        "closed outside it, so the page structure depends on data", protected.offsets[int(index)])
                if keyword in _CLOSERS and stack:
                    stack.pop()


def check_block_places(page: Any, protected: Protected) -> None:
    """The tags of one block (`{% if %}`, its branches and `{% endif %}`; a loop, a macro, a set
    block...) must stand among the same siblings of the page premailer styles: one in another
    element (a `<p>` inside the block closes the `<p>` around it, as the HTML parser reads it) or
    in an Outlook conditional comment while another is outside it gives premailer a page that
    Jinja never prints."""
    where: dict[int, Any] = {}
    for node in page.iter():
        if node.tag is lxml.etree.Comment:
            match = _TOKEN.fullmatch(f"<!--{node.text}-->")
            if match and match.group(1):
                where[int(match.group(1))] = node.getparent()
            for inside in _IN_TEXT.finditer(node.text or ""):
                where.setdefault(int(inside.group(1)), node)   # in an HTML comment
        elif isinstance(node.tag, str):
            for name, value in node.attrib.items():
                for inside in _IN_TEXT.finditer(value):
                    where[int(inside.group(1))] = (node, name)
    stack: list[list[int]] = []
    for number in sorted(protected.keywords):
        keyword = protected.keywords[number]
        if _opens(protected, number):
            stack.append([number])
        elif keyword in _BRANCHES and stack:
            stack[-1].append(number)
        elif keyword in _CLOSERS and stack:
            tags = stack.pop() + [number]
            places = [where[n] for n in tags if n in where]
            if any(place is not places[0] and place != places[0] for place in places):
                raise NeedsFallback(protected.lines[tags[0]], "this block's tags stand in different elements "
                                    "(or in and out of an HTML comment) as the HTML parser reads the page, so "
                                    "its structure depends on data", protected.offsets[tags[0]])


def _unbalanced(protected: Protected, entry: str) -> NeedsFallback:
    number = int(entry.split(":")[1])
    return NeedsFallback(protected.lines[number],
                         "this control block closes an element opened before it, so the page "
                         "structure depends on data", protected.offsets[number])


def _opens(protected: Protected, number: int) -> bool:
    """Whether statement `number` opens a block (`{% set %}` only in its block form)."""
    keyword = protected.keywords.get(number, "")
    return keyword in _OPENERS and (keyword != "set" or number in protected.macro_names)


# Blocks whose markup is printed only for some emails, or elsewhere (where a macro is called,
# where a call block's macro calls `caller()`, where a set block's name is printed), or never
_PRINTED_ELSEWHERE = {"for", "if", "macro", "call", "set"}
_CONTROL_PLACES = {"for", "endfor", "if", "elif", "else", "endif", "macro", "endmacro", "call", "endcall",
                   "endset"}
_STRUCTURAL_ENDINGS = (":first-child", ":last-child")   # the pseudo-classes premailer inlines


def _style_selectors(protected: Protected) -> list[str]:
    """The selectors premailer inlines: style rules outside @media, pseudo-classes only where
    premailer keeps them (`:first-child`/`:last-child` at the end)."""
    cssutils.log.setLevel(logging.CRITICAL)
    found: list[str] = []
    for css in _STYLE_BLOCK.findall(protected.html):
        for rule in cssutils.parseString(css, validate=False).cssRules:
            if rule.type != rule.STYLE_RULE:
                continue  # @media, @import, @font-face: premailer leaves them in <style>
            for selector in (s.strip() for s in rule.selectorText.split(",")):
                if ":" in selector and ":" + selector.split(":", 1)[1] not in _STRUCTURAL_ENDINGS:
                    continue
                if selector and not selector.startswith(":"):
                    found.append(selector)
    return found


def _compounds(selector: str) -> tuple[list[str], list[str]]:
    """A selector's compounds as written, and the combinator between each two (" ", >, + or ~),
    read with cssselect's tokenizer: spaces and combinator characters inside an attribute's
    quoted value or brackets, or in a pseudo-class's parentheses, do not split it. No compounds
    for a selector cssselect cannot read."""
    try:
        tokens = list(cssselect.parser.tokenize(selector))
    except cssselect.SelectorError:
        return [], []
    compounds: list[str] = []
    combinators: list[str] = []
    depth, start, between = 0, 0, ""   # brackets open; where the compound starts; combinator seen
    for token in tokens:
        if token.type == "EOF" or (depth == 0 and (token.type == "S" or token.value in (">", "+", "~"))):
            if start < token.pos:
                if compounds:
                    combinators.append(between or " ")
                compounds.append(selector[start:token.pos])
                between = ""
            if token.type == "DELIM":
                between = token.value or ""
            start = token.pos + len(token.value or "")
        elif token.value in ("[", "("):
            depth += 1
        elif token.value in ("]", ")"):
            depth -= 1
    return compounds, combinators


def _has_combinator(selector: str) -> bool:
    return len(_compounds(selector)[0]) > 1


def _sibling_groups(selector: str) -> list[list[str]]:
    """The parts of a selector whose match depends on position among siblings: each run of
    compounds joined by + or ~ (they must share a parent), and each compound ending in
    :first-child/:last-child on its own; compounds given without that pseudo-class."""
    compounds, combinators = _compounds(selector)
    groups: list[list[str]] = []
    run: list[str] = []
    for index, compound in enumerate(compounds):
        bare = compound
        for ending in _STRUCTURAL_ENDINGS:
            if bare.endswith(ending):
                bare = bare[:-len(ending)] or "*"
                groups.append([bare])
        run.append(bare)
        if index == len(compounds) - 1 or combinators[index] not in "+~":
            if len(run) > 1:
                groups.append(run)
            run = []
    return groups


def _varying_parents(tree: lxml.html.HtmlElement, protected: Protected) -> set[lxml.html.HtmlElement]:
    """Elements whose children depend on data: a loop, a condition or a macro sits among them,
    or an expression that can print elements (a call, `| safe`)."""
    varying = set()
    for comment in tree.iter(lxml.etree.Comment):
        match = _TOKEN.fullmatch(f"<!--{comment.text}-->")
        number = int(match.group(1)) if match and match.group(1) else -1
        if protected.keywords.get(number) in _CONTROL_PLACES or number in protected.macro_names:
            parent = comment.getparent()
            if parent is not None:
                varying.add(parent)
    printing = {n for n in protected.content_expressions
                if protected.calls.get(n) or "safe" in protected.originals[n]}
    for element in tree.iter():
        texts = [element.text or ""] + [child.tail or "" for child in element]
        if any(f"JX{n}X" in text for n in printing for text in texts):
            varying.add(element)
    return varying


def check_selectors(protected: Protected, source: str) -> dict[str, int]:
    """The structural selectors (+, ~, :first-child, :last-child) that can match elements whose
    siblings a loop, a condition or a macro call changes, with their lines: evaluated on the
    placeholder DOM, so a rule that matches nothing, or only fixed markup, is inlined once like
    the others. Those *dynamic* rules are applied per email (`cascade`)."""
    selectors = _style_selectors(protected)
    structural = [(s, groups) for s in selectors if (groups := _sibling_groups(s))]
    dynamic: dict[str, int] = {}
    if structural:
        tree = lxml.html.document_fromstring(protected.html)
        varying = _varying_parents(tree, protected)
        for selector, groups in structural:
            for group in groups:
                try:
                    parents = [{e.getparent() for e in CSSSelector(compound)(tree)} for compound in group]
                except Exception:  # noqa: BLE001 - an unparseable selector is premailer's problem
                    continue
                if set.intersection(*parents) & varying:
                    dynamic[selector] = line_of(source, max(source.find(selector), 0))
                    break
    _check_attribute_selectors(protected, selectors)
    _check_conditional_styles(protected, source)
    _check_macro_call_sites(protected, [s for s in selectors if _has_combinator(s)])
    placed = [s for s in selectors if _has_combinator(s) or _sibling_groups(s)]
    _check_call_blocks(protected, placed)
    _check_blocks_printed_again(protected, source, placed)
    return dynamic


def _check_blocks_printed_again(protected: Protected, source: str, selectors: list[str]) -> None:
    """`{{ self.name() }}` prints a block's markup again, among other ancestors and siblings than
    where the block is written: a selector with a combinator, or one that counts siblings, can
    style it (and the elements around it) differently there than premailer sees in the source."""
    if not selectors:
        return
    names = names_read(source)
    if names is not None and "self" not in names:
        return
    reading = [n for n in sorted(protected.originals) if "self" in (names_read(protected.originals[n]) or ())]
    number = reading[0] if reading else None
    raise NeedsFallback(protected.lines[number] if number is not None else 1,
                        f"a block printed again with `self.<block>()` can be styled differently by the "
                        f"selector '{selectors[0]}' where it is printed again",
                        protected.offsets.get(number) if number is not None else None)


def _check_call_blocks(protected: Protected, selectors: list[str]) -> None:
    """A `{% call %}` block's markup is printed inside the macro, where it calls `caller()`, and
    the macro's elements where the block is: a selector with a combinator, or one that counts
    siblings, can style either differently there than premailer sees them in the source."""
    if not selectors:
        return
    for number in sorted(protected.statements):
        if protected.keywords[number] == "call":
            raise NeedsFallback(protected.lines[number], f"the selector '{selectors[0]}' can style the "
                                "markup of this `{% call %}` block and of its macro differently where "
                                "they are printed together", protected.offsets[number])


def _check_attribute_selectors(protected: Protected, selectors: list[str]) -> None:
    """A selector that reads an attribute (`a[href^=http]`, `[lang|=vi]`) whose value holds
    template code matches the rendered value, which only exists after rendering."""
    for selector in selectors:
        for name in _attributes_read(selector):
            if name in protected.data_in:
                raise NeedsFallback(protected.data_in[name], f"the {name} attribute depends on data and "
                                    f"the selector '{selector}' reads it, so whether it matches is only "
                                    "known after rendering", protected.data_at.get(name))


def _attributes_read(selector: str) -> set[str]:
    """The attribute names a selector's attribute matchers read, lower-cased (as the HTML parser
    writes them); none when it does not parse (premailer reports that)."""
    try:
        parsed = cssselect.parse(selector)
    except cssselect.SelectorError:
        return set()
    found: set[str] = set()
    nodes: list[Any] = [one.parsed_tree for one in parsed]
    while nodes:
        node = nodes.pop()
        if isinstance(node, cssselect.parser.Attrib):
            found.add(node.attrib.lower())
        for name in ("selector", "subselector"):
            child = getattr(node, name, None)
            if child is not None:
                nodes.append(child)
        nodes.extend(getattr(node, "selector_list", None) or [])
    return found


def _check_conditional_styles(protected: Protected, source: str) -> None:
    """A <style> inside a loop, a condition or a definition (a macro, a call block, a set block)
    applies only to the emails that print it."""
    for match in _STYLE_BLOCK.finditer(protected.html):
        before = protected.html[:match.start()]
        enclosing: list[str] = []
        for token in _TOKEN.finditer(before):
            if token.group(1):
                number = int(token.group(1))
                keyword = protected.keywords.get(number, "")
                if keyword in _PRINTED_ELSEWHERE and _opens(protected, number):
                    enclosing.append(keyword)
                elif keyword.startswith("end") and keyword[3:] in _PRINTED_ELSEWHERE and enclosing:
                    enclosing.pop()
        if enclosing:
            inside = _INSIDE[enclosing[-1]]
            at = _offset_of(source, match.group(0)[:40])
            raise NeedsFallback(line_of(source, at or 0), f"this <style> is inside {inside}, so its rules "
                                "apply only to the emails that print it", at)


_INSIDE = {"if": "a condition or loop", "for": "a condition or loop", "macro": "a macro (printed where it is "
           "called)", "call": "a call block (printed where its macro calls caller())",
           "set": "a set block (printed where its name is)"}


_START_TAG = re.compile(r"<([a-zA-Z][a-zA-Z0-9-]*)")


def _check_macro_call_sites(protected: Protected, selectors: list[str]) -> None:
    """premailer styles a macro's elements where the macro is defined. That is only right if
    every selector with a combinator matches them the same way at each place it is called:
    paste each macro's body at its call sites and compare which of those selectors match."""
    if not selectors:
        return
    bodies: dict[int, tuple[int, int]] = {}  # each definition's statement -> its body in the HTML
    for number, start_token, end_token in _macro_regions(protected):
        if protected.macro_names.get(number):
            bodies[number] = (protected.html.index(start_token) + len(start_token), protected.html.index(end_token))
    if not bodies:
        return
    document = _marked_definitions(protected.html, bodies)
    sites: dict[int, list[str]] = {}   # each definition -> the marks of the places it is printed
    for site, number in enumerate(sorted(protected.content_expressions)):
        called = protected.calls.get(number, "")
        definitions = [d for d in bodies if protected.macro_names[d] == called]
        if not definitions:
            continue
        at = protected.html.find(f"JX{number}X")
        # the definition in effect where it is called: the last one written before the call
        definition = max((d for d in definitions if bodies[d][0] < at), key=lambda d: bodies[d][0],
                         default=min(definitions, key=lambda d: bodies[d][0]))
        start, end = bodies[definition]
        sites.setdefault(definition, []).append(f"site-{site}")
        document = document.replace(f"JX{number}X", _mark(protected.html[start:end], f"site-{site}"), 1)
    tree = lxml.html.document_fromstring(document)
    for selector in selectors:
        try:
            matched = set(CSSSelector(selector)(tree))
        except Exception:  # noqa: BLE001 - an unparseable selector is premailer's problem, not ours
            continue
        for definition, marks in sites.items():
            expected = [e in matched for e in tree.xpath(f'//*[@data-jxm="def-{definition}"]')]
            for mark in marks:
                if [e in matched for e in tree.xpath(f'//*[@data-jxm="{mark}"]')] != expected:
                    raise NeedsFallback(protected.lines[definition], f"the selector '{selector}' styles elements of "
                                        f"the macro (or set block) '{protected.macro_names[definition]}' differently "
                                        "depending on where it is printed", protected.offsets[definition])


def _marked_definitions(html: str, bodies: dict[int, tuple[int, int]]) -> str:
    """The HTML with each start tag in a definition's body marked `def-N` (N: the innermost
    definition around it)."""
    edges = sorted({0, len(html), *(edge for body in bodies.values() for edge in body)})
    pieces = []
    for start, end in itertools.pairwise(edges):
        around = [d for d, (s, e) in bodies.items() if s <= start and end <= e]
        innermost = max(around, key=lambda d: bodies[d][0], default=None)
        pieces.append(html[start:end] if innermost is None else _mark(html[start:end], f"def-{innermost}"))
    return "".join(pieces)


def _mark(html: str, mark: str) -> str:
    return _START_TAG.sub(lambda m: f'<{m.group(1)} data-jxm="{mark}"', html)


def _macro_regions(protected: Protected) -> list[tuple[int, str, str]]:
    regions: list[tuple[int, str, str]] = []
    stack: list[int] = []
    for number in sorted(protected.statements):
        keyword = protected.keywords[number]
        if keyword == "macro" or _opens(protected, number) and keyword == "set":
            stack.append(number)
        elif keyword in ("endmacro", "endset") and stack:
            start = stack.pop()
            regions.append((start, f"<!--JX{start}X-->", f"<!--JX{number}X-->"))
    return regions


def prune_unmatchable_rules(source: str) -> str | None:
    """For the per-email path: the source with the style rules premailer would try on every
    email but that no element of this template can match (judged by the rightmost compound's
    element, classes and id), so a 1,400-rule framework stylesheet costs only the rules the
    email uses. An element whose class or id holds template code may have any class or id.
    None when that cannot be judged: template code inside <style> or among a tag's attributes,
    or markup printed from data (`printed_markup`). Only the `<style>` elements premailer reads
    are pruned, and only those that lose a rule are written again; a macro nothing calls is
    left out."""
    source = without_unused_macros(source)
    try:
        protected = protect(definitions_in_body(source).source, data_attributes=True)
    except NeedsFallback:
        return None
    if printed_markup(protected) is not None:
        return None
    blocks = _inlined_style_texts(source)
    if not blocks:
        return None
    tree = lxml.html.document_fromstring(protected.html)
    # premailer adds a <head> to a page without one
    present = [_present(e) for e in tree.iter() if isinstance(e.tag, str)] + [("head", set(), None, False)]
    cssutils.log.setLevel(logging.CRITICAL)
    pieces, position = [], 0
    for start, end in blocks:
        sheet = cssutils.parseString(source[start:end], validate=False)
        pruned = 0
        for rule in list(sheet.cssRules):
            if rule.type == rule.STYLE_RULE and not any(
                    _may_match(s.strip(), present) for s in rule.selectorText.split(",")):
                sheet.deleteRule(rule)
                pruned += 1
        if pruned:  # a block left whole keeps its text as written
            pieces += [source[position:start], sheet.cssText.decode("utf-8")]
            position = end
    if not pieces:
        return None
    pieces.append(source[position:])
    return "".join(pieces)


class _StyleTexts(html.parser.HTMLParser):
    """Where the text of each `<style>` element premailer inlines lies in an HTML source: not
    inside a comment (Outlook's conditional ones included), with no `media` or `all`/`screen`,
    and not `data-premailer="ignore"` (premailer leaves those as written)."""

    def __init__(self, source: str) -> None:
        super().__init__(convert_charrefs=True)
        self._lines = [0] + [match.end() for match in re.finditer("\n", source)]
        self._open: int | None = None
        self.spans: list[tuple[int, int]] = []

    def _offset(self) -> int:
        line, column = self.getpos()
        return self._lines[line - 1] + column

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "style":
            return
        named = dict(attrs)
        media = named.get("media")
        inlined = (not media or media in ("all", "screen")) and named.get(
            premailer.Premailer.attribute_name) != "ignore"
        text = self.get_starttag_text() or ""
        self._open = self._offset() + len(text) if inlined else None

    def handle_endtag(self, tag: str) -> None:
        if tag == "style" and self._open is not None:
            self.spans.append((self._open, self._offset()))
        if tag == "style":
            self._open = None


def _inlined_style_texts(source: str) -> list[tuple[int, int]]:
    """The (start, end) offsets in `source` of the `<style>` texts premailer inlines."""
    reader = _StyleTexts(source)
    reader.feed(source)
    reader.close()
    return reader.spans


_Present = tuple[str, "set[str] | None", "str | None", bool]  # tag, classes (None: any), id, any id


def _present(element: Any) -> _Present:
    """What a selector's subject can find on this element of the placeholder DOM."""
    written, ident = element.get("class"), element.get("id")
    classes = None if written and _IN_TEXT.search(written) else set((written or "").split())
    return element.tag, classes, ident, ident is not None and bool(_IN_TEXT.search(ident))


def _may_match(selector: str, present: list[_Present]) -> bool:
    """Whether some element could be the subject of `selector`; True when in doubt."""
    if ":" in selector and ":" + selector.split(":", 1)[1] not in _STRUCTURAL_ENDINGS:
        return True  # a pseudo-class rule premailer leaves in <style>: kept as written
    found = subjects(selector)
    if found is None:
        return True
    return any((tag == "*" or tag == t) and (c is None or classes <= c) and (ident is None or any_id or ident == i)
               for tag, classes, ident in found for t, c, i, any_id in present)


def unreadable_selector(source: str) -> tuple[str, int] | None:
    """The first selector of the source's `<style>` texts that premailer (through cssselect)
    cannot evaluate, read as premailer splits and trims it, with its line; None when there is
    none (or the text is not CSS at all)."""
    cssutils.log.setLevel(logging.CRITICAL)
    inliner = premailer.Premailer(**PREMAILER_OPTIONS)
    for start, end in _inlined_style_texts(source):
        try:
            rules, _ = inliner._parse_style_rules(source[start:end], 0)
        except Exception:  # noqa: BLE001 - CSS cssutils cannot read: not a selector to name
            continue
        for _, selector, _ in rules:
            bare, _, pseudo = selector.partition(":")
            if pseudo and ":" + pseudo not in premailer.premailer.FILTER_PSEUDOSELECTORS \
                    and not pseudo.startswith("nth-child"):
                selector = bare
            try:
                CSSSelector(selector)
            except (cssselect.SelectorError, RecursionError):  # the library recurses once per part
                at = source.find(selector.split(",")[0], start)
                return selector, line_of(source, at if 0 <= at < end else start)
    return None


@dataclass(frozen=True)
class CompiledHtml:
    """A Jinja HTML source with CSS inlined and links marked for tracking, plus its link count."""

    source: str
    links: int
    text_source: str
    restyler: Restyler | None = None   # rules applied per email on the rendered DOM
    dynamic: tuple[tuple[str, int], ...] = ()  # their selectors and lines


def compile_inlined(source: str, *, text_of: Callable[[str], str]) -> CompiledHtml:
    """Inline CSS once; raise NeedsFallback where that would not equal per-email inlining.
    Only markup that can be printed is looked at: a macro nothing calls is left out (its lines
    kept). The definitions written before the document are styled inside `<body>` and run first."""
    placed = definitions_in_body(without_unused_macros(source))
    try:
        return _compile_placed(placed, text_of)
    except NeedsFallback as exc:
        code = None if exc.offset is None else next(
            (c.code(placed.source) for c in constructs(placed.source) if c.start == exc.offset), None)
        offset = None if exc.offset is None else placed.original_offset(exc.offset)
        raise NeedsFallback(placed.original_line(exc.line, exc.offset), exc.reason, offset, code) from None


def _compile_placed(placed: Placed, text_of: Callable[[str], str]) -> CompiledHtml:
    source = placed.source
    protected = protect(source)
    markup = printed_markup(protected)
    if markup is not None:
        raise markup
    check_balanced(protected)
    dynamic = check_selectors(protected, source)
    tree, page, root = parse_document(protected.html)
    check_block_places(page, protected)
    try:
        restyler = plan(page, set(dynamic), _IN_TEXT) if dynamic else None
    except Unplannable as exc:
        selector, line = next(iter(dynamic.items()))
        raise NeedsFallback(line, f"the selector '{selector}' is applied per email, and {exc.reason}",
                            _offset_of(source, selector)) from None
    before_code = _styles_before_code(page, protected)
    premailer.Premailer(page, **PREMAILER_OPTIONS).transform()
    for style, number in before_code:
        if style.getparent() is None:
            raise NeedsFallback(protected.lines[number], "the CSS inliner removes the <style> before this "
                                "template code with the text that follows it as far as the next tag, and "
                                "which text that is is only known after rendering", protected.offsets[number])
    if restyler is not None:
        restyler.complete(page, _printed_elsewhere(page, protected, source))
    links, consumed = mark_links(page, protected)
    inlined = serialize(root)
    counts: dict[int, int] = {}

    def count(text: str) -> None:
        for match in _TOKEN.finditer(text):
            number = int(match.group(1) or match.group(2))
            if number in links:
                count(links[number])
            else:
                counts[number] = counts.get(number, 0) + 1

    count(inlined)
    for number in protected.originals:
        if number not in links and counts.get(number, 0) + consumed.count(number) != 1:
            raise NeedsFallback(protected.lines[number], "the CSS inliner moved or dropped this "
                                "template code (it can only be inlined after rendering)", protected.offsets.get(number))
    text = _with_code_placeholders(text_of(inlined), protected)
    pixel = max(protected.originals) + 1 if protected.originals else 0
    protected.originals[pixel] = OPEN_PIXEL
    inlined = _BODY_END.sub(lambda m: f"JX{pixel}X" + m.group(0), inlined, count=1)
    if placed.moved is not None:
        start, end = placed.moved
        moved = [n for n, offset in protected.offsets.items() if start <= offset < end]
        first, last = min(moved), max(moved)
        inlined = _to_front(inlined, f"<!--JX{first}X-->", f"<!--JX{last}X-->", protected.lines[first])
        text = _to_front(text, f"JX{first}X", f"JX{last}X", protected.lines[first])
    return CompiledHtml(restore(inlined, protected), len(links), restore(text, protected), restyler,
                        tuple(dynamic.items()))


def _styles_before_code(page: Any, protected: Protected) -> list[tuple[Any, int]]:
    """The `<style>` elements premailer reads that a statement follows, before any tag (text
    between them aside), with that statement: premailer removes a `<style>` it leaves nothing
    in together with the text after it, which in an email reaches up to the next tag."""
    found = []
    for style in page.iter("style"):
        media = style.get("media")
        if (media and media not in ("all", "screen")) or style.get(premailer.Premailer.attribute_name) == "ignore":
            continue
        after = style.getnext()
        match = _TOKEN.fullmatch(f"<!--{after.text}-->") if after is not None and after.tag is lxml.etree.Comment \
            else None
        if match and match.group(1):
            found.append((style, int(match.group(1))))
    return found


_BLOCK_ENDS = {"macro": "endmacro", "call": "endcall", "for": "endfor", "set": "endset"}


def _printed_elsewhere(page: Any, protected: Protected, source: str) -> set[Any] | None:
    """The elements of the placeholder page that can be printed among other ancestors than
    where they are written: inside a macro, a `{% call %}` block, a `{% set %}` block or a
    recursive loop; None (any of them) when a block can be printed again (`self.name()`)."""
    names = names_read(source)
    if names is None or "self" in names:
        return None
    inside: set[Any] = set()
    open_blocks: list[bool] = []   # each block open here: whether its content is printed elsewhere
    for node in page.iter():
        if node.tag is lxml.etree.Comment:
            match = _TOKEN.fullmatch(f"<!--{node.text}-->")
            if not (match and match.group(1)):
                continue
            number = int(match.group(1))
            keyword = protected.keywords.get(number, "")
            tokens = constructs(protected.originals[number])[0].tokens if keyword in ("for", "set") else ()
            if keyword in ("macro", "call") or (keyword == "set" and ("operator", "=") not in tokens):
                open_blocks.append(True)
            elif keyword == "for":
                open_blocks.append(("name", "recursive") in tokens)
            elif keyword in _BLOCK_ENDS.values() and open_blocks:
                open_blocks.pop()
        elif isinstance(node.tag, str) and any(open_blocks):
            inside.add(node)
    return inside


def _to_front(document: str, first: str, last: str, line: int) -> str:
    """The document with the part from placeholder `first` to placeholder `last` moved to its
    front: definitions styled inside `<body>`, which Jinja must run before the `<head>`."""
    start, end = document.find(first), document.find(last)
    if start < 0 or end < start:
        raise NeedsFallback(line, "the CSS inliner moved these definitions (they can only be "
                            "inlined after rendering)")
    end += len(last)
    return document[start:end] + document[:start] + document[end:]


def parse_document(document: str) -> tuple[Any, Any, Any]:
    """(tree, root element, what to serialize) of an HTML document, parsed as premailer parses
    it; the doctype is written back only if the document had one, as premailer does."""
    stripped = document.strip()
    tree = lxml.etree.fromstring(stripped, lxml.etree.HTMLParser()).getroottree()
    page = tree.getroot()
    return tree, page, tree if stripped.startswith(tree.docinfo.doctype) else page


def serialize(root: Any) -> str:
    """A parsed document written as premailer writes its result."""
    return lxml.etree.tostring(root, method="html", pretty_print=True, encoding="utf-8").decode("utf-8")


def inline_and_track(document: str, replace: Replace, inliner: CompiledInliner) -> str:
    """The CSS inlined on a rendered email as premailer inlines it (`replay`), then each
    trackable link's URL replaced (per-email path)."""
    page, root = inliner.transform(document)
    rewrite_tree(page, replace)
    return serialize(root)


def mark_links(page: Any, protected: Protected) -> tuple[dict[int, str], list[int]]:
    """Compile time: wrap each trackable href in the track_link filter, behind a placeholder;
    the placeholders' numbers and the code they stand for, and the expressions that became a
    link's code whole (`href="{{ url }}"`)."""
    marked: dict[int, str] = {}
    consumed: list[int] = []
    next_number = max(protected.originals, default=-1) + 1

    def mark(link: int, url: str) -> str:
        nonlocal next_number
        whole = _IN_TEXT.fullmatch(url)
        if whole and int(whole.group(1)) in protected.expressions:  # the href is one expression
            consumed.append(int(whole.group(1)))
            marked[next_number] = TRACK_VALUE % (protected.expressions[int(whole.group(1))], link)
            next_number += 1
            return f"JX{next_number - 1}X"
        # as written in HTML: the filter decodes it again, data printed in it included
        written = html.escape(url, quote=True)  # no quote left: a Jinja string literal holds it
        if _TOKEN.search(url) or any(c in written for c in "\\\r\n"):
            marked[next_number] = TRACK_FILTER % (link, as_text(written))
        else:  # a URL without template code: the filter on a literal, no block to capture
            marked[next_number] = TRACK_CONSTANT % (written, link)
        next_number += 1
        return f"JX{next_number - 1}X"

    rewrite_tree(page, mark)
    protected.originals.update(marked)
    return marked, consumed


_OPENING = re.compile(r"\{(?=[{%#]|JX\d+X|<!--JX\d+X-->)")


def as_text(written: str) -> str:
    """Text with placeholders, made Jinja source that prints the text as it is: a `{` that would
    open a Jinja construct (before `{`, `%`, `#` or a placeholder's code, each of which begins
    with `{`) is printed by an expression. The parser gives `&#123;&#123;` as `{{`, and text an
    element closes between (`<b>{</b>{`) reads `{{` in the text part."""
    return _OPENING.sub("{{ '{' }}", written)


def _with_code_placeholders(text: str, protected: Protected) -> str:
    """The text template with the Jinja code its converter added (`text.CODE`) kept as code:
    each becomes a placeholder of its own."""
    def placeholder(match: re.Match[str]) -> str:
        number = max(protected.originals, default=-1) + 1
        protected.originals[number] = match.group(1)
        return f"JX{number}X"

    return CODE.sub(placeholder, text)


def restore(document: str, protected: Protected) -> str:
    """Put the Jinja source back in place of every placeholder (placeholders may nest once); the
    text around them stays text (`as_text`)."""
    def original(match: re.Match[str]) -> str:
        code = protected.originals[int(match.group(1) or match.group(2))]
        return _TOKEN.sub(original, code)

    pieces, position = [], 0
    for match in _TOKEN.finditer(document):
        text = as_text(document[position:match.end()])  # with the placeholder, whose code begins with `{`
        pieces += [text[:len(text) - len(match.group(0))], original(match)]
        position = match.end()
    pieces.append(as_text(document[position:]))
    return "".join(pieces)

"""premailer's transform replayed on each email, with its stylesheet compiled once.

A template that cannot be inlined at compile time (`inlining.NeedsFallback`) is inlined after
each render. premailer does that by walking its cssutils sheet again for every email: it
reformats every rule, matches every selector against the document, parses every matched
declaration block and merges the styles with cssutils. None of that depends on the member, only
on the text of the email's `<style>` elements. `CompiledInliner` reads each `<style>` text once
(premailer's own rule list, each selector compiled: `selectors.Chain` for the common shapes,
XPath for the rest; each declaration block parsed, the leftover `<style>` text written), and
per email only parses the document, matches the rules whose subject's classes and id occur in
it, and writes the styles, merged once per (style attribute, matching rules) with premailer's
`merge_styles`. A page of the same shape as one seen before (elements, classes, the ids the
rules name) is matched as that one was, when only `Chain`s decided it; the shapes kept are
bounded in number and in nodes.

The steps, their order and the serialization are premailer 3.10's `Premailer.transform` with
`cascade.PREMAILER_OPTIONS` (no network, no external files, no base URL, leftover rules kept in
their `<style>`); premailer's own functions are called for each piece (`_parse_style_rules`,
`_css_rules_to_string`, `merge_styles`, `_style_to_basic_html_attributes`, `get_or_create_head`).
A stylesheet with a selector cssselect cannot read is handed to premailer as it is, so the
error is premailer's. Tests compare the output with premailer's, byte for byte, and pin the
premailer version.
"""

from __future__ import annotations

import re
from functools import lru_cache
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import cssselect
import cssutils
import premailer
import premailer.premailer
from lxml import etree
from lxml.cssselect import CSSSelector
from premailer.merge_style import csstext_to_pairs, merge_styles

from . import depth
from .cascade import PREMAILER_OPTIONS, premailer_split, subjects
from .selectors import Chain, Document, chain_of

_KEPT = 32  # distinct `<style>` texts, and sets of them, kept per template
_SHAPES_KEPT = 256  # page shapes and the rules matching their elements, kept per stylesheet
_SHAPE_NODES_KEPT = 50_000  # and their nodes in all: a shape costs a few hundred bytes a node
_MERGED_KEPT = 4096  # merged styles, kept per stylesheet


@dataclass(frozen=True, eq=False)  # compared and hashed as itself: one object per rule
class _Rule:
    """One of premailer's sorted rules: its compiled selector, its pseudo-class bucket, its
    declarations parsed, and what its subject needs (None: evaluate it on every email)."""

    number: int
    select: Any
    pseudo: str
    pairs: list[tuple[str, str]]
    needs: tuple[frozenset[str], str | None] | None   # (classes, id) of the subject
    chain: Chain | None = None   # the selector read as compounds and combinators (None: XPath)


@dataclass
class Sheet:
    """The `<style>` elements of an email, compiled: their rules in premailer's order, indexed
    by a class or the id their subject needs, and the text each element keeps (its leftover
    rules; None: the element is removed)."""

    rules: list[_Rule]
    leftover: list[str | None]
    _always: list[_Rule] = field(default_factory=list)
    _by_class: dict[str, list[_Rule]] = field(default_factory=dict)
    _by_id: dict[str, list[_Rule]] = field(default_factory=dict)
    _merged: dict[tuple[str, tuple[_Rule, ...]], tuple[str, list[tuple[str, str]]]] = field(default_factory=dict)
    shapes: dict[tuple[Any, ...], list[tuple[int, tuple[_Rule, ...]]]] = field(default_factory=dict)
    shape_nodes: int = 0   # the nodes of the shapes kept
    named_ids: frozenset[str] = frozenset()   # the ids the rules name
    named_attributes: tuple[str, ...] = ()    # the attributes the rules read

    def __post_init__(self) -> None:
        self.named_attributes = tuple(sorted({name for rule in self.rules if rule.chain is not None
                                              for part in rule.chain.compounds for name, _, _ in part.attributes}))
        self.named_ids = frozenset(
            {rule.needs[1] for rule in self.rules if rule.needs is not None and rule.needs[1] is not None}
            | {part.ident for rule in self.rules if rule.chain is not None for part in rule.chain.compounds
               if part.ident is not None})
        for rule in self.rules:
            if rule.needs is None:
                self._always.append(rule)
            elif rule.needs[1] is not None:
                self._by_id.setdefault(rule.needs[1], []).append(rule)
            else:
                self._by_class.setdefault(min(rule.needs[0]), []).append(rule)

    def candidates(self, classes: set[str], ids: set[str]) -> list[_Rule]:
        """The rules that can match some element with these classes and ids, in rule order."""
        found = list(self._always)
        for name in classes & self._by_class.keys():
            found += [rule for rule in self._by_class[name] if rule.needs[0] <= classes]  # type: ignore[index]
        for name in ids & self._by_id.keys():
            found += [rule for rule in self._by_id[name] if rule.needs[0] <= classes]  # type: ignore[index]
        if len(found) > len(self._always):
            found.sort(key=lambda rule: rule.number)
        return found

    def styled(self, inline: str, matched: tuple[_Rule, ...]) -> tuple[str, list[tuple[str, str]]]:
        """The style premailer writes on an element with style attribute `inline` matched by
        `matched` (in rule order), and the HTML attributes it derives from that style."""
        key = (inline, matched)
        found = self._merged.get(key)
        if found is None:
            final = merge_styles(inline, [rule.pairs for rule in matched], [rule.pseudo for rule in matched],
                                 remove_unset_properties=True)
            probe = etree.Element("p")
            _attributes_from(probe, final)
            if len(self._merged) >= _MERGED_KEPT:  # style attributes written by data: bounded
                self._merged.clear()
            found = self._merged[key] = (final, list(probe.attrib.items()))
        return found


_ATTRIBUTE_MAKER = premailer.Premailer(**PREMAILER_OPTIONS)


def _attributes_from(element: Any, style: str) -> None:
    _ATTRIBUTE_MAKER._style_to_basic_html_attributes(element, style, force=True)


@dataclass(frozen=True)
class _Body:
    """One `<style>` text compiled: its rules with premailer's specificity less the stylesheet's
    place ((importance, ids, classes, elements), index in the text), and its leftover text."""

    rules: list[tuple[tuple[int, int, int, int], int, str, Any, str, list[tuple[str, str]]]]
    leftover: str | None


def compile_body(body: str | None) -> _Body | None:
    """premailer's rules of one `<style>` text, selectors compiled and declarations parsed; None
    when a selector does not compile (premailer itself then reports it)."""
    inliner = premailer.Premailer(**PREMAILER_OPTIONS)
    found, rest = inliner._parse_style_rules(body, 0)
    rules = []
    for specificity, written, bulk in found:
        selector, pseudo = premailer_split(written)
        try:
            select = CSSSelector(selector)
        except (cssselect.SelectorError, cssselect.ExpressionError, ValueError, RecursionError):
            return None  # RecursionError: a selector of too many parts
        rules.append((specificity[:4], specificity[5], selector, select, pseudo,
                      csstext_to_pairs(bulk, validate=False)))
    return _Body(rules, inliner._css_rules_to_string(rest) if rest else None)


def combine(bodies: list[_Body]) -> Sheet:
    """The rules of an email's `<style>` texts (in document order) in premailer's order."""
    ordered = sorted((specificity + (index, local), selector, select, pseudo, pairs)
                     for index, body in enumerate(bodies)
                     for specificity, local, selector, select, pseudo, pairs in body.rules)
    rules = [_Rule(number, select, pseudo, pairs, _needs(selector), chain_of(selector))
             for number, (_, selector, select, pseudo, pairs) in enumerate(ordered)]
    return Sheet(rules, [body.leftover for body in bodies])


def _needs(selector: str) -> tuple[frozenset[str], str | None] | None:
    """The classes and id an element must have to be this selector's subject; None when it
    needs neither or cannot be read that way (then it is evaluated on every email)."""
    found = subjects(selector)
    if found is None or len(found) != 1:
        return None
    _, classes, ident = found[0]
    if not classes and ident is None:
        return None
    return frozenset(classes), ident


class CompiledInliner:
    """Per-email CSS inlining equal to premailer's, for one template: `transform` parses a
    rendered email and returns its (page, root) with the CSS inlined, ready to serialize.
    `prepare` compiles the `<style>` texts a template is known to print, at compile time."""

    def __init__(self) -> None:
        self._bodies: dict[str | None, _Body | None] = {}
        self._sheets: OrderedDict[tuple[str | None, ...], Sheet | None] = OrderedDict()

    def prepare(self, bodies: list[str]) -> None:
        for body in bodies:
            self._body(body)

    def _body(self, body: str | None) -> _Body | None:
        if body not in self._bodies:
            if len(self._bodies) > _KEPT:
                self._bodies.clear()
            self._bodies[body] = compile_body(body)
        return self._bodies[body]

    def sheet(self, bodies: list[str | None]) -> Sheet | None:
        key = tuple(bodies)
        if key in self._sheets:
            self._sheets.move_to_end(key)
            return self._sheets[key]
        compiled = [self._body(body) for body in bodies]
        sheet = None if None in compiled else combine(compiled)  # type: ignore[arg-type]
        self._sheets[key] = sheet
        if len(self._sheets) > _KEPT:
            self._sheets.popitem(last=False)
        return sheet

    def transform(self, document: str) -> tuple[Any, Any]:
        stripped = document.strip()
        tree = depth.parse(stripped).getroottree()
        page = tree.getroot()
        root = tree if stripped.startswith(tree.docinfo.doctype) else page
        premailer.premailer.get_or_create_head(tree)
        name = premailer.Premailer.attribute_name
        styles, ignored = [], []
        for element in page.iter("style"):
            media = element.attrib.get("media")
            if media and media not in ("all", "screen"):
                continue
            flag = element.attrib.get(name)
            if flag == "ignore":
                ignored.append(element)
                continue
            if flag:
                warnings.warn(f"Unrecognized {name} attribute ({flag!r})")
            styles.append(element)
        sheet = self.sheet([element.text for element in styles])
        if sheet is None:  # a selector cssselect cannot read: premailer raises its error
            premailer.Premailer(page, **PREMAILER_OPTIONS).transform()
            return page, root
        for element in ignored:
            del element.attrib[name]
        for element, kept in zip(styles, sheet.leftover):
            if kept is None:
                parent = element.getparent()
                assert parent is not None  # the HTML parser's root is always <html>
                parent.remove(element)
            else:
                element.text = kept
        _apply(page, sheet)
        for image in page.iter("img"):  # premailer's `//img[@style]`
            style = image.get("style")
            if style is not None and _float(style) in ("left", "right"):
                image.attrib["align"] = _float(style)
        return page, root


def _apply(page: Any, sheet: Sheet) -> None:
    """premailer's matching and merging on `page`; a page of a shape seen before (same
    elements, classes and named ids) is matched as it was then."""
    document = Document(page, sheet.named_ids, sheet.named_attributes)
    matches = sheet.shapes.get(document.shape)
    if matches is None:
        matches = _match(document, page, sheet)
    elements = document.elements
    for position, matched in matches:
        item = elements[position]
        final, attributes = sheet.styled(item.get("style", ""), matched)
        if final:
            item.attrib["style"] = final
        for name, value in attributes:
            item.attrib[name] = value


def _match(document: Document, page: Any, sheet: Sheet) -> list[tuple[int, tuple[_Rule, ...]]]:
    """The elements (by position) that rules match, and those rules in premailer's order."""
    found: dict[int, list[_Rule]] = {}
    positions = {id(element): position for position, element in enumerate(document.elements)}
    candidates = sheet.candidates(document.classes, document.ids)
    for rule in candidates:
        for item in rule.select(page) if rule.chain is None else document.select(rule.chain):
            found.setdefault(positions[id(item)], []).append(rule)
    matches = [(position, tuple(rules)) for position, rules in found.items()]
    size = len(document.shape)
    if all(rule.chain is not None for rule in candidates) and size <= _SHAPE_NODES_KEPT:  # the shape decides
        if len(sheet.shapes) >= _SHAPES_KEPT or sheet.shape_nodes + size > _SHAPE_NODES_KEPT:
            sheet.shapes.clear()
            sheet.shape_nodes = 0
        sheet.shapes[document.shape] = matches
        sheet.shape_nodes += size
    return matches


@lru_cache(maxsize=4096)
def _float(style: str) -> str:
    return cssutils.parseStyle(style).float


_STYLE_TEXT = re.compile(r"<style[^>]*>(.*?)</style\s*>", re.IGNORECASE | re.DOTALL)
_TEMPLATE_CODE = re.compile(r"\{[{%#]")


def fixed_style_texts(source: str) -> list[str]:
    """The `<style>` texts of a Jinja HTML source that hold no template code, as Jinja prints
    them (its line endings): what `CompiledInliner.prepare` can compile before the first email."""
    source = source.replace("\r\n", "\n").replace("\r", "\n")
    return [text for text in _STYLE_TEXT.findall(source) if not _TEMPLATE_CODE.search(text)]

"""premailer's cascade, replayed per email for the few rules a loop or a condition can change.

Most style rules match the same elements in every email, so `inlining.compile_inlined` inlines
them once. A structural rule (`li + li`, `.perk:last-child`) whose elements a loop repeats or a
condition removes matches different copies in each email: those *dynamic* rules are applied per
email here. At compile time every element a dynamic rule could match (same tag, classes and id
as its subject, structure left aside) is marked, and its plan kept: its own style attribute,
the HTML attributes premailer may set, and the declarations of the other rules matching it.
Per email the dynamic rules are matched on the rendered DOM (lxml; the common shapes in Python,
`selectors`, in time proportional to the page, others by cssselect's XPath): on the parents
of the marked elements alone, each parsed inside its ancestors' start tags, when the rules read
no further (`Restyler._mark_regions`), else on the whole page; and each marked
element gets what premailer would give it: every matching rule's declarations merged with
premailer's own `merge_styles`, in premailer's order (!important, ids, classes, elements,
stylesheet, rule), its own style attribute last, then the HTML attributes the final style
implies (width, height, bgcolor, align, valign; align for floating images).

This reads premailer's rule list and attribute mapping through `Premailer._parse_style_rules`
and `Premailer._style_to_basic_html_attributes`; tests pin them to the versions in pyproject.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

import cssselect
import cssselect.parser
import cssutils
import premailer
from lxml import etree
from lxml.cssselect import CSSSelector
from premailer.merge_style import csstext_to_pairs, merge_styles

from .selectors import Chain, Document, chain_of

# How premailer is run everywhere: per email, for `check`'s comparison, and as the reference.
PREMAILER_OPTIONS = dict(
    strip_important=False,       # keep `!important` in mobile @media rules
    allow_network=False,         # never fetch a stylesheet named by a template
    allow_loading_external_files=False,
    keep_style_tags=False,       # leftover rules (@media, :hover) stay in one <style>
    exclude_pseudoclasses=True,
    disable_validation=True,
    cssutils_logging_level=logging.CRITICAL,
)

MARK = "data-lm-style"
BASIC_ATTRIBUTES = ("align", "valign", "bgcolor", "width", "height")
Specificity = tuple[int, ...]


@dataclass(frozen=True)
class Rule:
    """One of premailer's rules: (importance, ids, classes, elements, stylesheet, index), the
    selector as premailer evaluates it, its pseudo-class bucket, and its declarations."""

    specificity: Specificity
    selector: str
    pseudo: str
    pairs: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class ElementPlan:
    """What premailer's result for one marked element depends on, apart from the dynamic rules."""

    style: str | None                          # its own style attribute, as written
    attributes: tuple[tuple[str, str | None], ...]  # BASIC_ATTRIBUTES as written (None: absent)
    rules: tuple[Rule, ...]                    # the other rules matching it


_MARKED = re.compile(r' data-lm-style="(\d+)"')  # the mark as `compile_inlined` writes it
_REGION = "<!--lm-region "   # a region's start, `<!--lm-region 3-->`; its end, `<!--/lm-region 3-->`
_REGION_MARKERS = re.compile(r"<!--/?lm-region \d+-->")
_REGION_CHARACTERS_KEPT = 1_000_000  # region texts and what they come out as, kept per template


@dataclass
class Restyler:
    """The dynamic rules of one compiled template and the plans of its marked elements.

    In the compiled template a marked element carries ` data-lm-style="k"` in place of its style
    and HTML attributes; `apply` puts back, for each one, the attributes premailer would give
    it in this email (computed once per plan and set of matching dynamic rules)."""

    dynamic: list[Rule]
    static: list[Rule] = field(default_factory=list, repr=False)
    plans: list[ElementPlan] = field(default_factory=list)
    _selectors: list[Any] = field(default_factory=list, repr=False)
    _premailer: Any = field(default=None, repr=False)
    _written: dict[tuple[int, tuple[int, ...]], str] = field(default_factory=dict, repr=False)
    _tags: list[str] = field(default_factory=list, repr=False)
    _as_written: dict[Any, list[tuple[str, str | None]]] = field(default_factory=dict, repr=False)  # see plan
    _skeletons: list[str] = field(default_factory=list, repr=False)  # per region: its ancestors' start tags
    _written_regions: dict[tuple[int, str], str] = field(default_factory=dict, repr=False)
    _written_size: int = field(default=0, repr=False)  # their characters

    def __post_init__(self) -> None:
        # the common shapes matched in Python (`selectors`): cssselect's XPath for `+` and
        # `:last-child` costs the square of a loop's rows
        self._selectors = [chain_of(rule.selector) or CSSSelector(rule.selector) for rule in self.dynamic]
        self._premailer = premailer.Premailer(**_options())

    def complete(self, page: Any, elsewhere: AbstractSet[Any] | None = None) -> None:
        """After premailer has run on `page`: the other rules matching each marked element,
        matched as premailer matched them (its <style> elements handled); then the element's
        style and HTML attributes are left out of the compiled template, the mark stands for
        them, and the marked elements are put in regions (see `_mark_regions`; `elsewhere`:
        the elements printed in other places than where they are written, None: any)."""
        hits: dict[str, set[Any]] = {}
        marked = [e for e in page.iter() if isinstance(e.tag, str) and e.get(MARK) is not None]
        # premailer matched its rules before writing styles: match them on the attributes as
        # written (`li[style]` does not match an <li> only premailer gave a style), then put
        # premailer's back
        inlined = {element: _attributes_of(element) for element in self._as_written}
        for element, written in self._as_written.items():
            _set_attributes(element, written)
        for element in marked:
            number = int(element.attrib[MARK])
            mine = []
            for rule in self.static:
                if rule.selector not in hits:
                    hits[rule.selector] = set(CSSSelector(rule.selector)(page))
                if element in hits[rule.selector]:
                    mine.append(rule)
            before = self.plans[number]
            self.plans[number] = ElementPlan(before.style, before.attributes, tuple(mine))
            while len(self._tags) <= number:
                self._tags.append("")
            self._tags[number] = element.tag
        for element, values in inlined.items():
            _set_attributes(element, values)
        self._as_written = {}
        for element in marked:
            for name in ("style", *BASIC_ATTRIBUTES):
                element.attrib.pop(name, None)
            mark = element.attrib.pop(MARK)
            element.attrib[MARK] = mark  # last, so that nothing follows it in the tag
        self.static = []
        self._mark_regions(page, marked, elsewhere)

    def _mark_regions(self, page: Any, marked: list[Any], elsewhere: AbstractSet[Any] | None) -> None:
        """Per email, only the elements around the marked ones need parsing, when the dynamic
        rules look no further than an element's siblings (`+`, `~`, `:first-child`,
        `:last-child`) and the tag, classes and id of its ancestors: each outermost parent of
        marked elements becomes a region, written between `<!--lm-region k-->` and
        `<!--/lm-region k-->`, and its ancestors' start tags are kept (a region is parsed inside
        them). A region printed in other places than where it is written (`elsewhere`: in a
        macro, a `{% call %}` block; None: anywhere) has other ancestors there, so it is only
        made for rules that read siblings alone; and none is made when the page read in regions
        differs from the page read whole."""
        reach = [_reach(rule.selector) for rule in self.dynamic]
        if not marked or None in reach:
            return
        parents = list(dict.fromkeys(element.getparent() for element in marked))
        held = set(parents)
        if None in held:
            return
        regions = [parent for parent in parents if not any(a in held for a in parent.iterancestors())]
        if any(region.get(MARK) is not None or region.getparent() is None for region in regions):
            return
        if "ancestors" in reach and (elsewhere is None or any(
                region in elsewhere or any(a in elsewhere for a in region.iterancestors()) for region in regions)):
            return
        for number, region in enumerate(regions):
            self._skeletons.append("".join(_start_tag(a) for a in reversed(list(region.iterancestors()))))
            end = etree.Comment(f"/lm-region {number}")
            region.addprevious(etree.Comment(f"lm-region {number}"))
            region.addnext(end)
            end.tail, region.tail = region.tail, None
        document = etree.tostring(page, method="html", encoding="unicode")
        split = self._regions_of(document)
        whole = _REGION_MARKERS.sub("", document)
        if split is None or [hit for _, number, text in split[0] for hit in self._region_hits(number, text)] \
                != self._hits(etree.fromstring(whole, etree.HTMLParser())):
            self._skeletons = []
            for comment in list(page.iter(etree.Comment)):
                if _REGION_MARKERS.fullmatch(f"<!--{comment.text}-->"):
                    _remove_keeping_tail(comment)

    def _hits(self, page: Any) -> list[tuple[int, tuple[int, ...]]]:
        """Each marked element of a parsed page, in document order: its number and the dynamic
        rules (indexes) that match it."""
        matched = self._matched(page)
        return [(int(element.get(MARK)), tuple(i for i, found in enumerate(matched) if element in found))
                for element in page.iter() if isinstance(element.tag, str) and element.get(MARK) is not None]

    def _matched(self, page: Any) -> list[set[Any]]:
        """The elements of `page` each dynamic rule matches."""
        read = Document(page) if any(isinstance(select, Chain) for select in self._selectors) else None
        return [set(read.select(select)) if isinstance(select, Chain) and read is not None
                else set(select(page)) for select in self._selectors]

    def _region_hits(self, number: int, text: str) -> list[tuple[int, tuple[int, ...]]]:
        """`_hits` of one region, parsed inside its ancestors' start tags."""
        return self._hits(etree.fromstring(self._skeletons[number] + text, etree.HTMLParser()))

    def _regions_of(self, document: str) -> tuple[list[tuple[str, int, str]], str] | None:
        """The document as (text before, region number, region text) pieces and the text after
        the last region; None when a mark lies outside every region or regions nest (a
        recursive loop)."""
        pieces: list[tuple[str, int, str]] = []
        position = 0
        while (start := document.find(_REGION, position)) >= 0:
            close = document.find("-->", start)
            number = document[start + len(_REGION):close]
            if not number.isdigit() or int(number) >= len(self._skeletons):
                return None
            end_marker = f"<!--/lm-region {number}-->"
            end = document.find(end_marker, close)
            before = document[position:start]
            if end < 0 or document.find(_REGION, close, end) >= 0 or MARK in before or "lm-region" in before:
                return None
            pieces.append((before, int(number), document[close + 3:end]))
            position = end + len(end_marker)
        rest = document[position:]
        if MARK in rest or "lm-region" in rest:
            return None
        return pieces, rest

    def _styled_region(self, number: int, text: str) -> str | None:
        """A region's text with each mark replaced by the attributes premailer would write."""
        key = (number, text)
        found = self._written_regions.get(key)
        if found is None:
            written = [self.attributes(mark, hits) for mark, hits in self._region_hits(number, text)]
            pieces = iter(written)
            found, count = _MARKED.subn(lambda _: next(pieces, ""), text)
            if count != len(written):
                return None  # the mark also appears where it is not an attribute
            size = 2 * len(text)
            if self._written_size + size > _REGION_CHARACTERS_KEPT:
                self._written_regions.clear()
                self._written_size = 0
            if size <= _REGION_CHARACTERS_KEPT // 4:
                self._written_regions[key] = found
                self._written_size += size
        return found

    @property
    def regions(self) -> int:
        """How many regions the marked elements are parsed in per email (0: the whole page)."""
        return len(self._skeletons)

    @property
    def selectors(self) -> list[str]:
        return list(dict.fromkeys(rule.selector for rule in self.dynamic))

    def attributes(self, number: int, matching: tuple[int, ...]) -> str:
        """The style and HTML attributes of marked element `number` when the dynamic rules
        `matching` (indexes) match it, as attribute text with a leading space."""
        key = (number, matching)
        if key not in self._written:
            plan = self.plans[number]
            element = etree.Element(self._tags[number])
            restyle(element, plan, [*plan.rules, *(self.dynamic[i] for i in matching)], self._premailer)
            self._written[key] = "".join(f' {name}="{html.escape(value, quote=True)}"'
                                         for name, value in element.attrib.items())
        return self._written[key]

    def apply(self, document: str) -> str:
        """The rendered email with every marked element styled as premailer would style it:
        region by region (a region's text seen before comes out as it did), or else the whole
        page parsed."""
        if MARK not in document:
            return _REGION_MARKERS.sub("", document) if self._skeletons else document
        if self._skeletons:
            split = self._regions_of(document)
            if split is not None:
                pieces = []
                for before, number, text in split[0]:
                    styled = self._styled_region(number, text)
                    if styled is None:
                        break
                    pieces += [before, styled]
                else:
                    return "".join(pieces) + split[1]
            document = _REGION_MARKERS.sub("", document)
        return self._apply_whole(document)

    def _apply_whole(self, document: str) -> str:
        tree = etree.fromstring(document.strip(), etree.HTMLParser()).getroottree()
        page = tree.getroot()
        matched = self._matched(page)
        marked, written = [], []
        for element in page.iter():
            number = element.get(MARK) if isinstance(element.tag, str) else None
            if number is not None:
                hits = tuple(i for i, found in enumerate(matched) if element in found)
                marked.append(element)
                written.append(self.attributes(int(number), hits))
        pieces = iter(written)
        result, count = _MARKED.subn(lambda _: next(pieces, ""), document)
        if count == len(written):
            return result
        # The mark also appears where it is not an attribute (markup printed from data):
        # write the attributes on the elements and serialize the document as premailer does.
        for element, attributes in zip(marked, written):
            del element.attrib[MARK]
            for name, value in etree.fromstring(f"<p{attributes}/>").attrib.items():
                element.attrib[name] = value
        doctype = tree.docinfo.doctype
        root = tree if document.strip().startswith(doctype) else page
        return etree.tostring(root, method="html", encoding="unicode")


def _reach(selector: str) -> str | None:
    """How far matching `selector` on an element reads: "siblings" (its subject's run of `+`
    and `~` compounds: the element's siblings and their subtrees), "ancestors" (then also the
    tag, classes and id of its ancestors: only ` ` and `>` combinators further left, and no
    `:first-child`/`:last-child` there), None (further)."""
    chain = chain_of(selector)
    if chain is None:
        return None
    start = len(chain.compounds) - 1
    while start > 0 and chain.combinators[start - 1] in ("+", "~"):
        start -= 1
    if start == 0:
        return "siblings"
    if any(c.first or c.last for c in chain.compounds[:start]) or \
            any(j not in (" ", ">") for j in chain.combinators[:start - 1]):
        return None
    return "ancestors"


def _remove_keeping_tail(node: Any) -> None:
    parent, previous = node.getparent(), node.getprevious()
    if node.tail:
        if previous is not None:
            previous.tail = (previous.tail or "") + node.tail
        else:
            parent.text = (parent.text or "") + node.tail
    parent.remove(node)


def _start_tag(element: Any) -> str:
    """An element's start tag with only its class and id: what `_within_siblings` rules read."""
    attributes = "".join(f' {name}="{html.escape(element.get(name), quote=True)}"'
                         for name in ("class", "id") if element.get(name) is not None)
    return f"<{element.tag}{attributes}>"


def restyle(element: Any, plan: ElementPlan, rules: list[Rule], inliner: Any) -> None:
    """premailer's steps for one element, from its attributes as written."""
    for name, value in plan.attributes:
        if value is None:
            element.attrib.pop(name, None)
        else:
            element.attrib[name] = value
    if plan.style is None:
        element.attrib.pop("style", None)
    else:
        element.attrib["style"] = plan.style
    if rules:
        rules.sort(key=lambda rule: rule.specificity)
        final = merge_styles(plan.style or "", [list(r.pairs) for r in rules], [r.pseudo for r in rules],
                             remove_unset_properties=True)
        if final:
            element.attrib["style"] = final
        inliner._style_to_basic_html_attributes(element, final, force=True)
    if element.tag == "img" and element.get("style") is not None:  # align_floating_images
        floating = cssutils.parseStyle(element.attrib["style"]).float
        if floating in ("left", "right"):
            element.attrib["align"] = floating


def _options() -> dict[str, Any]:
    return dict(PREMAILER_OPTIONS)


def premailer_rules(page: Any) -> list[Rule]:
    """The rules premailer inlines into `page` (a parsed document), in its order."""
    inliner = premailer.Premailer(**_options())
    found: list[tuple[Specificity, str, str]] = []
    index = 0
    for element in CSSSelector("style")(page):
        media = element.attrib.get("media")
        if media and media not in ("all", "screen"):
            continue
        if element.attrib.get(inliner.attribute_name) == "ignore":
            continue
        these, _ = inliner._parse_style_rules(element.text, index)
        index += 1
        found.extend(these)
    found.sort(key=lambda rule: rule[0])
    rules = []
    for specificity, written, bulk in found:
        selector, pseudo = premailer_split(written)
        rules.append(Rule(specificity, selector, pseudo, tuple(csstext_to_pairs(bulk, validate=False))))
    return rules


def premailer_split(selector: str) -> tuple[str, str]:
    """A rule's selector as premailer matches it, and the pseudo-class it keeps in a `<style>`
    instead of inlining (`a:hover`); pseudo-classes premailer evaluates (`:first-child`,
    `:nth-child(...)`) stay in the selector."""
    if ":" not in selector:
        return selector, ""
    bare, pseudo = re.split(":", selector, maxsplit=1)
    pseudo = ":" + pseudo
    if pseudo in premailer.premailer.FILTER_PSEUDOSELECTORS or pseudo.startswith(":nth-child"):
        return selector, ""
    return bare, pseudo


Subject = tuple[str, set[str], "str | None"]  # tag ("*": any), classes, id


def subjects(selector: str) -> list[Subject] | None:
    """The tag, classes and id of each subject (the compound after the last combinator) of a
    selector list; None when it does not parse (in doubt)."""
    try:
        parsed = cssselect.parse(selector)
    except cssselect.SelectorError:
        return None
    found: list[Subject] = []
    for one in parsed:
        node: Any = one.parsed_tree
        while isinstance(node, cssselect.parser.CombinedSelector):
            node = node.subselector
        tag, classes, ident = "*", set[str](), None
        while node is not None:
            if isinstance(node, cssselect.parser.Class):
                classes.add(node.class_name)
            elif isinstance(node, cssselect.parser.Hash):
                ident = node.id
            elif isinstance(node, cssselect.parser.Element):
                tag = (node.element or "*").lower()
                break
            node = getattr(node, "selector", None)
        found.append((tag, classes, ident))
    return found


def subject_matches(selector: str, element: Any) -> bool:
    """Whether `element` has the tag, classes and id of the selector's subject (the compound
    after its last combinator): every element the selector can match in some email does.
    True when in doubt."""
    found = subjects(selector)
    if found is None:
        return True
    present = set((element.get("class") or "").split())
    return any((tag == "*" or tag == element.tag) and classes <= present and (ident is None or ident == element.get("id"))
               for tag, classes, ident in found)


class Unplannable(Exception):
    """A marked element whose result depends on data in a way the plan cannot hold."""

    def __init__(self, element: Any, reason: str) -> None:
        super().__init__(reason)
        self.element, self.reason = element, reason


def plan(page: Any, dynamic_selectors: set[str], placeholder: re.Pattern[str]) -> Restyler | None:
    """Before premailer runs on `page` (the placeholder DOM): mark the elements a dynamic rule
    could match and keep what they are as written; None when no rule is dynamic. Call
    `Restyler.complete(page)` once premailer has run."""
    rules = premailer_rules(page)
    dynamic = [r for r in rules if r.selector in dynamic_selectors or _with_pseudo(r) in dynamic_selectors]
    if not dynamic:
        return None
    restyler = Restyler(dynamic, static=[r for r in rules if r not in dynamic])
    restyler._as_written = {element: _attributes_of(element) for element in page.iter() if isinstance(element.tag, str)}
    for element in page.iter():
        if not isinstance(element.tag, str) or not any(subject_matches(r.selector, element) for r in dynamic):
            continue
        style = element.get("style")
        attributes = tuple((name, element.get(name)) for name in BASIC_ATTRIBUTES)
        for name, value in (("style", style), *attributes):
            if value is not None and placeholder.search(value):
                raise Unplannable(element, f"the {name} attribute depends on data, and a rule "
                                  "applied per email can change it")
        element.attrib[MARK] = str(len(restyler.plans))
        restyler.plans.append(ElementPlan(style, attributes, ()))
    return restyler


def _attributes_of(element: Any) -> list[tuple[str, str | None]]:
    """The attributes premailer may write on an element (None: absent)."""
    return [(name, element.get(name)) for name in ("style", *BASIC_ATTRIBUTES)]


def _set_attributes(element: Any, values: list[tuple[str, str | None]]) -> None:
    for name, value in values:
        if value is None:
            element.attrib.pop(name, None)
        else:
            element.attrib[name] = value


def _with_pseudo(rule: Rule) -> str:
    return rule.selector + rule.pseudo

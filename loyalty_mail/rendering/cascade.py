"""premailer's cascade, replayed per email for the few rules a loop or a condition can change.

Most style rules match the same elements in every email, so `inlining.compile_inlined` inlines
them once. A structural rule (`li + li`, `.perk:last-child`) whose elements a loop repeats or a
condition removes matches different copies in each email: those *dynamic* rules are applied per
email here. At compile time every element a dynamic rule could match (same tag, classes and id
as its subject, structure left aside) is marked, and its plan kept: its own style attribute,
the HTML attributes premailer may set, and the declarations of the other rules matching it.
Per email the dynamic rules are matched on the rendered DOM (lxml; the common shapes in Python,
`selectors`, in time proportional to the page, others by cssselect's XPath) and each marked
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

    def __post_init__(self) -> None:
        # the common shapes matched in Python (`selectors`): cssselect's XPath for `+` and
        # `:last-child` costs the square of a loop's rows
        self._selectors = [chain_of(rule.selector) or CSSSelector(rule.selector) for rule in self.dynamic]
        self._premailer = premailer.Premailer(**_options())

    def complete(self, page: Any) -> None:
        """After premailer has run on `page`: the other rules matching each marked element,
        matched as premailer matched them (its <style> elements handled); then the element's
        style and HTML attributes are left out of the compiled template, the mark stands for
        them."""
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
        """The rendered email with every marked element styled as premailer would style it."""
        if MARK not in document:
            return document
        tree = etree.fromstring(document.strip(), etree.HTMLParser()).getroottree()
        page = tree.getroot()
        read = Document(page) if any(isinstance(select, Chain) for select in self._selectors) else None
        matched = [set(read.select(select)) if isinstance(select, Chain) and read is not None
                   else set(select(page)) for select in self._selectors]
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

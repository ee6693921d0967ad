"""CSS selectors matched in Python, as cssselect's XPath matches them, for the common shapes.

Evaluating a compiled XPath costs tens of microseconds a call whatever the document, and an
email's stylesheet has dozens of rules that can match. Most are compounds of a tag, classes and
an id, joined by the four combinators, sometimes with `:first-child`, `:last-child` or an
attribute selector (`a[x-apple-data-detectors]`, `a[href^=tel]`): for those `chain_of` gives a
`Chain`, and `Document.select` finds its subjects from an index of the page's classes, ids and
tags, then checks the rest right to left. Each piece has cssselect 1.x's meaning (its
`GenericTranslator`, as lxml's `CSSSelector` uses it): names compared exactly (no lower-casing),
classes as tokens of `normalize-space(@class)`, ids by equality, attributes as its
`xpath_attrib_*` tests them, siblings counted among elements only. Any other shape gives None
and stays with XPath.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import cssselect
import cssselect.parser

_XPATH_SPACE = re.compile(r"[ \t\r\n]+")   # the characters XPath's normalize-space() collapses
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class Compound:
    tag: str | None            # None: any element
    classes: frozenset[str]
    ident: str | None
    first: bool                # :first-child
    last: bool                 # :last-child
    attributes: tuple[tuple[str, str, str | None], ...] = ()  # [name OPERATOR value], as written


@dataclass(frozen=True)
class Chain:
    """Compounds from left to right, and the combinator before each but the first."""

    compounds: tuple[Compound, ...]
    combinators: tuple[str, ...]


def chain_of(selector: str) -> Chain | None:
    """The selector as compounds and combinators; None for any shape not handled here."""
    try:
        parsed = cssselect.parse(selector)
    except cssselect.SelectorError:
        return None
    if len(parsed) != 1 or parsed[0].pseudo_element is not None:
        return None
    node: Any = parsed[0].parsed_tree
    compounds: list[Compound] = []
    combinators: list[str] = []
    while isinstance(node, cssselect.parser.CombinedSelector):
        if node.combinator not in (" ", ">", "+", "~"):
            return None
        found = _compound(node.subselector)
        if found is None:
            return None
        compounds.append(found)
        combinators.append(node.combinator)
        node = node.selector
    found = _compound(node)
    if found is None:
        return None
    compounds.append(found)
    return Chain(tuple(reversed(compounds)), tuple(reversed(combinators)))


def _compound(node: Any) -> Compound | None:
    classes: set[str] = set()
    ident: str | None = None
    first = last = False
    attributes: list[tuple[str, str, str | None]] = []
    while not isinstance(node, cssselect.parser.Element):
        if isinstance(node, cssselect.parser.Class):
            if not node.class_name or _XPATH_SPACE.search(node.class_name):
                return None
            classes.add(node.class_name)
        elif isinstance(node, cssselect.parser.Hash):
            if ident is not None and ident != node.id:
                return None  # `#a#b`: matches nothing; left to XPath
            ident = node.id
        elif isinstance(node, cssselect.parser.Pseudo) and node.ident == "first-child":
            first = True
        elif isinstance(node, cssselect.parser.Pseudo) and node.ident == "last-child":
            last = True
        elif isinstance(node, cssselect.parser.Attrib) and node.namespace is None \
                and not getattr(node, "flag", None) and node.operator in _ATTRIBUTE_OPERATORS \
                and _NAME.fullmatch(node.attrib):
            attributes.append((node.attrib, node.operator, None if node.value is None else str(node.value.value)))
        else:
            return None
        node = node.selector
    if node.namespace is not None:
        return None
    tag = node.element
    if tag is not None and not _NAME.fullmatch(tag):
        return None
    return Compound(tag, frozenset(classes), ident, first, last, tuple(reversed(attributes)))


_ATTRIBUTE_OPERATORS = frozenset({"exists", "=", "~=", "|=", "^=", "$=", "*=", "!="})
_NON_WHITESPACE = re.compile(r"[^ \t\r\n\f]+")   # cssselect's test of a `~=` value


def attribute_matches(value: str | None, operator: str, wanted: str | None) -> bool:
    """Whether an attribute's value (None: absent) passes `[name OPERATOR wanted]` as cssselect's
    XPath decides it (`GenericTranslator.xpath_attrib_*`: an empty value never starts, ends or
    holds anything, `!=` with a value is also true of an absent attribute)."""
    if operator == "exists":
        return value is not None
    if operator == "!=":
        return (value is None or value != wanted) if wanted else (value is not None and value != wanted)
    if value is None or wanted is None:
        return False
    if operator == "=":
        return value == wanted
    if operator == "|=":
        return value == wanted or value.startswith(wanted + "-")
    if not wanted:
        return False
    if operator == "~=":
        return bool(_NON_WHITESPACE.fullmatch(wanted)) and wanted in _XPATH_SPACE.split(value)
    if operator == "^=":
        return value.startswith(wanted)
    if operator == "$=":
        return value.endswith(wanted)
    return wanted in value  # *=


class Document:
    """A parsed page read once: its elements in document order and its shape (each node in
    document order with its number of children, which fixes the tree; each element's tag,
    class and id, an id that no selector names only as present, and the attributes the
    selectors read), which is all a `Chain` looks at; the index of its classes, ids and tags is
    built when first needed."""

    def __init__(self, page: Any, named_ids: frozenset[str] = frozenset(),
                 named_attributes: tuple[str, ...] = ()) -> None:
        self.elements: list[Any] = []
        shape: list[Any] = []
        for node in page.iter():  # in document order, with each node's number of children
            tag = node.tag
            if isinstance(tag, str):
                self.elements.append(node)
                ident = node.get("id")
                entry: tuple[Any, ...] = (tag, node.get("class"), ident if ident in named_ids else ident is not None,
                                          len(node))
                if named_attributes:
                    entry += tuple(node.get(name) for name in named_attributes)
                shape.append(entry)
            else:
                shape.append(None)  # a comment or processing instruction: no children
        self.shape = tuple(shape)
        self._indexed = False
        self._tokens: dict[Any, frozenset[str]] = {}
        self._by_class: dict[str, list[Any]] = {}
        self._by_id: dict[str, list[Any]] = {}
        self._by_tag: dict[str, list[Any]] = {}
        self._classes: set[str] = set()
        self._ids: set[str] = set()

    @property
    def classes(self) -> set[str]:
        self._index()
        return self._classes

    @property
    def ids(self) -> set[str]:
        self._index()
        return self._ids

    def _index(self) -> None:
        if self._indexed:
            return
        self._indexed = True
        for element in self.elements:
            self._by_tag.setdefault(element.tag, []).append(element)
            written = element.get("class")
            if written:
                tokens = frozenset(_XPATH_SPACE.split(written)) - {""}
                self._tokens[element] = tokens
                self._classes |= tokens
                for token in tokens:
                    self._by_class.setdefault(token, []).append(element)
            ident = element.get("id")
            if ident is not None:
                self._ids.add(ident)
                self._by_id.setdefault(ident, []).append(element)

    def select(self, chain: Chain) -> list[Any]:
        """The elements `chain` matches, as cssselect's XPath would find them (order aside)."""
        self._index()
        subject = chain.compounds[-1]
        if subject.ident is not None:
            pool = self._by_id.get(subject.ident, [])
        elif subject.classes:
            pool = min((self._by_class.get(name, []) for name in subject.classes), key=len)
        elif subject.tag is not None:
            pool = self._by_tag.get(subject.tag, [])
        else:
            pool = self.elements
        last = len(chain.compounds) - 1
        known: dict[tuple[int, Any], bool] = {}
        return [element for element in pool if self._compute(chain, last, element, known)]

    def _is(self, compound: Compound, element: Any) -> bool:
        if compound.tag is not None and element.tag != compound.tag:
            return False
        if compound.ident is not None and element.get("id") != compound.ident:
            return False
        if compound.classes and not compound.classes <= self._tokens.get(element, frozenset()):
            return False
        for name, operator, wanted in compound.attributes:
            if not attribute_matches(element.get(name), operator, wanted):
                return False
        if compound.first and _sibling(element, preceding=True) is not None:
            return False
        if compound.last and _sibling(element, preceding=False) is not None:
            return False
        return True

    def _matches(self, chain: Chain, index: int, element: Any, known: dict[tuple[int, Any], bool]) -> bool:
        """Whether `element` matches compounds 0..index with their combinators. `known` holds the
        answers found during one `select`: a descendant or `~` combinator tries every ancestor or
        earlier sibling, and without them `span div div div p` on a deep page would retry the same
        (compound, element) pairs a number of times exponential in the selector's length."""
        key = (index, element)
        found = known.get(key)
        if found is None:
            found = known[key] = self._compute(chain, index, element, known)
        return found

    def _compute(self, chain: Chain, index: int, element: Any, known: dict[tuple[int, Any], bool]) -> bool:
        if not self._is(chain.compounds[index], element):
            return False
        if index == 0:
            return True
        combinator = chain.combinators[index - 1]
        if combinator == ">":
            parent = element.getparent()
            return parent is not None and self._matches(chain, index - 1, parent, known)
        if combinator == " ":
            ancestor = element.getparent()
            while ancestor is not None:
                if self._matches(chain, index - 1, ancestor, known):
                    return True
                ancestor = ancestor.getparent()
            return False
        sibling = _sibling(element, preceding=True)
        if combinator == "+":
            return sibling is not None and self._matches(chain, index - 1, sibling, known)
        while sibling is not None:  # "~"
            if self._matches(chain, index - 1, sibling, known):
                return True
            sibling = _sibling(sibling, preceding=True)
        return False


def _sibling(element: Any, *, preceding: bool) -> Any:
    """The nearest element sibling before (or after) `element`: comments are not elements."""
    sibling = element.getprevious() if preceding else element.getnext()
    while sibling is not None and not isinstance(sibling.tag, str):
        sibling = sibling.getprevious() if preceding else sibling.getnext()
    return sibling

"""The per-email inliner (`rendering/replay.py`) against premailer: random pages and stylesheets
must come out byte for byte as premailer writes them, cached styles and all."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loyalty_mail.rendering.inlining import inline_css, serialize
from loyalty_mail.rendering.replay import CompiledInliner, fixed_style_texts
from loyalty_mail.rendering.selectors import chain_of

_TAGS = ["div", "p", "span", "td", "a", "img", "li"]
_CLASSES = ["a", "b", "c"]


def _element(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    attributes = st.tuples(
        st.sampled_from(["", ' class="a"', ' class="b c"', ' class=" a\tb "', ' class="A"', ' class=""']),
        st.sampled_from(["", ' id="x"', ' id="y"']),
        st.sampled_from(["", ' style="color: black"', ' style="width: 3px; float: left"', ' width="9"',
                         ' bgcolor="#fff"', ' href="tel:1"', ' href="https://x.example/a-b"', ' lang="en-GB"',
                         ' data-x=""', ' title=" a  b\tc "']),
    ).map("".join)
    return st.tuples(st.sampled_from(_TAGS), attributes, children).map(
        lambda t: f"<{t[0]}{t[1]}/>" if t[0] == "img" else f"<{t[0]}{t[1]}>{t[2]}</{t[0]}>")


_CONTENT = st.recursive(st.sampled_from(["x", "", "<!-- note -->"]),
                        lambda inner: st.lists(_element(inner), min_size=1, max_size=4).map("".join), max_leaves=14)

_COMPOUND = st.sampled_from(["p", "td", "span", "a", "img", "li", "div", ".a", ".b", ".c", "#x", "p.a", "td.b",
                             ".b.c", "span#y", "TD", "*", "div.a#x"])
_SELECTOR = st.tuples(st.lists(st.tuples(_COMPOUND, st.sampled_from([" ", " > ", " + ", " ~ "])), max_size=2),
                      _COMPOUND, st.sampled_from(["", "", "", ":first-child", ":last-child", ":hover", "[href]",
                                                  ":nth-child(2)", "::before", '[href^="tel"]', "[href$=a-b]",
                                                  "[lang|=en]", "[title~=b]", "[title~='']", "[data-x]",
                                                  '[data-x=""]', "[width=9]", "[href!=tel:1]", "[href!='']",
                                                  "[title^='']", "[HREF]", "[lang=EN-GB i]"])).map(
    lambda t: "".join(c + j for c, j in t[0]) + t[1] + t[2])
_DECLARATIONS = st.lists(st.sampled_from([
    "color: red", "color: blue !important", "width: 10px", "height: 2px", "text-align: center",
    "vertical-align: top", "background-color: #abc", "background-color: transparent", "float: right",
    "padding: 1px 2px", "margin: unset"]), min_size=1, max_size=3).map("; ".join)
_RULE = st.tuples(st.lists(_SELECTOR, min_size=1, max_size=2).map(", ".join), _DECLARATIONS).map(
    lambda t: f"{t[0]} {{ {t[1]} }}")
_SHEET = st.lists(st.one_of(_RULE, st.just("@media (max-width: 600px) { .a { color: red } }")),
                  max_size=6).map("\n".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_SHEET, min_size=1, max_size=2), st.lists(_CONTENT, min_size=1, max_size=3),
       st.sampled_from(["", ' media="print"', ' data-premailer="ignore"']))
def test_random_pages_and_stylesheets_come_out_as_premailer_writes_them(sheets, pages, media):
    inliner = CompiledInliner()
    styles = "".join(f"<style>{sheet}</style>" for sheet in sheets[:-1]) + f"<style{media}>{sheets[-1]}</style>"
    # again, and with other style attributes: a page of a shape seen before reuses its styles
    for content in pages + [page.replace("black", "white").replace("3px", "4px") for page in pages] + pages:
        document = f"<!DOCTYPE html><html><head>{styles}</head><body>{content}</body></html>"
        assert serialize(inliner.transform(document)[1]) == inline_css(document)


def test_without_a_head_or_a_doctype_and_with_styles_in_the_body():
    inliner = CompiledInliner()
    for document in ('<body><style>p { color: red } p:hover { color: blue }</style><p>x</p></body>',
                     '<html><body><p class="a">x</p><style>.a { width: 5px }</style></body></html>',
                     '<p>no style at all</p>'):
        assert serialize(inliner.transform(document)[1]) == inline_css(document)


def test_premailer_is_the_version_whose_transform_the_replay_follows():
    from importlib.metadata import version

    assert version("premailer").startswith("3.10."), \
        "replay.py follows Premailer.transform of premailer 3.10: compare the new version's before widening this"


@pytest.mark.parametrize(("selector", "handled"), [
    ("td", True), ("p.a.b#x", True), ("div > p + span ~ a", True), ("li:first-child", True),
    ("td:last-child", True), ("a[href]", True), ("a[href^=tel] + p[lang|=en]", True), ("a[x|href]", False),
    ("[lang=en i]", False), ("p:nth-child(2)", False), ("svg|rect", False), ("*.a", True), ("p::before", False),
])
def test_selectors_matched_in_python_are_the_plain_shapes(selector, handled):
    assert (chain_of(selector) is not None) is handled


def test_the_style_texts_compiled_before_the_first_email_are_those_without_template_code():
    source = ("<style>p { color: red }</style>\r\n<style>a { color: {{ brand }} }</style>"
              "{% if x %}<style media='all'>b {}\r\n</style>{% endif %}")
    assert fixed_style_texts(source) == ["p { color: red }", "b {}\n"]


def test_the_page_shapes_kept_per_stylesheet_are_bounded_by_their_size():
    from loyalty_mail.rendering.replay import _SHAPE_NODES_KEPT

    style = ".row td { padding: 2px } .v { color: red } td.c:first-child { width: 10px }"
    inliner = CompiledInliner()
    for extra in range(15):  # a statement whose rows differ per member: each email a new shape
        rows = "".join(f'<tr class="row"><td class="c">{i}</td><td class="c v">x</td></tr>' for i in range(1500 + extra))
        document = f"<html><head><style>{style}</style></head><body><table>{rows}</table></body></html>"
        assert serialize(inliner.transform(document)[1]) == inline_css(document)
    sheet = inliner.sheet([style])
    assert sheet is not None and sheet.shapes
    assert sum(len(shape) for shape in sheet.shapes) <= _SHAPE_NODES_KEPT

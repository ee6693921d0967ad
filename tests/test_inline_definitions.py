"""Markup written in a definition is printed where the definition is used, or not at all: a
macro's where it is called, a `{% call %}` block's inside its macro, a `{% set %}` block's where
its name is printed. A `<style>` there applies only to the emails that print it, and its
elements take their place among siblings only there. Each email equals rendering the files,
then premailer."""

from __future__ import annotations

import pytest

from loyalty_mail.rendering.dom import dom_difference

from .rendering_program import NOW, member, program_dir, renderer_for


def page(style: str, body: str) -> str:
    return (f'---\nsubject: "x"\npreheader: "p"\n---\n<html><head><style>{style}</style></head>\n<body>\n'
            f"{body}\n</body></html>\n")


MEMBERS = [member(locale="en", points=8450), member(locale="en", points=40000, tier="platinum")]


def compare(tmp_path, source: str):
    renderer = renderer_for(program_dir(tmp_path, {"odd/en.html": source}))
    for someone in MEMBERS:
        html = renderer.render("odd", someone, now=NOW, tracked=False).html
        assert dom_difference(html, renderer.reference_html("odd", someone, now=NOW)) is None
    return renderer.compiled("odd", "en")


@pytest.mark.parametrize("body", [
    # a macro never called, a set block never printed: their rules apply to no email
    '{% macro s() %}<style>.a { color: blue } p { width: 2px }</style>{% endmacro %}<p class="a">x</p>',
    '{% set s %}<style>.a { color: blue }</style>{% endset %}<p class="a">x</p>',
    # a macro called only for some members
    '{% macro s() %}<style>.a { color: blue }</style>{% endmacro %}'
    '{% if member.points > 10000 %}{{ s() }}{% endif %}<p class="a">x</p>',
    # a set block printed only for some members
    '{% set s %}<style>.a { color: blue }</style>{% endset %}{% if member.points > 10000 %}{{ s }}{% endif %}'
    '<p class="a">x</p>',
    # a call block its macro prints only for some members
    '{% macro m() %}{% if member.points > 10000 %}{{ caller() }}{% endif %}{% endmacro %}'
    '{% call m() %}<style>.a { color: blue }</style>{% endcall %}<p class="a">x</p>',
])
def test_a_style_written_in_a_definition_applies_only_where_it_is_printed(tmp_path, body):
    compiled = compare(tmp_path, page(".a { color: red }", body))
    if "{{ s" in body or "{% call" in body:  # printed for some members: inlined per email
        assert compiled.fallback is not None and "<style>" in compiled.fallback.reason
        assert compiled.fallback.location.line == 7


@pytest.mark.parametrize(("style", "body"), [
    # the set block's <p> is not a sibling where it is written
    ("p + p { width: 1px } p:first-child { color: red }",
     '<div>{% set s %}<p>kept aside</p>{% endset %}<p>first</p><p>second</p></div>'),
    # it is where its name is printed
    ("p + p { width: 1px }", '<div>{% set s %}<p>aside</p>{% endset %}<p>first</p>{{ s }}<p>second</p></div>'),
    # and it is styled by what contains it there
    (".side p { color: red }", '{% set s %}<p>aside</p>{% endset %}<div class="side">{{ s }}</div>'),
])
def test_the_elements_of_a_set_block_are_styled_where_its_name_is_printed(tmp_path, style, body):
    compare(tmp_path, page(style, body))


def test_a_set_block_printed_where_nothing_styles_it_differently_still_compiles_once(tmp_path):
    compiled = compare(tmp_path, page(".a { color: red } .side p { width: 1px }",
                                      '{% set s %}<p class="a">aside</p>{% endset %}<div>{{ s }}</div>'))
    assert compiled.fallback is None


def test_a_macro_styled_differently_where_it_is_called_is_reported_at_its_definition(tmp_path):
    source = ('---\nsubject: "x"\npreheader: "p"\n---\n{% extends "_layouts/en.html" %}\n'
              '{% from "_partials/cards.html" import card %}\n{% block content %}\n'
              '<style>.side .card { color: red }</style>\n<div class="side">{{ card("a") }}</div>\n'
              '{{ card("b") }}\n{% endblock %}\n')
    cards = '{# cards #}\n{% macro card(t) %}\n<p class="card">{{ t }}</p>\n{% endmacro %}\n'
    renderer = renderer_for(program_dir(tmp_path, {"odd/en.html": source, "_partials/cards.html": cards}))
    fallback = renderer.compiled("odd", "en").fallback
    assert fallback is not None and "'.side .card'" in fallback.reason and "'card'" in fallback.reason
    assert str(fallback.location) == "templates/_partials/cards.html:2"


def test_a_reason_found_in_a_childs_macro_names_the_macros_line(tmp_path):
    # the child's code outside its blocks runs before its layout: it is styled at the start of <body>
    source = ('---\nsubject: "x"\npreheader: "p"\n---\n{% extends "_layouts/en.html" %}'
              '{% macro note() %}<p class="a">{{ member.attributes.note | safe }}</p>{% endmacro %}\n'
              '{% block content %}\n{{ note() }}\n{% endblock %}\n')
    renderer = renderer_for(program_dir(tmp_path, {"odd/en.html": source}))
    fallback = renderer.compiled("odd", "en").fallback
    assert fallback is not None and "`| safe` prints markup" in fallback.reason
    assert str(fallback.location) == "templates/odd/en.html:5"

"""Only markup that can be printed decides whether CSS is inlined once: a macro nothing calls (or
only an unused macro calls) is left out of the compile-time checks, a used one is checked as
before. Each email equals rendering the files, then premailer."""

from __future__ import annotations

import pytest

from loyalty_mail.rendering.dom import dom_difference
from loyalty_mail.rendering.jinja_source import unused_macros, without_unused_macros

from .rendering_program import NOW, member, program_dir, renderer_for

BADGE = '{% macro badge(t) %}<span class="{{ t }}">x</span>{% endmacro %}'
STYLE = ".gold { color: red } li + li { margin: 0 } .box p { width: 2px } p { padding: 1px }"


def page(body: str) -> str:
    return (f'---\nsubject: "x"\n---\n<html><head><style>{STYLE}</style></head>\n<body>\n'
            f"{body}\n</body></html>\n")


def emails(tmp_path, body: str):
    renderer = renderer_for(program_dir(tmp_path, {"odd/en.html": page(body)}))
    someone = member(locale="en")
    html = renderer.render("odd", someone, now=NOW, tracked=False).html
    return renderer.compiled("odd", "en"), html, renderer.reference_html("odd", someone, now=NOW)


@pytest.mark.parametrize("body", [
    BADGE + "<p>Hi {{ member.first_name }}</p>",
    # only an unused macro calls it
    BADGE + "{% macro row() %}<div>{{ badge(member.tier) }}</div>{% endmacro %}<p>x</p>",
    # a `{% call %}` block inside an unused macro, with data in a class
    '{% macro box() %}<div class="box">{{ caller() }}</div>{% endmacro %}'
    '{% macro unused() %}{% call box() %}<p class="{{ member.tier }}">x</p>{% endcall %}{% endmacro %}'
    '<div class="box"><p>y</p></div>',
    # beside siblings a `li + li` rule styles
    '<ul><li>a</li>{% macro m(t) %}<li class="{{ t }}">x</li>{% endmacro %}<li>b</li></ul>',
    # markup printed from data, inside a macro nothing calls
    '{% macro note() %}<div>{{ member.attributes.note | safe }}</div>{% endmacro %}<p>x</p>',
    # with whitespace control on its own tags
    '<p>a {%- macro m(t) -%} <b class="{{ t }}">x</b> {%- endmacro -%} b</p>',
])
def test_a_macro_nothing_prints_keeps_compile_once(tmp_path, body):
    compiled, html, reference = emails(tmp_path, body)
    assert compiled.fallback is None
    assert dom_difference(html, reference) is None


def test_a_style_inside_a_macro_nothing_calls_is_not_inlined(tmp_path):
    compiled, html, reference = emails(tmp_path, '{% macro unused() %}<style>p { color: red }</style>'
                                                 '{% endmacro %}<p>x</p>')
    assert compiled.fallback is None
    assert dom_difference(html, reference) is None
    assert "color:red" not in html and '<p style="padding:1px">x</p>' in html


def test_an_unused_macro_with_whitespace_control_prints_exactly_the_same(tmp_path):
    compiled, html, _ = emails(tmp_path, '<p>a {%- macro m(t) -%} <b class="{{ t }}">x</b> {%- endmacro -%} b</p>')
    assert compiled.fallback is None
    assert '<p style="padding:1px">ab</p>' in html


@pytest.mark.parametrize("body", [
    BADGE + "<p>{{ badge(member.tier) }}</p>",
    # through another macro that is called
    BADGE + "{% macro row() %}<div>{{ badge(member.tier) }}</div>{% endmacro %}{{ row() }}",
    # inside a `{% call %}` block
    BADGE + '{% macro box() %}<div class="box">{{ caller() }}</div>{% endmacro %}'
            "{% call box() %}{{ badge(member.tier) }}{% endcall %}",
    # passed to another macro as a value
    BADGE + "{% macro show(f) %}<div>{{ f(member.tier) }}</div>{% endmacro %}{{ show(badge) }}",
    # assigned to a variable
    BADGE + "{% set f = badge %}<p>{{ f(member.tier) }}</p>",
    # a `{% call %}` of it
    '{% macro badge(t) %}<span class="{{ t }}">{{ caller() }}</span>{% endmacro %}'
    "{% call badge(member.tier) %}x{% endcall %}",
])
def test_a_macro_that_can_be_printed_still_falls_back_with_its_reason(tmp_path, body):
    compiled, html, reference = emails(tmp_path, body)
    assert compiled.fallback is not None
    assert "the class attribute depends on data" in compiled.fallback.reason
    assert compiled.fallback.location.line == 6
    assert html == reference
    assert '<span class="gold" style="color:red">' in html


def test_a_fallback_after_an_unused_macro_names_its_own_line(tmp_path):
    body = ('{% macro unused(t) %}\n<span class="{{ t }}">\nx\n</span>\n{% endmacro %}\n'
            '<p class="{{ member.tier }}">y</p>')
    compiled, html, reference = emails(tmp_path, body)
    assert compiled.fallback is not None and compiled.fallback.location.line == 11
    assert html == reference


def test_a_minus_marker_beside_an_unused_macro_keeps_it_and_the_whitespace():
    # `-}}` would strip the space after the definition once it is gone: it stays
    source = '<p>a {{ 1 -}} {% macro m() %}<b>x</b>{% endmacro %} b</p>'
    assert unused_macros(source) == [(14, 51)]
    assert without_unused_macros(source) == source
    spaced = '<p>a {% macro m() %}\n<b>x</b>\n{% endmacro %} {{- 1 }}</p>'
    assert without_unused_macros(spaced) == spaced
    plain = '<p>a {% macro m() %}\n<b>x</b>\n{% endmacro %} b {%- if 1 %}{% endif %}</p>'
    blank = '{#' + ' ' * 13 + '\n' + ' ' * 8 + '\n' + ' ' * 12 + '#}'
    assert without_unused_macros(plain) == f'<p>a {blank} b {{%- if 1 %}}{{% endif %}}</p>'
    assert len(without_unused_macros(plain)) == len(plain)


def test_unused_macros_follows_calls_through_macros_and_call_blocks():
    source = ("{% macro a() %}A{% endmacro %}{% macro b() %}{{ a() }}{% endmacro %}"
              "{% macro c() %}{% macro d() %}D{% endmacro %}{{ caller() }}{% endmacro %}"
              "{% macro e() %}{{ e() }}{% endmacro %}"
              "{% call c() %}{{ b() }}{% endcall %}")
    spans = unused_macros(source)
    assert [source[start:end] for start, end in spans] == [
        "{% macro d() %}D{% endmacro %}", "{% macro e() %}{{ e() }}{% endmacro %}"]
    assert unused_macros("{% macro a( %}") == []

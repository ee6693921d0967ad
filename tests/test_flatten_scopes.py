"""Flattening keeps Jinja's scopes: an imported macro sees the names of its own file (the other
macros there, imported or not, and the last of two definitions of one name), an included file
cannot assign into the template that includes it, and a macro defined twice in one file is the
definition in effect where it is called. Each email equals rendering the files, then premailer."""

from __future__ import annotations

import pytest

from loyalty_mail.rendering.dom import dom_difference

from .rendering_program import NOW, member, program_dir, renderer_for

FRONT = '---\nsubject: "x"\npreheader: "p"\n---\n'


def page(body: str, head: str = "", style: str = ".a { color: red } b { font-weight: bold }") -> str:
    return (f'{FRONT}{head}<html><head><style>{style}</style></head>\n'
            f'<body>\n{body}\n</body></html>\n')


def compare(tmp_path, source: str, **files: str):
    renderer = renderer_for(program_dir(tmp_path, {"odd/en.html": source, **files}))
    someone = member(locale="en")
    html = renderer.render("odd", someone, now=NOW, tracked=False).html
    assert dom_difference(html, renderer.reference_html("odd", someone, now=NOW)) is None
    return renderer.compiled("odd", "en"), html


LIB = ('{% set mark = "*" %}\n{% macro badge(v) %}<b>{{ mark }}{{ v }}</b>{% endmacro %}\n'
       '{% macro card(v) %}<i class="a">{{ badge(v) }}</i>{% endmacro %}\n')


@pytest.mark.parametrize("head", [
    '{% from "_l/lib.html" import card %}',
    '{% from "_l/lib.html" import card with context %}',
])
def test_an_imported_macro_calls_the_macros_of_its_own_file(tmp_path, head):
    compiled, html = compare(tmp_path, page('<p>{{ card("x") }}</p>', head), **{"_l/lib.html": LIB})
    assert compiled.fallback is None
    assert '<b style="font-weight:bold">*x</b>' in html


def test_a_rule_for_an_imported_macros_helper_inside_the_macro_is_applied_where_it_is_printed(tmp_path):
    source = page('<p>{{ card("x") }}</p><b>y</b>', '{% from "_l/lib.html" import card %}', "i b { color: red }")
    compiled, html = compare(tmp_path, source, **{"_l/lib.html": LIB})
    assert '<b style="color:red">*x</b>' in html and "<b>y</b>" in html
    if compiled.fallback is not None:
        assert str(compiled.fallback.location).startswith("templates/_l/lib.html:")


def test_an_imported_macros_helper_does_not_shadow_the_importers_names(tmp_path):
    source = page('<p>{{ card("x") }} {{ badge }}</p>', '{% from "_l/lib.html" import card %}{% set badge = "own" %}')
    compiled, html = compare(tmp_path, source, **{"_l/lib.html": LIB})
    assert compiled.fallback is None
    assert "</i> own</p>" in html


def test_a_macro_defined_twice_in_a_library_is_imported_as_its_last_definition(tmp_path):
    lib = '{% macro m() %}first{% endmacro %}{% macro m() %}last{% endmacro %}'
    compiled, html = compare(tmp_path, page('<p class="a">{{ m() }}</p>', '{% from "_l/lib.html" import m %}'),
                             **{"_l/lib.html": lib})
    assert compiled.fallback is None
    assert ">last</p>" in html


def test_a_macro_defined_twice_in_one_file_is_the_definition_in_effect_at_the_call(tmp_path):
    body = ('{% macro m() %}one{% endmacro %}<p class="a">{{ m() }}</p>'
            '{% macro m() %}two{% endmacro %}<p class="a">{{ m() }}</p>')
    compiled, html = compare(tmp_path, page(body))
    assert compiled.fallback is None
    assert '<p class="a" style="color:red">one</p>' in html and '<p class="a" style="color:red">two</p>' in html


INCLUDED = '{% set t = "inner" %}{% macro m() %}M{% endmacro %}<span>{{ t }}{{ m() }}</span>'


@pytest.mark.parametrize("include", [
    '{% include "_l/inc.html" %}',
    '{% include "_l/inc.html" with context %}',
    '{% include "_l/inc.html" ignore missing %}',
    '{% include "_l/inc.html" ignore missing with context %}',
])
def test_an_included_file_cannot_assign_into_the_template_that_includes_it(tmp_path, include):
    body = include + '<p class="a">{{ t }} {{ "has m" if m is defined else "no m" }}</p>'
    compiled, html = compare(tmp_path, page(body, '{% set t = "outer" %}'), **{"_l/inc.html": INCLUDED})
    assert compiled.fallback is None
    assert "<span>innerM</span>" in html and '<p class="a" style="color:red">outer no m</p>' in html


def test_an_include_of_a_missing_file_marked_ignore_missing_prints_nothing(tmp_path):
    compiled, html = compare(tmp_path, page('{% include "_l/none.html" ignore missing %}<p class="a">x</p>'))
    assert compiled.fallback is None
    assert '<body>\n<p class="a" style="color:red">x</p>' in html


def test_an_include_without_context_falls_back_saying_so(tmp_path):
    source = page('{% include "_l/inc.html" without context %}<p class="a">x</p>', '{% set t = "outer" %}')
    compiled, _ = compare(tmp_path, source, **{"_l/inc.html": INCLUDED})
    assert compiled.fallback is not None and "without context" in compiled.fallback.reason
    assert str(compiled.fallback.location) == "templates/odd/en.html:7"


def test_a_statement_after_the_document_is_reported_as_such(tmp_path):
    source = page('<p class="a">x</p>').rstrip("\n") + '{% set x = 1 %}\n'
    compiled, _ = compare(tmp_path, source)
    if compiled.fallback is not None:
        assert "after </html>" in compiled.fallback.reason
        assert str(compiled.fallback.location) == "templates/odd/en.html:8"


def test_each_definition_of_a_macro_defined_twice_is_styled_where_it_is_called(tmp_path):
    body = ('{% macro m() %}<p class="x">one</p>{% endmacro %}<div class="side">{{ m() }}</div>'
            '{% macro m() %}<span>two</span>{% endmacro %}<div>{{ m() }}</div>')
    _, html = compare(tmp_path, page(body, style=".side p { color: red }"))
    assert '<p class="x" style="color:red">one</p>' in html and "<span>two</span>" in html

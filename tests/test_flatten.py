"""Layouts, includes and macro imports resolved in the source keep Jinja's order of execution:
a child's code outside its blocks runs first, whole (its conditions, loops and `{% set %}`
blocks included), and a definition written before `<html>` is there before the `<head>` that
uses it. The compiled email equals rendering the files, then premailer."""

from __future__ import annotations

import pytest

from loyalty_mail.rendering.dom import dom_difference

from .rendering_program import NOW, member, program_dir, renderer_for

FRONT = '---\nsubject: "x"\npreheader: "p"\n---\n'
LAYOUT = ('<!DOCTYPE html>\n<html lang="{{ lang | default(locale) }}"><head><title>{{ title }}</title>'
          '<style>.a { color: red } .b p { width: 1px }</style></head>\n<body>\n'
          '{% block body %}{% endblock %}\n</body></html>\n')
MACROS = '{% macro headline() %}Hello {{ member.first_name or "friend" }}{% endmacro %}'


def emails(tmp_path, source: str, someone: dict[str, object], **files: str):
    renderer = renderer_for(program_dir(tmp_path, {"odd/en.html": source, **files}))
    html = renderer.render("odd", someone, now=NOW, tracked=False).html
    return renderer.compiled("odd", "en"), html, renderer.reference_html("odd", someone, now=NOW)


@pytest.mark.parametrize(("source", "shown"), [
    # a child's `{% set %}` read by the layout's <head> and an attribute of <html> (the Flask idiom)
    (FRONT + '{% extends "_l/base.html" %}{% set title = "Your statement" %}{% set lang = "en-GB" %}'
     '{% block body %}<p class="a">{{ title }}</p>{% endblock %}', "<title>Your statement</title>"),
    # a macro written before <html>, called in <head>
    (FRONT + MACROS + '\n<html><head><title>{{ headline() }}</title><style>.a { color: red }</style></head>'
     '<body><p class="a">{{ headline() }}</p></body></html>\n', "<title>Hello Lan</title>"),
    # an imported macro called in <head>
    (FRONT + '{% from "_l/macros.html" import headline with context %}\n<html><head><title>{{ headline() }}</title>'
     '<style>.a { color: red }</style></head><body><p class="a">x</p></body></html>\n', "<title>Hello Lan</title>"),
    # a `{% set %}` written before <html>, read in <head>
    (FRONT + '{% set title = "Points" %}\n<html><head><title>{{ title }}</title><style>.a { color: red }</style>'
     '</head><body><p class="a">x</p></body></html>\n', "<title>Points</title>"),
    # an import and a `{% set %}` written between the doctype and <html>
    (FRONT + '<!DOCTYPE html>\n{% from "_partials/blocks.html" import button %}{% set title = "Points" %}\n'
     '<html><head><title>{{ title }}</title><style>.a { color: red }</style></head>'
     '<body><p class="a">x</p>{{ button("https://shop.example/", "Shop") }}</body></html>\n', "<title>Points</title>"),
])
def test_a_definition_written_before_the_head_that_uses_it_still_comes_first(tmp_path, source, shown):
    compiled, html, reference = emails(tmp_path, source, member(locale="en"),
                                       **{"_l/base.html": LAYOUT, "_l/macros.html": MACROS})
    assert compiled.fallback is None
    assert shown in html
    assert '<p class="a" style="color:red">' in html
    assert dom_difference(html, reference) is None


@pytest.mark.parametrize(("child", "expected"), [
    ('{% if member.points > 1000 %}{% set greeting = "VIP" %}{% else %}{% set greeting = "Hi" %}{% endif %}'
     '{% block body %}<p class="a">{{ greeting }}</p>{% endblock %}', {8450: "VIP", 50: "Hi"}),
    ('{% set ns = namespace(n=0) %}{% for perk in tier.perks %}{% set ns.n = ns.n + 1 %}{% endfor %}'
     '{% block body %}<p class="a">{{ ns.n }} perks</p>{% endblock %}', {8450: "3 perks", 50: "2 perks"}),
    ('{% set note %}<b>Thanks</b>{% endset %}{% block body %}<div class="b"><p>{{ note }}</p></div>{% endblock %}',
     {8450: "Thanks", 50: "Thanks"}),
    ('{% set title = "first" %}{% block body %}<p class="a">{{ title }}</p>{% endblock %}{% set title = "last" %}',
     {8450: "last", 50: "last"}),
])
def test_a_childs_code_outside_its_blocks_runs_whole_before_the_layout(tmp_path, child, expected):
    for points, shown in expected.items():
        someone = member(locale="en", points=points, tier="gold" if points > 1000 else "member")
        compiled, html, reference = emails(tmp_path / str(points), FRONT + '{% extends "_l/base.html" %}' + child,
                                           someone, **{"_l/base.html": LAYOUT.replace("{{ title }}", "x")})
        assert compiled.fallback is None
        assert shown in html
        assert dom_difference(html, reference) is None


def test_definitions_on_both_sides_of_the_doctype_keep_the_html_elements_attributes(tmp_path):
    # the child's code goes before the layout, whose import stands after its doctype
    layout = ('<!DOCTYPE html>\n{% from "_partials/blocks.html" import button %}\n<html lang="vi" dir="ltr">'
              '<head><title>{{ title }}</title><style>.a { color: red }</style></head>\n<body>\n'
              '{% block body %}{% endblock %}{{ button("https://shop.example/", "Shop") }}\n</body></html>\n')
    child = FRONT + '{% extends "_l/base.html" %}{% set title = "Points" %}{% block body %}<p class="a">x</p>{% endblock %}'
    compiled, html, reference = emails(tmp_path, child, member(locale="en"), **{"_l/base.html": layout})
    assert compiled.fallback is None
    assert '<html lang="vi" dir="ltr">' in html and "<title>Points</title>" in html
    assert dom_difference(html, reference) is None


def test_the_text_part_of_a_template_with_definitions_before_the_document(tmp_path):
    source = (FRONT + MACROS + '{% set title = "Points" %}\n<html><head><title>{{ title }}</title></head>'
              '<body><p>{{ headline() }}, see <a href="https://shop.example/p?a=1&amp;b=2">{{ title }}</a></p>'
              '</body></html>\n')
    renderer = renderer_for(program_dir(tmp_path, {"odd/en.html": source}))
    email = renderer.render("odd", member(locale="en"), now=NOW, tracked=False)
    assert email.text == "Hello Lan, see Points (https://shop.example/p?a=1&b=2)\n"


@pytest.mark.parametrize("source", [
    '<html><head>{% set title = "Points" %}<title>{{ title }}</title></head><body><p>{{ title }}</p></body></html>',
    '<html><head><title>x</title></head>\n{% set title = "Points" %}\n<body><p>{{ title }}</p></body></html>',
    '<!DOCTYPE html>\n{% set title = "Points" %}\n<html><body><p>{{ title }}</p></body></html>',
    '<html><body><span style="display: none">{% set title = "Points" %}hidden</span><p>{{ title }}</p></body></html>',
])
def test_a_statement_outside_the_text_still_runs_in_the_text_part(tmp_path, source):
    renderer = renderer_for(program_dir(tmp_path, {"odd/en.html": FRONT + source + "\n"}))
    email = renderer.render("odd", member(locale="en"), now=NOW, tracked=False)
    assert renderer.compiled("odd", "en").fallback is None
    assert email.text == "Points\n"
    assert dom_difference(email.html, renderer.reference_html("odd", member(locale="en"), now=NOW)) is None


def test_a_layout_chosen_by_a_condition_is_the_one_each_member_gets(tmp_path):
    layouts = {f"_l/{name}.html": f'<html><head><style>p {{ color: {color} }}</style></head><body><h1>{name}</h1>'
               '{% block body %}{% endblock %}</body></html>\n' for name, color in (("a", "red"), ("b", "blue"))}
    source = (FRONT + '{% if member.points > 1000 %}{% extends "_l/a.html" %}{% else %}{% extends "_l/b.html" %}'
              '{% endif %}\n{% block body %}<p>x</p>{% endblock %}\n')
    for points, shown in ((8450, "<h1>a</h1>"), (50, "<h1>b</h1>")):
        compiled, html, reference = emails(tmp_path / str(points), source, member(locale="en", points=points),
                                           **layouts)
        assert compiled.fallback is not None and "the layout is chosen at render time" in compiled.fallback.reason
        assert str(compiled.fallback.location) == "templates/odd/en.html:5"
        assert shown in html
        assert dom_difference(html, reference) is None

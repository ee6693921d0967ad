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


def _fanning_includes(levels: int) -> dict[str, str]:
    """_f/i1.html includes _f/i2.html ten times, which includes _f/i3.html ten times..."""
    files = {f"_f/i{k}.html": f'{{% include "_f/i{k + 1}.html" %}}' * 10 for k in range(1, levels)}
    files[f"_f/i{levels}.html"] = "<p>{{ member.first_name }}</p>"
    return files


def test_includes_that_multiply_are_included_as_the_email_is_rendered(tmp_path):
    source = FRONT + '<html><head><style>p { color: red }</style></head><body>{% include "_f/i1.html" %}</body></html>'
    compiled, html, reference = emails(tmp_path, source, member(locale="en"), **_fanning_includes(4))
    assert compiled.fallback is not None and "more than 1,000 included files" in compiled.fallback.reason
    assert dom_difference(html, reference) is None
    assert html.count('<p style="color:red">Lan</p>') == 1000


def test_check_reads_a_file_included_at_many_places_a_bounded_number_of_times(tmp_path, monkeypatch):
    from loyalty_mail.rendering.checks import _check_static
    from loyalty_mail.rendering.static_check import StaticChecker

    source = FRONT + '<html><body>{% include "_f/i1.html" %}</body></html>'
    renderer = renderer_for(program_dir(tmp_path, {"odd/en.html": source, **_fanning_includes(5)}))
    checked: list[str] = []
    original = StaticChecker.check_file
    monkeypatch.setattr(StaticChecker, "check_file",
                        lambda self, name, *rest: checked.append(name) or original(self, name, *rest))
    assert [p for p in _check_static(renderer) if "odd" in str(p)] == []
    assert 0 < checked.count("_f/i5.html") < 1_000  # 10,000 includes of it, in each of the check's passes


def test_blocks_nested_in_a_childs_block_are_not_looked_for_in_the_layout_one_by_one(tmp_path, monkeypatch):
    from loyalty_mail.rendering import flatten

    nested = "".join(f"{{% block b{i} %}}<p>{i}</p>{{% endblock %}}" for i in range(300))
    source = FRONT + '{% extends "_l/base.html" %}{% set title = "t" %}{% block body %}' + nested + '{% endblock %}'
    calls: list[str] = []
    original = flatten._blocks
    monkeypatch.setattr(flatten, "_blocks", lambda source, name: calls.append(name) or original(source, name))
    compiled, html, reference = emails(tmp_path, source, member(locale="en"), **{"_l/base.html": LAYOUT})
    assert compiled.fallback is None and dom_difference(html, reference) is None
    assert len(calls) < 10


def test_a_child_replacing_hundreds_of_layout_blocks_is_flattened_as_it_is_rendered(tmp_path):
    blocks = "".join(f"{{% block b{i} %}}<i>{i}</i>{{% endblock %}}" for i in range(250))
    layout = LAYOUT.replace("{% block body %}{% endblock %}", blocks)
    source = FRONT + '{% extends "_l/base.html" %}{% set title = "t" %}' + blocks.replace("<i>", "<p>").replace("</i>", "</p>")
    compiled, html, reference = emails(tmp_path, source, member(locale="en"), **{"_l/base.html": layout})
    assert compiled.fallback is not None and "more than 200 blocks" in compiled.fallback.reason
    assert dom_difference(html, reference) is None and "<p>249</p>" in html

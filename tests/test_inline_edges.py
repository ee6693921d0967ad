"""Templates at the edges of CSS inlining: `<style>` blocks premailer leaves as written, markup
printed from data or rewritten by a filter, a `<head>` premailer adds, and selectors premailer
cannot evaluate. Each email equals rendering the files, then premailer (byte for byte where it
is inlined per email), or the template gets an error that names its file and line."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from loyalty_mail.cli import cli
from loyalty_mail.errors import TemplateError
from loyalty_mail.rendering.dom import dom_difference

from .rendering_program import NOW, SECRET, member, program_dir, renderer_for

DATA_CLASS = '<p class="{{ member.tier }}">x</p>'  # a reason to inline per email


def page(style: str, body: str, head: str = "") -> str:
    return (f'---\nsubject: "x"\n---\n<html><head>{head}<style>{style}</style></head>\n<body>\n'
            f"{body}\n</body></html>\n")


def emails(tmp_path, source: str, someone: dict[str, object] | None = None):
    renderer = renderer_for(program_dir(tmp_path, {"odd/en.html": source}))
    someone = someone or member(locale="en")
    html = renderer.render("odd", someone, now=NOW, tracked=False).html
    return renderer.compiled("odd", "en"), html, renderer.reference_html("odd", someone, now=NOW)


@pytest.mark.parametrize("head", [
    '<style data-premailer="ignore">.ExternalClass { width: 100% } #outlook a { padding: 0 }</style>',
    '<style media="print">p { color: black } #outlook a { padding: 0 }</style>',
    '<!--[if mso]><style>p { color: black } #outlook a { padding: 0 }</style><![endif]-->',
])
def test_style_blocks_premailer_leaves_as_written_are_not_pruned_or_rewritten(tmp_path, head):
    # `td` matches nothing in this template: pruning the inlined stylesheet drops it
    compiled, html, reference = emails(tmp_path, page(".gold { color: red } td { color: blue }", DATA_CLASS, head))
    assert compiled.fallback is not None
    assert html == reference
    assert "#outlook a { padding: 0 }" in html


def test_a_rule_on_the_head_premailer_adds_is_not_pruned(tmp_path):
    source = ('---\nsubject: "x"\n---\n<html><body><style>head { color: red } td { color: blue }</style>'
              + DATA_CLASS + "</body></html>\n")
    compiled, html, reference = emails(tmp_path, source)
    assert compiled.fallback is not None
    assert html == reference
    assert '<head style="color:red">' in html


@pytest.mark.parametrize(("body", "reason"), [
    ('<div>{{ "<b>bold</b>" | safe }}</div>', "`| safe` prints markup"),
    ('<div>{{ member.attributes.note | safe }}</div>', "`| safe` prints markup"),
    ('<p>{{ member.attributes.note | urlize }}</p>', "`| urlize` prints markup"),
    ('<div>{% autoescape false %}{{ member.attributes.note }}{% endautoescape %}</div>',
     "`{% autoescape %}` without true"),
    ('{% filter upper %}<p class="a">x</p>{% endfilter %}', "a `{% filter %}` block"),
    ('{% set b | upper %}<p class="a">x</p>{% endset %}{{ b }}', "a `{% set %}` block with a filter"),
    ('{% set b %}<p class="a">x</p>{% endset %}{{ b | upper }}', "`| upper` rewrites the markup of `b`"),
    ('{% macro m() %}<p class="a">x</p>{% endmacro %}{{ m() | replace("a", "b") }}',
     "`| replace` rewrites the markup of `m`"),
    ('{% macro m() %}<p class="a">a long line of text</p>{% endmacro %}<div>{{ m() | truncate(12) }}</div>',
     "`| truncate` rewrites the markup of `m`"),
])
def test_markup_printed_from_data_or_rewritten_by_a_filter_is_styled_after_rendering(tmp_path, body, reason):
    note = "<b>hi</b> https://shop.example/a" if "urlize" not in body else "see https://shop.example/a"
    compiled, html, reference = emails(tmp_path, page("b, a { color: red } .a { width: 5px }", body),
                                       member(locale="en", attributes={"note": note}))
    assert compiled.fallback is not None and reason in compiled.fallback.reason
    assert compiled.fallback.location.line == 6
    assert html == reference
    assert dom_difference(html, reference) is None


def test_autoescape_true_and_safe_in_a_link_still_compile_once(tmp_path):
    body = ('<div>{% autoescape true %}{{ member.attributes.note }}{% endautoescape %}'
            '<a href="{{ \'https://shop.example/?a=1&amp;b=2\' | safe }}">go</a></div>')
    compiled, html, reference = emails(tmp_path, page("b, a { color: red }", body),
                                       member(locale="en", attributes={"note": "<b>x</b>"}))
    assert compiled.fallback is None
    assert dom_difference(html, reference) is None


@pytest.mark.parametrize(("style", "body", "selector", "line"), [
    ("p { color: red }\nli:nth-child { color: blue }", "<ul><li>a</li></ul>", "li:nth-child", 5),
    ('p { color: red }\n[data-x="a,b"] { color: blue }', '<p data-x="a,b">a</p>', '[data-x="a', 5),
    ('p { color: red }\n[data-x="a,b"] { color: blue }', DATA_CLASS, '[data-x="a', 5),
    # a selector of thousands of parts, which the selector library reads by recursing once per part
    ("p { color: red }\n" + "div " * 3000 + "p { color: blue }", "<p>a</p>",
     "div " * 15 + "... (12,001 characters)", 5),
    ("p { color: red }\n" + "div " * 3000 + "p { color: blue }", DATA_CLASS,
     "div " * 15 + "... (12,001 characters)", 5),
])
def test_a_selector_premailer_cannot_evaluate_is_a_template_error_naming_it(tmp_path, style, body, selector, line):
    project = program_dir(tmp_path, {"odd/en.html": page(style, body)})
    renderer = renderer_for(project)
    with pytest.raises(TemplateError) as raised:
        renderer.render("odd", member(locale="en"), now=NOW, tracked=False)
    assert str(raised.value).startswith(f"templates/odd/en.html:{line}: CSS inlining cannot read the selector "
                                        f"'{selector}'")
    result = CliRunner().invoke(cli, ["--project", str(project), "check"], env={"LOYALTY_MAIL_SECRET": SECRET})
    assert "Internal error" not in result.output and "Traceback" not in result.output
    assert f"templates/odd/en.html:{line}: CSS inlining cannot read the selector '{selector}'" in result.output


def test_a_long_descendant_selector_on_a_deeply_nested_page_is_matched_within_the_timeout(tmp_path):
    # `span` is no ancestor: each of the other compounds can match any of 60 ancestors, and
    # trying every combination again for each one would take hours, not premailer's milliseconds
    body = DATA_CLASS + "<div>" * 60 + "<p>deep</p>" + "</div>" * 60
    compiled, html, reference = emails(tmp_path, page("span div div div div div div p { color: red } "
                                                      "div div div div div div p { width: 2px }", body))
    assert compiled.fallback is not None
    assert html == reference
    assert '<p style="width:2px" width="2">deep</p>' in html


@pytest.mark.parametrize(("body", "style"), [
    # the block's <p> is printed inside the macro's <div class="box">
    ('{% macro box() %}<div class="box">{{ caller() }}</div>{% endmacro %}'
     '{% call box() %}<p class="a">x</p>{% endcall %}', ".box p { color: red } .a { width: 3px }"),
    # the macro's <div class="box"> is printed where the block is, inside <div class="main">
    ('<div class="side">{% macro box() %}<div class="box">{{ caller() }}</div>{% endmacro %}</div>'
     '<div class="main">{% call box() %}<p class="a">x</p>{% endcall %}</div>', ".main .box { color: red }"),
])
def test_a_call_block_and_its_macro_are_styled_where_they_are_printed_together(tmp_path, body, style):
    compiled, html, reference = emails(tmp_path, page(style, body))
    assert compiled.fallback is not None and "`{% call %}` block" in compiled.fallback.reason
    assert html == reference


def test_a_call_block_with_no_context_selector_still_compiles_once(tmp_path):
    body = ('{% macro box() %}<div class="box">{{ caller() }}</div>{% endmacro %}'
            '{% call box() %}<p class="a">x</p>{% endcall %}<p>{{ coupon("HELLO") | upper }}</p>'
            '{% set n = member.points | string | length %}<p>{{ n }}</p>')
    compiled, html, reference = emails(tmp_path, page(".box { color: red } .a { width: 3px }", body))
    assert compiled.fallback is None
    assert dom_difference(html, reference) is None


@pytest.mark.parametrize(("body", "style", "name"), [
    ('<p data-tier="{{ member.tier }}">x</p>', '[data-tier="gold"] { color: red }', "data-tier"),
    ('<p><a href="{{ unsubscribe_url }}">stop</a></p>', "a[href^=http] { color: #999 }", "href"),
    ('<p><a href="https://shop.example/{{ member.member_id }}">me</a></p>', 'a[href$="SV000123"] { color: red }',
     "href"),
    ('<div lang="{{ locale }}"><p>x</p></div>', "[lang|=en] p { color: red }", "lang"),
])
def test_an_attribute_selector_on_an_attribute_written_by_data_is_matched_after_rendering(tmp_path, body, style, name):
    compiled, html, reference = emails(tmp_path, page(style, body))
    assert compiled.fallback is not None
    assert f"the {name} attribute depends on data and the selector" in compiled.fallback.reason
    assert html == reference
    assert "color:" in html


def test_an_attribute_selector_on_fixed_attributes_still_compiles_once(tmp_path):
    body = '<p lang="vi"><a href="https://shop.example/">shop</a> <a href="{{ unsubscribe_url }}">stop</a></p>'
    compiled, html, reference = emails(tmp_path, page("[lang|=vi] { color: red } a[title] { color: blue }", body))
    assert compiled.fallback is None
    assert dom_difference(html, reference) is None


@pytest.mark.parametrize("style", [
    ".perk { color: red } .perk:last-child { border: 0 } li[style] { height: 3px }",
    ".perk { text-align: center } .perk:last-child { border: 0 } li[align] { height: 3px }",
])
def test_rules_kept_for_elements_styled_per_email_are_matched_before_premailer_writes_styles(tmp_path, style):
    # `.perk:last-child` next to the loop is applied per email; `li[style]` matches no <li> as
    # written, only premailer gives them a style
    body = '<ul>{% for p in tier.perks %}<li class="perk">{{ p }}</li>{% endfor %}</ul>'
    compiled, html, reference = emails(tmp_path, page(style, body))
    assert compiled.restyler is not None
    assert dom_difference(html, reference) is None
    assert "height" not in html


@pytest.mark.parametrize(("body", "style"), [
    # the inner <p> closes the outer one where the HTML parser reads the block, not where Jinja skips it
    ('<p class="a">a{% if member.points > 100 %}<p>b</p>{% endif %}<span>c</span></p>', ".a span { color: red }"),
    ('<p class="a">{% for p in tier.perks %}<p>{{ p }}</p>{% endfor %}<span>c</span></p>', ".a span { color: red }"),
])
def test_a_block_whose_tags_the_html_parser_puts_in_different_elements_is_styled_after_rendering(
        tmp_path, body, style):
    for someone in (member(locale="en"), member(locale="en", points=50, tier="member")):
        compiled, html, reference = emails(tmp_path / str(someone["tier"]), page(style, body), someone)
        assert compiled.fallback is not None and "this block's tags stand in different elements" \
            in compiled.fallback.reason
        assert dom_difference(html, reference) is None


@pytest.mark.parametrize(("body", "reason"), [
    ("{% set frag = '<b>x</b>' | safe %}<div class=\"box\">{{ frag }}</div>", "`frag` holds markup"),
    ('{% macro m() %}<b>x</b>{% endmacro %}{% set held = m() %}<div class="box">{{ held }}</div>',
     "`held` holds markup"),
    ('{% macro m() %}<b>x</b>{% endmacro %}{% set held = m() %}{% set again = held %}'
     '<div class="box">{{ again }}</div>', "`again` holds markup"),
    ('{% macro card(x) %}<div class="box">{{ x }}</div>{% endmacro %}{% macro bold() %}<b>x</b>{% endmacro %}'
     '{{ card(bold()) }}', "markup (`bold`) is passed to a macro that prints it"),
])
def test_markup_held_in_a_variable_or_passed_to_a_macro_is_styled_where_it_is_printed(tmp_path, body, reason):
    compiled, html, reference = emails(tmp_path, page(".box b { color: red }", body))
    assert compiled.fallback is not None and reason in compiled.fallback.reason
    assert dom_difference(html, reference) is None
    assert '<b style="color:red">x</b>' in html


def test_a_macro_given_data_and_a_value_set_from_data_still_compile_once(tmp_path):
    body = ('{% macro card(x) %}<div class="box">{{ x }}</div>{% endmacro %}{{ card(member.first_name) }}'
            '{% set name = member.first_name | upper %}<b>{{ name }}</b>')
    compiled, html, reference = emails(tmp_path, page(".box b { color: red }", body))
    assert compiled.fallback is None
    assert dom_difference(html, reference) is None


def test_markup_printed_into_an_attribute_value_is_styled_after_rendering(tmp_path):
    body = '<p title="{{ member.attributes.note | safe }}">t</p>'
    compiled, html, reference = emails(tmp_path, page("[lang] { color: red }", body),
                                       member(locale="en", attributes={"note": 'x" lang="en'}))
    assert compiled.fallback is not None and "into the title attribute" in compiled.fallback.reason
    assert dom_difference(html, reference) is None
    assert 'style="color:red"' in html


def test_text_after_a_style_premailer_removes_and_before_a_statement_is_inlined_after_rendering(tmp_path):
    body = "<style>b { color: blue }</style>after{% if member.points > 100 %}y{% endif %}<p>z</p>"
    for someone in (member(locale="en"), member(locale="en", points=50, tier="member")):
        compiled, html, reference = emails(tmp_path / str(someone["tier"]), page("p { color: red }", body), someone)
        assert compiled.fallback is not None and "removes the <style> before this template code" \
            in compiled.fallback.reason
        assert dom_difference(html, reference) is None


def test_a_style_premailer_keeps_before_a_statement_still_compiles_once(tmp_path):
    body = ("<style>@media (max-width: 600px) { b { color: blue } }</style>after"
            "{% if member.points > 100 %}y{% endif %}<p>z</p>")
    compiled, html, reference = emails(tmp_path, page("p { color: red }", body))
    assert compiled.fallback is None
    assert dom_difference(html, reference) is None


@pytest.mark.parametrize(("body", "style"), [
    ('{% block b %}<p>x</p>{% endblock %}<div class="other">{{ self.b() }}</div>', ".other p { color: red }"),
    ('{% block b %}<p>x</p>{% endblock %}{{ self.b() }}', "p + p { color: red }"),
    ('{% block b %}<p>x</p>{% endblock %}{{ self.b() }}', "p:first-child { color: red }"),
])
def test_a_block_printed_again_with_self_is_styled_where_it_is_printed(tmp_path, body, style):
    compiled, html, reference = emails(tmp_path, page(style, body))
    assert compiled.fallback is not None and "self.<block>()" in compiled.fallback.reason
    assert dom_difference(html, reference) is None


def test_a_block_printed_again_with_no_context_selector_still_compiles_once(tmp_path):
    body = '<title>{% block t %}Hi{% endblock %}</title><h1 class="a">{{ self.t() }}</h1>'
    compiled, html, reference = emails(tmp_path, page(".a { color: red }", body))
    assert compiled.fallback is None
    assert dom_difference(html, reference) is None


def test_a_block_or_set_in_the_title_is_run_by_the_text_part_without_printing_it(tmp_path):
    source = ('---\nsubject: "x"\n---\n<html><head><title>{% set who = member.first_name %}'
              '{% block title %}Gold &amp; more{% endblock %}</title><style>.a { color: red }</style></head>\n'
              '<body><h1 class="a">{{ self.title() }}, {{ who }}</h1></body></html>\n')
    renderer = renderer_for(program_dir(tmp_path, {"odd/en.html": source}))
    assert renderer.compiled("odd", "en").fallback is None
    rendered = renderer.render("odd", member(locale="en"), now=NOW, tracked=False)
    assert dom_difference(rendered.html, renderer.reference_html("odd", member(locale="en"), now=NOW)) is None
    assert rendered.text.startswith("Gold & more, Lan\n====")
    assert "Gold & more" not in rendered.text[len("Gold & more"):]


def test_markup_nested_past_the_html_parsers_limit_is_an_error_at_its_line(tmp_path):
    body = "<p>top</p>\n" + "<div>" * 300 + "deep" + "</div>" * 300 + '\n<a href="{{ unsubscribe_url }}">u</a>'
    renderer = renderer_for(program_dir(tmp_path, {"odd/en.html": page("p { color: red }", body)}))
    with pytest.raises(TemplateError) as raised:
        renderer.compiled("odd", "en")
    assert str(raised.value).startswith("templates/odd/en.html:7: elements nested more than 255 deep")
    assert "drops the rest of the email" in str(raised.value)


def test_markup_rendered_past_the_html_parsers_limit_is_an_error_when_inlined_per_email(tmp_path):
    body = ('{% macro nest(n) %}<div>{% if n %}{{ nest(n - 1) }}{% endif %}</div>{% endmacro %}'
            + DATA_CLASS + '{{ nest(300) }}<a href="{{ unsubscribe_url }}">u</a>')
    renderer = renderer_for(program_dir(tmp_path, {"odd/en.html": page("p { color: red }", body)}))
    assert renderer.compiled("odd", "en").fallback is not None
    with pytest.raises(TemplateError, match=r"^templates/odd/en.html: as rendered \(line \d+ of the email\), "
                                            "elements nested more than 255 deep"):
        renderer.render("odd", member(locale="en"), now=NOW, tracked=False)


@pytest.mark.parametrize("tag", ["xmp", "iframe", "noembed", "noframes"])
def test_template_code_in_an_element_whose_text_premailer_writes_back_escaped_is_inlined_after_rendering(
        tmp_path, tag):
    body = f"<{tag}>{{{{ member.first_name }}}}</{tag}><p>x</p>"
    compiled, html, reference = emails(tmp_path, page("p { color: red }", body),
                                       member(locale="en", first_name="<b>Ann</b>"))
    assert compiled.fallback is not None and f"inside <{tag}>" in compiled.fallback.reason
    assert dom_difference(html, reference) is None

"""Compile-time inlining reads template syntax with Jinja's own lexer: strings and comments
holding `}}` or `%}`, raw blocks and Outlook conditional comments are handled as Jinja and the
HTML parser see them, and the compiled email equals "render, then premailer"."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loyalty_mail.rendering.dom import dom_difference
from loyalty_mail.rendering.jinja_source import constructs

from .rendering_program import NOW, ROOT, member, program_dir, renderer_for

WELCOME = (ROOT / "templates/welcome/en.html").read_text()


def with_content(extra: str) -> str:
    """The example welcome email with `extra` at the end of its content block."""
    return WELCOME.replace("{% endblock %}", extra + "{% endblock %}", 1)


def compiled_and_reference(tmp_path: Path, source: str) -> tuple[object, str, str]:
    renderer = renderer_for(program_dir(tmp_path, {"welcome/en.html": source}))
    someone = member(locale="en")
    html = renderer.render("welcome", someone, now=NOW, tracked=False).html
    return renderer.compiled("welcome", "en").fallback, html, renderer.reference_html("welcome", someone, now=NOW)


def test_constructs_follow_the_lexer_not_the_first_closing_braces():
    source = "a {{ '}}' | e }} b {# x %} #}{% raw %}{{ y }}{% endraw %}{%- if z -%} c {% endif %}{{ f(1) }}"
    found = [(c.kind, c.code(source), c.keyword, c.called) for c in constructs(source)]
    assert found == [("expression", "{{ '}}' | e }}", "", ""), ("comment", "{# x %} #}", "", ""),
                     ("raw", "{% raw %}{{ y }}{% endraw %}", "", ""), ("statement", "{%- if z -%} ", "if", ""),
                     ("statement", "{% endif %}", "endif", ""), ("expression", "{{ f(1) }}", "", "f")]


def test_a_string_holding_closing_braces_in_a_link_compiles_once(tmp_path):
    fallback, html, reference = compiled_and_reference(tmp_path, with_content(
        '<p><a href="https://shop.example/s?q={{ \'}}\' | urlencode }}">search</a></p>'))
    assert fallback is None
    assert "https://shop.example/s?q=%7D%7D" in html
    assert dom_difference(html, reference) is None


def test_template_code_inside_an_outlook_conditional_comment_stays_inside_it(tmp_path):
    fallback, html, reference = compiled_and_reference(tmp_path, with_content(
        '<!--[if mso]><table><tr><td>{% if member.points > 10 %}big{% endif %}</td></tr></table>'
        '<![endif]--><p class="after">after</p>'))
    assert fallback is None
    assert "<!--[if mso]><table><tr><td>big</td></tr></table><![endif]-->" in html
    assert dom_difference(html, reference) is None


# -- random templates: compiled once, or a stated fallback, never a different email ---------

_TEXT = st.sampled_from(["hi", "}}", "%}", "#}", "{", "}", "a&b", "<b>x</b>", " "])
_STRING = _TEXT.map(lambda t: "'" + t.replace("'", "") + "'")


def _piece(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        _TEXT.filter(lambda t: "{" not in t and "}" not in t and "#" not in t),
        _STRING.map(lambda s: "{{ " + s + " }}"),
        _TEXT.map(lambda t: "{# " + t.replace("#}", "") + " #}"),
        _TEXT.map(lambda t: "{% raw %}" + t.replace("{% endraw", "") + "{% endraw %}"),
        children.map(lambda c: "{% if member.points > 100 %}" + c + "{% else %}-{% endif %}"),
        children.map(lambda c: "{% for i in range(2) %}<span>" + c + "</span>{% endfor %}"),
        children.map(lambda c: "<!--[if mso]><td>" + c + "</td><![endif]-->"),
        children.map(lambda c: "<p class=\"note\">" + c + "</p>"),
        children.map(lambda c: "<span style=\"color: black\" width=\"5\">" + c + "</span>"),
        children.map(lambda c: "{% macro m() %}<i>" + c + "</i>{% endmacro %}{{ m() }}"),
        # each reason to inline per email: data in a class, an id or a style, uneven blocks,
        # a <style> in a condition
        children.map(lambda c: "<p class=\"{{ 'note' if member.points > 100 else 'plain' }}\">" + c + "</p>"),
        children.map(lambda c: "<span id=\"{{ 'x' if member.points > 100 else 'y' }}\">" + c + "</span>"),
        children.map(lambda c: "<b style=\"color: {{ 'red' if member.points > 100 else 'blue' }}\">" + c + "</b>"),
        children.map(lambda c: "{% if member.points > 100 %}<div class=\"note\">{% endif %}" + c
                     + "{% if member.points > 100 %}</div>{% endif %}"),
        children.map(lambda c: "{% if member.points > 100 %}<style>.note { color: #123456 } span { width: 4px }"
                     "</style>{% endif %}" + c),
    )


_BODY = st.recursive(_piece(st.just("x")), lambda inner: st.lists(_piece(inner), min_size=1, max_size=3).map("".join),
                     max_leaves=8)


_STYLES = st.sampled_from(["", "span + span { color: red }", ".note:last-child { margin: 0 }",
                            "i ~ p { color: blue }", ".random p:first-child { padding: 0 }",
                            "p + p { color: green }",
                            # the cascade applied per email: specificity, !important, HTML attributes
                            "span { color: blue; width: 20px } span + span { color: red; width: 30px }",
                            ".random span:last-child { text-align: center } span { text-align: left !important }",
                            "span:first-child { background-color: #abc } i ~ span { height: 4px }",
                            # rules that the data in a class or id decides
                            "#x span { color: teal } .note b { width: 2px } p.plain { text-align: right }"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_BODY, _STYLES)
def test_random_templates_compile_to_the_same_email_or_say_why_not(body, style):
    styled = f"<style>{style}</style>" if style else ""
    source = with_content(styled + "<div class=\"random\">" + body + "</div>")
    with tempfile.TemporaryDirectory() as folder:
        renderer = renderer_for(program_dir(Path(folder), {"welcome/en.html": source}))
        fallback = renderer.compiled("welcome", "en").fallback
        assert fallback is None or fallback.reason  # a stated reason, with its place
        for someone in (member(locale="en"), member(locale="en", points=50, tier="member"), member(locale="en")):
            html = renderer.render("welcome", someone, now=NOW, tracked=False).html
            # compiled once or inlined per email: the same DOM as rendering, then premailer
            assert dom_difference(html, renderer.reference_html("welcome", someone, now=NOW)) is None


@pytest.mark.parametrize("literal", ["'%}'", "'{%'", "\"}}\"", "'#}'"])
def test_statement_arguments_holding_delimiters_compile_once(tmp_path, literal):
    fallback, html, reference = compiled_and_reference(tmp_path, with_content(
        "{% set label = " + literal + " %}<p>{{ label }}</p>"))
    assert fallback is None
    assert dom_difference(html, reference) is None


# -- the fallback is decided by what a selector can match -----------------------------------

def page(style: str, body: str) -> str:
    return (f'---\nsubject: "x"\n---\n<html><head><style>{style}</style></head>\n<body>\n'
            f"{body}\n</body></html>\n")


PERKS = '<ul>{% for p in tier.perks %}<li class="perk">{{ p }}</li>{% endfor %}</ul>'


@pytest.mark.parametrize(("style", "body", "line", "selector"), [
    (".perk { border-bottom: 1px solid #ccc }\n.perk:last-child { border-bottom: 0 }", PERKS, 5,
     ".perk:last-child"),
    ("@import url(https://fonts.example/x.css);\nli + li { color: red }", PERKS, 5, "li + li"),
    ("p { margin: 0 }\np ~ p { color: red }",
     '<div>{% if member.points > 5 %}<p>a</p>{% endif %}<p>b</p></div>', 5, "p ~ p"),
])
def test_a_structural_selector_that_a_loop_or_condition_can_change_is_applied_per_email_naming_it(
        tmp_path, style, body, line, selector):
    renderer = renderer_for(program_dir(tmp_path, {"odd/vi.html": page(style, body)}))
    compiled = renderer.compiled("odd", "vi")
    assert compiled.fallback is None and compiled.restyler is not None
    assert compiled.restyler.selectors == [selector]
    assert [(rule, at.file, at.line) for rule, at in compiled.dynamic] == [(selector, "templates/odd/vi.html", line)]
    for someone in (member(), member(points=1, tier="member")):
        html = renderer.render("odd", someone, now=NOW, tracked=False).html
        assert dom_difference(html, renderer.reference_html("odd", someone, now=NOW)) is None


@pytest.mark.parametrize("style", [
    "p + .stat { margin-top: 0 }",                    # Foundation/Ink: matches nothing in this email
    "td + td { padding-left: 8px }",                  # fixed cells of one row, repeated by the loop
    ".perk:first-child { font-weight: bold }",        # only in the fixed list below
])
def test_a_structural_selector_that_only_fixed_markup_can_match_keeps_compile_once(tmp_path, style):
    body = ('<table>{% for p in tier.perks %}<tr><td>{{ loop.index }}</td><td>{{ p }}</td></tr>{% endfor %}</table>'
            '<ul><li class="perk">fixed</li><li class="perk">also fixed</li></ul>')
    renderer = renderer_for(program_dir(tmp_path, {"odd/vi.html": page(style, body)}))
    assert renderer.compiled("odd", "vi").fallback is None
    html = renderer.render("odd", member(), now=NOW, tracked=False).html
    assert dom_difference(html, renderer.reference_html("odd", member(), now=NOW)) is None


def test_a_style_inside_a_condition_applies_only_to_the_members_it_is_rendered_for(tmp_path):
    body = ("{% if member.tier == 'gold' %}<style>.note { color: #b8860b }</style>{% endif %}"
            '<p class="note">hello</p>')
    source = (f'---\nsubject: "x"\n---\n<html><head></head>\n<body>\n{body}\n</body></html>\n')
    renderer = renderer_for(program_dir(tmp_path, {"odd/vi.html": source}))
    fallback = renderer.compiled("odd", "vi").fallback
    assert fallback is not None and "inside a condition or loop" in fallback.reason
    gold = renderer.render("odd", member(tier="gold"), now=NOW, tracked=False).html
    other = renderer.render("odd", member(tier="member", points=10), now=NOW, tracked=False).html
    assert "#b8860b" in gold and "#b8860b" not in other


def test_the_per_email_path_skips_rules_nothing_in_the_email_can_match_and_gives_the_same_email(tmp_path):
    unused = "\n".join(f".unused-{i} td.cell-{i} {{ color: #{i:06x} }}" for i in range(300))
    style = (unused + "\n.perk { border-bottom: 1px solid #ccc }\n.perk:last-child { border-bottom: 0 }\n"
             "li { color: #111 }\na:hover { color: red }\n@media (max-width: 600px) { .perk { padding: 0 } }")
    uneven = ('{% if member.points > 5 %}<div class="box">{% endif %}' + PERKS
              + '{% if member.points > 5 %}</div>{% endif %}')
    renderer = renderer_for(program_dir(tmp_path, {"odd/vi.html": page(style, uneven)}))
    compiled = renderer.compiled("odd", "vi")
    assert compiled.fallback is not None  # a control block that opens and closes a <div> unevenly
    for someone in (member(), member(points=1, tier="member")):
        html = renderer.render("odd", someone, now=NOW, tracked=False).html
        assert dom_difference(html, renderer.reference_html("odd", someone, now=NOW)) is None
        assert "a:hover" in html and "@media" in html  # rules premailer keeps in <style> are kept


def test_pruning_keeps_every_rule_that_could_match_and_drops_only_the_rest():
    from loyalty_mail.rendering.inlining import prune_unmatchable_rules

    source = ('<html><head><style>.a { color: red } .gone { color: blue } div > .b { margin: 0 } '
              'p:hover { color: green } * { padding: 0 } #main { width: 1px } #other { width: 2px } '
              'td.x, span.none { border: 0 }</style></head><body><div id="main"><p class="a b">x</p>'
              '{% for i in range(2) %}<table><tr><td class="x">{{ i }}</td></tr></table>{% endfor %}'
              '</div></body></html>')
    pruned = prune_unmatchable_rules(source)
    assert pruned is not None
    for kept in (".a", "div > .b", "p:hover", "*", "#main", "td.x, span.none"):
        assert kept + " {" in pruned
    for dropped in (".gone", "#other"):
        assert dropped not in pruned
    # a class or id written by data may be any class or id: rules on it are kept
    by_class = prune_unmatchable_rules(source.replace('class="x"', 'class="{{ c }}"'))
    assert by_class is not None and ".gone {" in by_class and "#other" not in by_class
    by_id = prune_unmatchable_rules(source.replace('id="main"', 'id="{{ c }}"'))
    assert by_id is not None and "#other {" in by_id and ".gone" not in by_id
    assert prune_unmatchable_rules(source.replace('<td class="x">', '<td {{ c }}>')) is None
    assert prune_unmatchable_rules(source.replace("{{ i }}", "{{ i | safe }}")) is None

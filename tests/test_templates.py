"""Templates: compile-time inlining equals render-then-premailer, sandbox, locales, tracking, MIME."""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Callable
from decimal import Decimal
from urllib.parse import urlparse

import lxml.html
import pytest
from hypothesis import given
from hypothesis import strategies as st

from loyalty_mail.errors import TemplateError
from loyalty_mail.rendering import Renderer
from loyalty_mail.rendering.checks import (
    check_templates,
    sample_members,
    sample_occurrence,
    sample_occurrences,
)
from loyalty_mail.rendering.dom import dom_difference
from loyalty_mail.rendering.inlining import inline_css
from loyalty_mail.rendering.renderer import tidy_text
from loyalty_mail.rendering.text import html_to_text
from loyalty_mail.signing import BadToken, TokenSigner, coupon_code

from .conftest import FIXTURES
from .rendering_program import NOW, ROOT, SECRET, member, program_dir, renderer_for



@pytest.fixture(scope="module")
def example() -> Renderer:
    """The shipped example program's templates, with signing enabled."""
    return renderer_for(ROOT)


# -- compile-time inlining is the same as rendering then inlining ---------------------------

@pytest.mark.parametrize("name", ["welcome", "milestone", "tier_upgrade", "reengagement", "points_receipt",
                                  "tier_at_risk", "tier_downgrade", "birthday", "reward_available", "statement",
                                  "points_expiring"])
@pytest.mark.parametrize("locale", ["vi", "en"])
def test_example_templates_compile_and_match_per_email_inlining(example, name, locale):
    compiled = example.compiled(name, locale)
    assert compiled.fallback is None
    compared = 0
    for sample in sample_members(example, locale, NOW):
        for occurrence in sample_occurrences(example):
            rendered = example.render(name, sample, now=NOW, occurrence=occurrence, tracked=False,
                                      locale=locale)
            reference = example.reference_html(name, sample, now=NOW, occurrence=occurrence,
                                               locale=locale)
            assert dom_difference(rendered.html, reference) is None
            compared += 1
    assert compared == 4 * len(sample_occurrences(example))
    # The compiled email really is inlined: styles on elements, @media kept with !important.
    assert 'style="' in rendered.html and "!important" in rendered.html


def test_dom_comparison_notices_a_changed_style():
    a = '<html><body><p style="color:red">x</p></body></html>'
    assert dom_difference(a, a) is None
    assert dom_difference(a, a.replace("red", "blue")) is not None
    assert dom_difference(a, a.replace("x", "y")) is not None


CORPUS = FIXTURES / "email-templates"


def _port_handlebars(source: str) -> str:
    """Mustachio/Handlebars -> Jinja, as a marketer porting these emails would write them."""
    source = re.sub(r"\{\{#each ([\w.]+)\}\}", r"{% for this in \1 %}", source)
    source = source.replace("{{/each}}", "{% endfor %}")
    source = re.sub(r"\{\{#if ([\w.]+)\}\}", r"{% if \1 %}", source)
    source = re.sub(r"\{\{else if ([\w.]+)\}\}", r"{% elif \1 %}", source)
    source = source.replace("{{else}}", "{% else %}").replace("{{/if}}", "{% endif %}")
    return re.sub(r"\{\{\s*([\w.]+)\s*\}\}", r"{{ \1 }}", source)


def _corpus_data(source: str, name: str) -> dict[str, object]:
    data_file = CORPUS / "data" / name.replace(".html", "_data.json")
    if data_file.exists():
        import json
        return json.loads(data_file.read_text())
    fields = set(re.findall(r"\{\{ (\w+) \}\}", source))
    data: dict[str, object] = {f: (f"https://example.com/{f}" if f.endswith("url") else f"<{f}>")
                               for f in fields}
    data["receipt_details"] = [{"description": "Item one", "amount": "$10"},
                               {"description": "Item two", "amount": "$5"}]
    return data


def test_corpus_templates_ported_to_jinja_match_per_email_inlining():
    from loyalty_mail.rendering.inlining import NeedsFallback, compile_inlined
    from loyalty_mail.rendering.renderer import LinkTracker, email_environment
    from loyalty_mail.rendering.text import html_to_text

    files = sorted(CORPUS.glob("*.html"))
    assert len(files) == 8
    env = email_environment(None, autoescape=True)
    env.undefined = __import__("jinja2").Undefined  # the corpus data does not fill every field
    compiled_count = 0
    for path in files:
        source = _port_handlebars(path.read_text(encoding="utf-8"))
        data = _corpus_data(source, path.name)
        context = {**data, "_tracker": LinkTracker(None, "https://t.example", "preview", frozenset(), False),
                   "tracking": False, "open_pixel_url": lambda: ""}
        try:
            compiled = compile_inlined(source, text_of=html_to_text)
        except NeedsFallback as exc:
            pytest.fail(f"{path.name}: unexpected fallback: {exc}")
        ours = env.from_string(compiled.source).render(context)
        reference = inline_css(env.from_string(source).render(context))
        assert dom_difference(ours, reference) is None, path.name
        compiled_count += 1
        text = env.from_string(compiled.text_source).render(context)
        assert len(text.split()) > 10, path.name
    assert compiled_count == 8


# Structural rules that loops in the corpus templates change (receipt rows, list items), with
# the cascade's hard cases: a lower specificity than a static rule, !important, a width that
# premailer also writes as an HTML attribute, rules that a style attribute overrides.
_DYNAMIC_RULES = ("tr:last-child td { border-bottom: 0; width: 50px }\n"
                  "td + td { text-align: right; color: #123456 }\n"
                  "tr ~ tr td { padding-top: 3px !important }\n"
                  "p:first-child { margin-top: 0 }\n"
                  "table td:first-child { color: #654321; background-color: #eee }\n"
                  "li + li, a:last-child { font-weight: bold }\n")


def test_corpus_templates_with_structural_rules_next_to_loops_match_per_email_inlining():
    """Compile once, apply the rules that loops change on each rendered email: the same DOM as
    rendering, then premailer, for every corpus template with more rules added."""
    from loyalty_mail.rendering.inlining import NeedsFallback, compile_inlined
    from loyalty_mail.rendering.renderer import LinkTracker, email_environment
    from loyalty_mail.rendering.text import html_to_text

    env = email_environment(None, autoescape=True)
    env.undefined = __import__("jinja2").Undefined
    per_email = 0
    for path in sorted(CORPUS.glob("*.html")):
        source = _port_handlebars(path.read_text(encoding="utf-8"))
        source = re.sub(r"(?i)</head>", f"<style>{_DYNAMIC_RULES}</style></head>", source, count=1)
        data = _corpus_data(source, path.name)
        try:
            compiled = compile_inlined(source, text_of=html_to_text)
        except NeedsFallback as exc:
            pytest.fail(f"{path.name}: unexpected fallback: {exc}")
        per_email += compiled.restyler is not None
        for rows in (0, 1, 3):
            items = [{"description": f"Item {n}", "amount": f"${n}"} for n in range(rows)]
            context = {**data, "receipt_details": items,
                       "_tracker": LinkTracker(None, "https://t.example", "preview", frozenset(), False),
                       "tracking": False, "open_pixel_url": lambda: ""}
            ours = env.from_string(compiled.source).render(context)
            if compiled.restyler is not None:
                ours = compiled.restyler.apply(ours)
            reference = inline_css(env.from_string(source).render(context))
            assert dom_difference(ours, reference) is None, (path.name, rows)
    assert per_email >= 2  # the receipts repeat rows in a loop


# Each reason a template is inlined per email, put into a corpus template: (name, edit of the
# ported source, the data that varies). `A` and `B` stand for classes the template's CSS styles.
def _fallback_reasons(a: str, b: str) -> list[tuple[str, Callable[[str], str], list[dict[str, object]]]]:
    def after_body(source: str, old: str, new: str) -> str:
        body = re.search(r"(?i)<body[^>]*>", source)
        assert body is not None
        return source[:body.end()] + source[body.end():].replace(old, new, 1)

    def before(source: str, tag: str, text: str) -> str:
        return re.sub(f"(?i)</{tag}>", lambda m: text + m.group(0), source, count=1)

    return [
        ("data in a class", lambda s: after_body(s, 'class="', 'class="{{ extra }} '),
         [{"extra": ""}, {"extra": a}, {"extra": f"{a} {b}"}, {"extra": a}]),
        ("data in an id", lambda s: before(after_body(s, "<table", '<table id="{{ block }}"'), "head",
                                           "<style>#promo td { color: #123456 } table#promo { width: 90% }</style>"),
         [{"block": "promo"}, {"block": "other"}, {"block": "promo"}]),
        ("data in a style", lambda s: after_body(s, "<td", '<td style="color: {{ color }}; padding: 3px"'),
         [{"color": "#111111"}, {"color": "red"}, {"color": "#111111"}]),
        ("uneven control blocks",
         lambda s: before(after_body(s, "<table", '{% if wide %}<div class="' + a + '">{% endif %}<table'), "body",
                          "{% if wide %}</div>{% endif %}"),
         [{"wide": True}, {"wide": False}, {"wide": True}]),
        ("a <style> in a condition",
         lambda s: before(s, "head", "{% if dark %}<style>p { color: #eeeeee } ." + a +
                          " { background-color: #222222 !important } td + td { width: 7px }</style>{% endif %}"),
         [{"dark": True}, {"dark": False}, {"dark": True}]),
        ("macro call sites",
         lambda s: before(before(s, "body", '{% macro chip(v) %}<span class="' + a + '">{{ v }}</span>{% endmacro %}'
                                 '<div class="box">{{ chip(1) }}</div><p>{{ chip(2) }}</p>'),
                          "head", "<style>.box ." + a + " { color: #c0ffee } span." + a + " { width: 5px }</style>"),
         [{}]),
    ]


def test_corpus_templates_for_every_reason_to_fall_back_inline_per_email_as_premailer_does():
    """Each corpus template with each reason to fall back put in: the per-email path (the
    stylesheet compiled once, applied to each rendered email) writes exactly what premailer
    writes, byte for byte, for each variant of the data, repeated so that cached styles are
    used again."""
    from loyalty_mail.rendering.inlining import NeedsFallback, compile_inlined, serialize
    from loyalty_mail.rendering.renderer import LinkTracker, email_environment
    from loyalty_mail.rendering.replay import CompiledInliner
    from loyalty_mail.rendering.text import html_to_text

    env = email_environment(None, autoescape=True)
    env.undefined = __import__("jinja2").Undefined
    compared = 0
    for path in sorted(CORPUS.glob("*.html")):
        source = _port_handlebars(path.read_text(encoding="utf-8"))
        styled = [name for name in dict.fromkeys(re.findall(r"\.([a-zA-Z][\w-]*)\s*[{,]", source))
                  if f'class="{name}' in source or f' {name}"' in source] + ["lm-a", "lm-b"]
        source = re.sub("(?i)</head>", lambda m: "<style>.lm-a { color: #0a0a0a } .lm-b td { padding: 1px } "
                        "p.lm-a:first-child { margin: 0 } td:last-child { border-bottom: 0 } "
                        "td + td { text-align: right } p ~ p { margin-top: 2px } "
                        "table > tbody > tr > td:first-child { color: #010101 }</style>" + m.group(0), source, count=1)
        for reason, edit, variants in _fallback_reasons(styled[0], styled[1]):
            changed = edit(source)
            with pytest.raises(NeedsFallback):
                compile_inlined(changed, text_of=html_to_text)
            template, inliner = env.from_string(changed), CompiledInliner()
            for variant in variants:
                context = {**_corpus_data(source, path.name), **variant,
                           "_tracker": LinkTracker(None, "https://t.example", "preview", frozenset(), False),
                           "tracking": False, "open_pixel_url": lambda: ""}
                rendered = template.render(context)
                reference = inline_css(rendered)
                ours = serialize(inliner.transform(rendered)[1])
                assert ours == reference, (path.name, reason, variant, dom_difference(ours, reference))
                compared += 1
    assert compared == 8 * 17


def test_known_premailer_pitfalls_are_avoided(tmp_path):
    page = """---
subject: "Pitfalls for {{ member.first_name }}"
---
<html><head><title>{{ subject }}</title><style>
a.cta { color: #c8102e }
td.row { padding: 4px }
@media only screen and (max-width: 600px) { .wide { width: 100% !important } }
</style></head><body>
<table class="wide">
{% for perk in tier.perks %}
<tr><td class="row">{{ perk }}</td></tr>
{% endfor %}
</table>
{% if member.points > 0 %}<p>positive</p>{% endif %}
<a class="cta" href="{{ view_in_browser_url }}">view</a>
</body></html>
"""
    renderer = renderer_for(program_dir(tmp_path, {"pitfalls/vi.html": page}))
    compiled = renderer.compiled("pitfalls", "vi")
    assert compiled.fallback is None
    rendered = renderer.render("pitfalls", member(), now=NOW, tracked=False)
    html = rendered.html
    assert "{{%20" not in html and "%7B%7B" not in html           # href placeholder kept intact
    assert "&gt; 0" not in html and "positive" in html            # `>` inside {% if %} untouched
    assert "<title>Pitfalls for Lan</title>" in html               # title holds text, not code
    assert "width: 100% !important" in html or "width:100% !important" in html
    rows = re.findall(r'<tr><td class="row" style="padding:4px">([^<]+)</td></tr>', html)
    assert rows == ["Giảm 10% mọi đơn hàng", "Miễn phí giao hàng", "Mua sớm trong các đợt khuyến mãi"]
    assert html.index("<table") < html.index("Giảm 10%") < html.index("</table>")
    assert dom_difference(html, renderer.reference_html("pitfalls", member(), now=NOW)) is None


@pytest.mark.parametrize("line_end", ["\r\n", "\r", "\r\r\n"])  # Windows, old Mac, converted twice
def test_a_template_saved_with_windows_line_ends_compiles_as_with_unix_ones(tmp_path, line_end):
    page = ('---\nsubject: "x"\n---\n<html><head><style>p { color: red }</style></head><body>\n'
            '<p>{{ 1 }}</p>\n<p>{% if tier.next %}\n{{ member.first_name }}{% endif %}</p>\n</body></html>\n')
    project = program_dir(tmp_path, {"crlf/vi.html": page, "lf/vi.html": page})
    (project / "templates" / "crlf" / "vi.html").write_bytes(page.replace("\n", line_end).encode())
    if line_end == "\r\r\n":  # two line ends each
        (project / "templates" / "lf" / "vi.html").write_text(page.replace("\n", "\n\n"), encoding="utf-8")
    renderer = renderer_for(project)
    assert renderer.compiled("crlf", "vi").fallback is None
    rendered = renderer.render("crlf", member(), now=NOW, tracked=False)
    assert rendered.html == renderer.render("lf", member(), now=NOW, tracked=False).html
    assert dom_difference(rendered.html, renderer.reference_html("crlf", member(), now=NOW)) is None


@pytest.mark.parametrize(("body", "line", "reason"), [
    ('<p class="{{ tier.name }}">x</p>', 6, "class attribute depends on data"),
    ('<p id="m-{{ member.member_id }}">x</p>', 6, "id attribute depends on data"),
    ('<td {% if tier.next %}bgcolor="#fff"{% endif %}>x</td>', 6, "inside a tag"),
    ('{% if tier.next %}<div class="box">{% endif %}<p>x</p>{% if tier.next %}</div>{% endif %}', 6,
     "closed outside it"),
    ('</head><body class="tier-{{ tier.name }}">', 6, "class attribute depends on data"),
])
def test_data_dependent_markup_falls_back_with_line_and_reason(tmp_path, body, line, reason):
    style = ".box { color: blue }"
    page = (f'---\nsubject: "x"\n---\n<html><head><style>{style}</style></head>\n<body>\n'
            f"{body}\n</body></html>\n")
    if body.startswith("</head>"):  # a condition in <head>, then the body tag itself
        page = (f'---\nsubject: "x"\n---\n<html><head><style>{style}</style>\n'
                f'{{% if tier.next %}}<meta name="x" content="y">{{% endif %}}\n{body}\n<p>x</p>\n</body></html>\n')
    renderer = renderer_for(program_dir(tmp_path, {"odd/vi.html": page}))
    compiled = renderer.compiled("odd", "vi")
    assert compiled.fallback is not None
    assert reason in compiled.fallback.reason
    assert compiled.fallback.location.file == "templates/odd/vi.html"
    assert compiled.fallback.location.line == line
    # The fallback still produces exactly what rendering then inlining produces, tracked or not.
    rendered = renderer.render("odd", member(), now=NOW, tracked=False)
    assert dom_difference(rendered.html, renderer.reference_html("odd", member(), now=NOW)) is None
    assert rendered.text.strip()


def test_macro_matched_by_context_selector_falls_back(tmp_path):
    page = """---
subject: "x"
---
{% macro cell(v) %}<span class="v">{{ v }}</span>{% endmacro %}
<html><head><style>.card .v { color: red } .v { font-weight: bold }</style></head><body>
<div class="card">{{ cell(1) }}</div><div>{{ cell(2) }}</div>
</body></html>
"""
    renderer = renderer_for(program_dir(tmp_path, {"macro/vi.html": page}))
    compiled = renderer.compiled("macro", "vi")
    assert compiled.fallback is not None and "macro" in compiled.fallback.reason
    html = renderer.render("macro", member(), now=NOW, tracked=False).html
    assert dom_difference(html, renderer.reference_html("macro", member(), now=NOW)) is None


def test_macro_holding_a_body_tag_before_a_document_without_one(tmp_path):
    page = """---
subject: "x"
---
{% macro card(v) %}<body><p class="v">{{ v }}</p>{% endmacro %}
<html><head><style>.v { font-weight: bold }</style></head>
<div>{{ card("hello") }}</div></html>
"""
    renderer = renderer_for(program_dir(tmp_path, {"bodyless/vi.html": page}))
    html = renderer.render("bodyless", member(), now=NOW, tracked=False).html
    assert "hello" in html
    assert dom_difference(html, renderer.reference_html("bodyless", member(), now=NOW)) is None


# -- sandbox and strictness -----------------------------------------------------------------

def test_misspelled_variable_names_template_line_column_and_the_closest_name(tmp_path):
    source = (ROOT / "templates/welcome/en.html").read_text()
    misspelled = source.replace("{{ member.points | points }}", "{{ member.pionts | points }}")
    renderer = renderer_for(program_dir(tmp_path, {"welcome/en.html": misspelled}))
    with pytest.raises(TemplateError) as info:
        renderer.render("welcome", member(locale="en"), now=NOW, tracked=False)
    assert str(info.value) == ("templates/welcome/en.html:10:39: undefined variable: no field 'pionts' "
                               "in this email's data (did you mean points?)")


def test_member_data_is_escaped_in_html_and_left_as_is_in_text(example):
    name = "<script>alert('x')</script> & \"Lan\""
    rendered = example.render("welcome", member(first_name=name), now=NOW, send_id="s1")
    assert "<script>" not in rendered.html and "&lt;script&gt;alert(" in rendered.html
    assert "&amp; " in rendered.html
    assert lxml.html.fromstring(rendered.html).xpath("//h1")[0].text_content().count(name) == 1
    assert name in rendered.text


def test_sandbox_refuses_python_internals(tmp_path):
    page = '---\nsubject: "x"\n---\n<html><body>\n{{ member.__class__.__mro__ }}\n</body></html>\n'
    renderer = renderer_for(program_dir(tmp_path, {"evil/vi.html": page}))
    with pytest.raises(TemplateError) as info:
        renderer.render("evil", member(), now=NOW, tracked=False)
    assert "not allowed in the template sandbox" in str(info.value)
    assert "templates/evil/vi.html:5" in str(info.value)


@pytest.mark.parametrize(("body", "message"), [
    ("{% raw %}<p>x</p>\n", "templates/odd/vi.html:4: syntax error: Missing end of raw directive"),
    ("{% extends none %}<p>x</p>\n", "templates/odd/vi.html:4: TemplateNotFound: None (a file name is text"),
    ("{% from none import x %}<p>x</p>\n", "templates/odd/vi.html:4: TemplateNotFound: None (a file name is text"),
    ('{% include "../config.yaml" %}\n', "templates/odd/vi.html:4: '../config.yaml' leads outside templates/"),
    ('{% extends "/etc/passwd" %}\n', "templates/odd/vi.html:4: '/etc/passwd' leads outside templates/"),
    ('<p>x</p>\n{% from "_partials/nope.html" import x %}\n', "templates/odd/vi.html:5: templates/_partials/nope.html "
     "does not exist"),
])
def test_a_missing_file_a_name_that_is_not_text_or_an_open_raw_block_is_an_error_at_its_line(tmp_path, body, message):
    renderer = renderer_for(program_dir(tmp_path, {"odd/vi.html": '---\nsubject: "x"\n---\n' + body}))
    with pytest.raises(TemplateError) as info:
        renderer.render("odd", member(), now=NOW, tracked=False)
    assert str(info.value).startswith(message)


def test_an_infinite_or_nan_constant_jinja_folds_renders_or_is_an_error_at_its_line(tmp_path):
    renderer = renderer_for(program_dir(tmp_path, {
        "odd/vi.html": '---\nsubject: "x"\n---\n<p>{{ 1e400 }} {{ [-1e400] }}</p>\n',
        "nan/vi.html": '---\nsubject: "x"\n---\n{{ "nan" | float | number }}\n'}))
    assert "<p>inf [-inf]</p>" in renderer.render("odd", member(), now=NOW, tracked=False).html
    with pytest.raises(TemplateError, match=r"^templates/nan/vi.html:4: TypeError: `\| number` needs a number, "
                                            "not float 'nan'"):
        renderer.render("nan", member(), now=NOW, tracked=False)


def test_front_matter_problems_name_file_and_line(tmp_path):
    with pytest.raises(TemplateError) as info:
        renderer_for(program_dir(tmp_path, {"bad/vi.html": '---\nsubjekt: "x"\n---\n<p>x</p>\n',
                                             "worse/vi.html": "<p>no front matter</p>\n"}))
    message = str(info.value)
    assert "templates/bad/vi.html:2:1: unknown front matter key 'subjekt'" in message
    assert "templates/worse/vi.html:1:1: missing front matter" in message


@pytest.mark.parametrize(("front", "expected"), [
    ("subject: {{ member.first_name }}, welcome\n",
     "templates/bad/vi.html:2:10: the subject starts with `{`, which YAML reads as a mapping: quote it, "
     "subject: \"{{ member.first_name }}, welcome\""),
    ('subject: "Sale"\npreheader: Sale #1 starts today\n',
     "templates/bad/vi.html:3:12: the preheader holds ` #`, where YAML starts a comment (the rest would be "
     "dropped): quote it, preheader: \"Sale #1 starts today\""),
    ('subject: Spring sale: "{{ member.first_name }}"\n',
     "templates/bad/vi.html:2:10: the subject holds `: `, which YAML reads as a key: quote it, "
     "subject: 'Spring sale: \"{{ member.first_name }}\"'"),
])
def test_an_unquoted_subject_or_preheader_yaml_would_misread_says_to_quote_it(tmp_path, front, expected):
    with pytest.raises(TemplateError) as info:
        renderer_for(program_dir(tmp_path, {"bad/vi.html": f"---\n{front}---\n<p>x</p>\n"}))
    assert [str(p) for p in info.value.problems] == [expected]


@pytest.mark.parametrize("front", ["subject: Sale 1 today\n", "subject: 'Sale #1: today'\n", "subject: Sale#1\n",
                                   'subject: "{{ member.first_name }}: #1"\n', "subject: >\n  Sale: #1\n"])
def test_a_subject_yaml_reads_as_written_needs_no_quotes(tmp_path, front):
    renderer_for(program_dir(tmp_path, {"fine/vi.html": f"---\n{front}---\n<p>x</p>\n"}))


def test_a_front_matter_never_closed_says_so(tmp_path):
    with pytest.raises(TemplateError) as info:
        renderer_for(program_dir(tmp_path, {"open/vi.html": '---\nsubject: "x"\n<p>x</p>\n'}))
    assert [str(p) for p in info.value.problems] == [
        "templates/open/vi.html:1:1: the front matter opened here is not closed: add a line --- after its "
        "`subject:` (and `preheader:`) lines, before the body"]


def test_check_reports_syntax_error_and_missing_translation(tmp_path):
    renderer = renderer_for(program_dir(tmp_path, {"broken/vi.html": '---\nsubject: "x"\n---\n<p>{% if %}</p>\n',
                                                    "solo/vi.html": '---\nsubject: "x"\n---\n<p>hi</p>\n'}))
    report = check_templates(renderer, NOW)
    assert [str(p) for p in report.errors] == [
        "templates/broken/vi.html:4: syntax error: Expected an expression, got 'end of statement block'"]
    (tmp_path / "program/templates/broken/vi.html").unlink()
    renderer = renderer_for(program_dir(tmp_path / "again", {"solo/vi.html": '---\nsubject: "x"\n---\n<p>hi</p>\n'}))
    report = check_templates(renderer, NOW)
    assert report.errors == []
    assert any("missing translation: no en.html" in str(w) for w in report.warnings)


# -- locales and formatting ---------------------------------------------------------------

def test_locale_variant_selection(example):
    assert example.variant("welcome", "vi").locale == "vi"
    assert example.variant("welcome", "vi_VN").locale == "vi"
    assert example.variant("welcome", "en").locale == "en"
    assert example.variant("welcome", "fr").locale == "vi"      # program default
    assert example.variant("welcome", None).locale == "vi"


def test_babel_filters_format_for_the_members_locale(example):
    vi = example.render("milestone", member(total_spend=Decimal(1250000)), now=NOW, tracked=False,
                        occurrence={"kind": "points", "threshold": 5000, "key": "p"})
    assert "1.250.000\xa0₫" in vi.html and "8.450" in vi.html and "5.000 điểm" in vi.subject
    en = example.render("milestone", member(locale="en", total_spend=Decimal(1250000)), now=NOW,
                        tracked=False, occurrence={"kind": "anniversary", "years": 2, "key": "a"})
    assert "₫1,250,000" in en.html and "8,450" in en.html
    assert en.subject == "Happy 2-year anniversary, Lan!"
    assert "November 23, 2024" in en.html   # joined_on, the member's own day


def test_tier_context_and_coupon(example):
    upgrade = example.render("tier_upgrade", member(), now=NOW, tracked=False,
                             occurrence={"old_tier": "silver", "new_tier": "gold", "key": "t"})
    assert upgrade.subject == "Chúc mừng Lan lên hạng Vàng"
    assert "Giảm 10% mọi đơn hàng" in upgrade.html and "Bạch kim" in upgrade.html
    top = example.render("tier_upgrade", member(tier="platinum", points=30000, locale="en"), now=NOW,
                         tracked=False, occurrence={"old_tier": "gold", "new_tier": "platinum", "key": "t"})
    assert "our highest tier" in top.html
    first = example.render("welcome", member(), now=NOW, tracked=False)
    again = example.render("welcome", member(), now=NOW, tracked=False)
    other = example.render("welcome", member(member_id="SV000999"), now=NOW, tracked=False)
    code = re.search(r"HELLO-[A-Z0-9]{8}", first.html).group(0)
    assert code in again.html and code not in other.html
    assert code in first.text  # the text part prints the same code
    assert code == coupon_code(SECRET.encode(), "SV000123", ":", "HELLO")  # flow and occurrence: none


@given(st.text(alphabet="\n\r\t ab", max_size=40))
def test_tidy_text_strips_indentation_and_collapses_blank_lines(text):
    lines = [line.lstrip(" \t") for line in text.split("\n")]
    expected = "\n".join(lines)
    while "\n\n\n" in expected:
        expected = expected.replace("\n\n\n", "\n\n")
    assert tidy_text(text) == expected.strip() + "\n"


@pytest.mark.parametrize("items", ["<li>A free coffee</li><li>100,000 VND voucher</li>",
                                   "\n  <li>A free coffee</li>\n  <li>100,000 VND voucher</li>\n"])
def test_text_part_puts_list_items_on_consecutive_lines(items):
    text = html_to_text(f"<body><p>You can redeem:</p><ul>{items}</ul><p>See you soon.</p></body>")
    assert text == "You can redeem:\n\n- A free coffee\n- 100,000 VND voucher\n\nSee you soon.\n"


def test_text_part_keeps_text_written_straight_into_the_body():
    assert html_to_text("<html><body>Hello Lan,<ul><li>a coffee</li></ul>Thanks</body></html>") == (
        "Hello Lan,\n\n- a coffee\n\nThanks\n")
    assert html_to_text("Points: 1,200") == "Points: 1,200\n"


def test_text_part_of_a_loop_of_list_items_puts_them_on_consecutive_lines(tmp_path):
    body = ('---\nsubject: "x"\n---\n<p>Perks:</p>\n<ul>{% for p in ["Free delivery", "Early access"] %}'
            '\n  <li>{{ p }}</li>\n{% endfor %}</ul>\n<p>Thanks.</p>\n')
    renderer = renderer_for(program_dir(tmp_path, {"perks/vi.html": body, "perks/en.html": body}))
    text = renderer.render("perks", member(), now=NOW, tracked=False).text
    assert "Perks:\n\n- Free delivery\n- Early access\n\nThanks." in text


# -- tracking -------------------------------------------------------------------------------

def test_links_are_signed_and_the_pixel_added_when_tracked(example):
    signer = TokenSigner(SECRET)
    rendered = example.render("welcome", member(), now=NOW, send_id="send-1")
    hrefs = re.findall(r'href="([^"]+)"', rendered.html)
    clicks = [h for h in hrefs if "/c/" in h]
    targets = {signer.verify(urlparse(h).path.split("/c/")[1], "click").url for h in clicks}
    assert targets == {"https://senvang.example/", "https://senvang.example/account?member=SV000123"}
    assert all(signer.verify(urlparse(h).path.split("/c/")[1]).send_id == "send-1" for h in clicks)
    unsubscribe = [h for h in hrefs if "/u/" in h]
    assert len(unsubscribe) == 1 and signer.verify(unsubscribe[0].split("/u/")[1]).kind == "unsubscribe"
    pixel = re.search(r'<img src="https://t\.senvang\.example/o/([^"]+)\.gif"', rendered.html)
    assert pixel and signer.verify(pixel.group(1), "open").send_id == "send-1"
    assert "/c/" in rendered.text and "senvang.example/account" not in rendered.text


def test_only_the_per_send_links_an_email_prints_are_signed(example):
    assert example.compiled("welcome", "vi").links_used == {"preferences_url", "view_in_browser_url"}
    assert "confirm_url" in example.compiled("confirm_email", "en").links_used
    sent = example.render("confirm_email", member(locale="en"), now=NOW, send_id="send-9")
    confirm = re.search(r'href="(https://[^"]+/k/([^"]+))"', sent.html)
    assert confirm is not None and confirm.group(1) in sent.text  # the same URL, not a click URL
    assert TokenSigner(SECRET).verify(confirm.group(2), "confirm").send_id == "send-9"
    assert sent.unsubscribe_url and "/u/" in sent.unsubscribe_url


def test_previews_and_test_sends_carry_no_countable_urls(example):
    for rendered in (example.render("welcome", member(), now=NOW, tracked=False),
                     example.render("welcome", member(), now=NOW, test=True)):
        assert "/c/" not in rendered.html and "/o/" not in rendered.html and "/c/" not in rendered.text
        assert "https://senvang.example/account?member=SV000123" in rendered.html


def test_mailto_tel_and_opted_out_links_are_left_alone(tmp_path):
    page = """---
subject: "x"
---
<html><body><a href="mailto:help@senvang.example">mail</a> <a href="tel:+84123">call</a>
<a href="https://senvang.example/private" data-notrack>private</a>
<a href="https://senvang.example/shop?a=1&amp;b=2">shop</a></body></html>
"""
    renderer = renderer_for(program_dir(tmp_path, {"links/vi.html": page}))
    html = renderer.render("links", member(), now=NOW, send_id="s").html
    assert 'href="mailto:help@senvang.example"' in html and 'href="tel:+84123"' in html
    assert 'href="https://senvang.example/private"' in html
    shop = re.search(r'href="(https://t\.senvang\.example/c/[^"]+)">shop', html).group(1)
    assert TokenSigner(SECRET).verify(shop.split("/c/")[1]).url == "https://senvang.example/shop?a=1&b=2"


def test_tokens_cannot_be_forged_or_altered():
    signer = TokenSigner(SECRET)
    from loyalty_mail.signing import TokenClaims
    token = signer.sign(TokenClaims("click", "abc", 0, "https://senvang.example/"))
    body, tag = token.split(".")
    for bad in (f"{body}.{tag[:-1]}A" if tag[-1] != "A" else f"{body}.{tag[:-1]}B",
                f"{body[:-2]}xx.{tag}", "", "a.b.c", "..", "%%%.%%%", "x" * 5000):
        with pytest.raises(BadToken):
            signer.verify(bad)
    with pytest.raises(BadToken):
        TokenSigner("another-secret-0123456789").verify(token)
    with pytest.raises(BadToken):
        signer.verify(token, "open")


# -- the message ----------------------------------------------------------------------------

def test_message_is_complete_rfc5322_with_one_click_unsubscribe(example):
    long_name = "Nguyễn Thị Phương Thảo Hoàng Lê Minh Châu"
    rendered = example.render("welcome", member(first_name=long_name), now=NOW, send_id="abc123")
    raw = rendered.to_bytes()
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    head = raw.split(b"\r\n\r\n")[0].decode("ascii")
    subject = re.search(r"^Subject:.*?(?=\r\n\S)", head, re.MULTILINE | re.DOTALL).group(0)
    assert subject.count("\r\n ") >= 1                     # folded ...
    assert all(len(line) <= 78 for line in subject.split("\r\n"))  # ... into short lines
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["Subject"] == f"Chào mừng {long_name} đến với Sen Vàng Rewards!"
    assert parsed["From"].addresses[0].display_name == "Sen Vàng Rewards"
    # RFC 2047 drops the folding between encoded-words; Python's address parser keeps a space.
    assert " ".join(parsed["To"].addresses[0].display_name.split()) == f"{long_name} Nguyễn"
    assert parsed["Message-ID"] == "<abc123@senvang.example>"
    assert parsed["X-Loyalty-Mail-Send-Id"] == "abc123"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed["List-Unsubscribe"] == f"<{rendered.unsubscribe_url}>"
    assert parsed.get_content_type() == "multipart/alternative"
    text, html = parsed.iter_parts()
    assert text.get_content_type() == "text/plain" and html.get_content_type() == "text/html"
    assert text.get_content().replace("\r\n", "\n") == rendered.text
    assert html.get_content() == rendered.html
    assert not parsed.defects and not text.defects and not html.defects


def test_control_characters_in_member_data_leave_the_subject_and_preheader_one_clean_line(tmp_path):
    source = '---\nsubject: "Hi {{ member.first_name }}"\npreheader: "For {{ member.first_name }}"\n---\n<p>x</p>\n'
    renderer = renderer_for(program_dir(tmp_path, {"odd/vi.html": source}))
    for name in ("Lan\x1eAnh", "Lan\x00\x07Anh\x7f"):  # the first is the headline's own separator
        rendered = renderer.render("odd", member(first_name=name), now=NOW, tracked=False)
        assert (rendered.subject, rendered.preheader) == ("Hi Lan Anh", "For Lan Anh")
        assert b"Subject: Hi Lan Anh\r\n" in rendered.to_bytes()


@pytest.mark.parametrize(("locale", "encoding"), [("en", "quoted-printable"), ("vi", "base64")])
def test_text_part_is_readable_when_ascii_and_compact_when_not(example, locale, encoding):
    rendered = example.render("welcome", member(locale=locale), now=NOW, send_id="abc123")
    parsed = email.message_from_bytes(rendered.to_bytes(), policy=email.policy.default)
    text, _ = parsed.iter_parts()
    assert text["Content-Transfer-Encoding"] == encoding
    assert text.get_content().replace("\r\n", "\n") == rendered.text
    assert not text.defects


def test_own_text_template_is_used_and_tracked(tmp_path):
    renderer = renderer_for(program_dir(tmp_path, {"welcome/vi.txt": "Chào {{ member.first_name }}!\n"
                                                    "Tài khoản: https://senvang.example/account\n"}))
    rendered = renderer.render("welcome", member(), now=NOW, send_id="s")
    assert rendered.text.startswith("Chào Lan!\nTài khoản: https://t.senvang.example/c/")


# -- CLI ------------------------------------------------------------------------------------

@pytest.fixture
def example_program(tmp_path, monkeypatch):
    """The example program in a temporary directory, with 20 seeded members (SQLite)."""
    from click.testing import CliRunner

    from loyalty_mail.cli import cli

    monkeypatch.delenv("LOYALTY_MAIL_DATABASE_URL", raising=False)
    monkeypatch.delenv("LOYALTY_MAIL_SECRET", raising=False)
    target = tmp_path / "program"
    assert CliRunner().invoke(cli, ["init", str(target)]).exit_code == 0

    def run(*args: str):
        return CliRunner().invoke(cli, ["--project", str(target), *args], catch_exceptions=False)

    assert run("seed", "--members", "20", "--at", "2026-11-23T10:00:00+07:00").exit_code == 0
    return target, run


def test_cli_templates_list(example_program):
    _, run = example_program
    result = run("templates", "list", "--format", "json")
    assert result.exit_code == 0, result.output
    import json
    rows = json.loads(result.stdout)
    assert {(r["email"], r["locale"]) for r in rows} == {
        (e, l) for e in ("welcome", "milestone", "tier_upgrade", "reengagement", "points_receipt", "tier_at_risk",
                         "tier_downgrade", "birthday", "reward_available", "statement", "points_expiring",
                         "confirm_email", "welcome_perks", "welcome_reminder", "first_purchase_nudge",
                         "winback_last_chance")
        for l in ("vi", "en")}
    assert all(r["inlining"] == "compiled" for r in rows)


def test_cli_preview_html_text_eml(example_program, tmp_path):
    target, run = example_program
    import sqlite3
    member_id, locale = sqlite3.connect(target / "loyalty_mail.db").execute(
        "select member_id, locale from members order by member_id limit 1").fetchone()
    html = run("preview", "welcome", "--member", member_id)
    assert html.exit_code == 0, html.output
    assert html.stdout.startswith("<!DOCTYPE html>") and f'lang="{locale}"' in html.stdout
    assert "/c/" not in html.stdout and "/o/" not in html.stdout
    text = run("preview", "milestone", "--member", member_id, "--locale", "en", "--format", "text",
               "--set", "kind=anniversary", "--set", "years=3")
    assert text.exit_code == 0 and text.stdout.startswith("Subject: Happy 3-year anniversary")
    out = tmp_path / "upgrade.eml"
    eml = run("preview", "tier_upgrade", "--member", member_id, "--format", "eml", "--out", str(out))
    assert eml.exit_code == 0 and f"wrote {out}" in eml.stderr
    parsed = email.message_from_bytes(out.read_bytes(), policy=email.policy.default)
    assert parsed.get_content_type() == "multipart/alternative"
    assert parsed["List-Unsubscribe"] is None      # previews carry no working unsubscribe


def test_cli_preview_and_check_mistakes_are_exit_1_with_a_message(example_program):
    target, run = example_program
    unknown = run("preview", "welcom", "--member", "X")
    assert unknown.exit_code == 1
    assert ("no email template 'welcom' in templates/ (did you mean welcome? emails: birthday, confirm_email, first_purchase_nudge, milestone, "
            "points_expiring, points_receipt, reengagement, reward_available, statement, tier_at_risk, tier_downgrade, "
            "tier_upgrade, welcome, welcome_perks, welcome_reminder, winback_last_chance)") in unknown.stderr
    nobody = run("preview", "welcome", "--member", "NOPE")
    assert nobody.exit_code == 1 and "no member with id 'NOPE'" in nobody.stderr
    path = target / "templates/welcome/en.html"
    path.write_text(path.read_text().replace("{{ member.points | points }}", "{{ member.pionts | points }}"))
    checked = run("check")
    assert checked.exit_code == 1
    assert "templates/welcome/en.html:10:39: undefined variable: member has no field 'pionts'" in checked.stderr
    assert "Traceback" not in checked.output


@pytest.fixture
def example_files(tmp_path, monkeypatch):
    """The example program in a temporary directory, without members (`--sample` needs none)."""
    from click.testing import CliRunner

    from loyalty_mail.cli import cli

    monkeypatch.delenv("LOYALTY_MAIL_DATABASE_URL", raising=False)
    monkeypatch.delenv("LOYALTY_MAIL_SECRET", raising=False)
    target = tmp_path / "program"
    assert CliRunner().invoke(cli, ["init", str(target)]).exit_code == 0

    def run(*args: str):
        return CliRunner().invoke(cli, ["--project", str(target), *args], catch_exceptions=False)

    return target, run


def test_each_kind_of_sample_occurrence_keeps_its_own_fields(example):
    samples = {o["kind"]: o for o in sample_occurrences(example)}
    assert samples["points"]["threshold"] == 5000 and samples["anniversary"]["years"] == 2
    assert samples["tier_at_risk"]["threshold"] == "2000" and samples["tier_at_risk"]["tier"] == "silver"
    # a downgrade goes down: from the second tier to the lowest, the sample member's own
    assert (samples["tier_downgrade"]["old_tier"], samples["tier_downgrade"]["new_tier"]) == ("silver", "member")
    assert (samples["tier_upgrade"]["old_tier"], samples["tier_upgrade"]["new_tier"]) == ("member", "silver")
    assert sample_occurrence(example, "milestone")["kind"] == "points"
    assert sample_occurrence(example, "tier_at_risk")["kind"] == "tier_at_risk"
    assert sample_occurrence(example, "welcome_perks")["kind"] == "signup"       # a welcome journey's step
    assert sample_occurrence(example, "reengagement")["kind"] == "segment_entry"


def test_cli_preview_uses_the_sample_occurrence_of_the_emails_trigger(example_files):
    _, run = example_files
    milestone = run("preview", "milestone", "--sample", "--locale", "en", "--format", "text")
    assert milestone.exit_code == 0, milestone.output
    assert milestone.stdout.startswith("Subject: You crossed 5,000 points!\n")
    at_risk = run("preview", "tier_at_risk", "--sample", "--locale", "en", "--format", "text")
    assert at_risk.exit_code == 0, at_risk.output
    assert at_risk.stdout.startswith("Subject: Keep your Silver status, Lan\n")
    down = run("preview", "tier_downgrade", "--sample", "--locale", "en", "--format", "text")
    assert down.exit_code == 0, down.output
    assert "Your tier has moved from Silver to Member." in down.stdout, down.stdout
    assert "milestone of 5,000 points" in " ".join(run("preview", "--help").stdout.split())


def test_the_points_expiry_reminder_names_what_the_points_could_buy_in_the_members_language(example_files):
    """`occurrence.could_buy` in the example emails: each reward by its label in the member's
    language, never by its identifier (`voucher_100k`)."""
    _, run = example_files
    for locale, line in (("en", "✓ A free coffee · 500 points"), ("vi", "✓ Một ly cà phê miễn phí · 500 điểm")):
        shown = run("preview", "points_expiring", "--sample", "--locale", locale, "--format", "text")
        assert shown.exit_code == 0, shown.output
        assert line in shown.stdout and "✓ coffee ·" not in shown.stdout, shown.stdout


def test_cli_preview_says_when_the_locale_falls_back(example_files):
    target, run = example_files
    (target / "templates/statement/vi.html").unlink()
    fallback = run("preview", "statement", "--sample", "--locale", "vi", "--format", "text")
    assert fallback.exit_code == 0, fallback.output
    assert fallback.stderr == "templates/statement/ has no vi.html: members with locale vi get en.html\n"
    assert fallback.stdout.startswith("Subject: Your Sen Vàng Rewards statement for ")
    own = run("preview", "statement", "--sample", "--locale", "en", "--format", "text")
    assert own.exit_code == 0 and own.stderr == ""


def test_templates_list_says_once_why_an_email_is_inlined_per_email(example_files):
    target, run = example_files
    (target / "templates" / "welcome" / "en.html").write_text(
        '---\nsubject: "Hi"\npreheader: "A note"\n---\n{% extends "_layouts/en.html" %}\n{% block content %}\n'
        '<p>{{ member.first_name | safe }}</p>\n{% endblock %}\n', encoding="utf-8")
    result = run("templates", "list", "--format", "json")
    assert result.exit_code == 0, result.output
    import json
    row = next(r for r in json.loads(result.stdout) if (r["email"], r["locale"]) == ("welcome", "en"))
    assert row["inlining"] == ("per email (templates/welcome/en.html:7: `| safe` prints markup, whose elements only "
                               "exist after rendering, so only then can CSS rules style them)")


@pytest.mark.parametrize("columns", [80, 160])
def test_templates_list_gives_each_email_one_line_that_fits_the_terminal(example_files, monkeypatch, columns):
    target, run = example_files
    monkeypatch.setenv("COLUMNS", str(columns))
    for locale in ("en", "vi"):
        (target / "templates" / "welcome" / f"{locale}.html").write_text(
            '---\nsubject: "[b]VIP[/b] Hi {{ member.first_name }}, a long subject that goes on and on"\n---\n'
            '{% extends "_layouts/en.html" %}\n{% block content %}\n<p>{{ member.first_name | safe }}</p>\n'
            "{% endblock %}\n", encoding="utf-8")
    result = run("templates", "list")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert all(len(line) <= columns for line in lines), result.stdout
    welcome = [line for line in lines if line.startswith("welcome ")]
    assert len(welcome) == 2 and all("[b]VIP[/b] Hi" in line for line in welcome), result.stdout
    assert welcome[0].endswith("per email (1)") and welcome[1].endswith("per email (2)")
    assert sum(1 for line in lines if line.startswith("birthday ")) == 2
    notes = [line for line in lines if line.startswith("(")]  # each wrapped, indented under its number
    assert [note[:51] for note in notes] == ["(1) inlined per email: templates/welcome/en.html:6:",
                                             "(2) inlined per email: templates/welcome/vi.html:6:"]
    assert ("{{ member.first_name }}, a long subject that goes on and on" in result.stdout) == (columns > 80)

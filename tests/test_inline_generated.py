"""Random multi-file programs: a layout with blocks, a macro library, an included snippet and an
email made of random template constructs. For each one and a few members, the email compiled
once has the same DOM as "render the files with Jinja, then premailer", or the template states
why it is inlined per email (which is render, then inline).

The default run (180 examples) takes about half a minute; LOYALTY_MAIL_HYPOTHESIS_EXAMPLES=N runs N.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loyalty_mail.rendering.dom import dom_difference

from .rendering_program import NOW, member, program_dir, renderer_for

EXAMPLES = int(os.environ.get("LOYALTY_MAIL_HYPOTHESIS_EXAMPLES", "180"))
CONDITION = "member.points > 100"

# The macro library. `outer` calls a helper of its own file that is not imported; the helper is
# sometimes named `local`, like a macro the email defines, which must not replace it.
HELPERS = ("local", "helper")


def macro_library(helper: str) -> str:
    """The macro library whose not-imported helper macro is named `helper`."""
    return ('{% macro ' + helper + '(y) %}<u class="h">{{ y }}</u>{% endmacro %}\n'
            '{% macro card(x) %}<div class="card"><span>{{ x }}</span></div>{% endmacro %}\n'
            '{% macro box() %}<div class="box">{{ caller() }}</div>{% endmacro %}\n'
            '{% macro outer(v) %}<p class="o">{{ card(v) }}{{ ' + helper + '(v) }}</p>{% endmacro %}\n')


FROM_IMPORT = '{% from "_gen/macros.html" import card, box, outer %}'
IMPORT_AS = '{% import "_gen/macros.html" as lib %}'

_LEAVES = [
    "hi", "a &amp; b", "", "{{ member.first_name }}", "{{ '}}' }}", '{{ "%}" }}', "{{ '{%' ~ '}' }}",
    "{# a note %} }} #}", "{{ card(member.first_name) }}", "{{ outer('v') }}",
    "{% include \"_gen/snippet.html\" %}", "{{ loop.index if loop is defined else '-' }}",
    "<br>", '<img src="https://shop.example/i.png" alt="">',
    '<a href="https://shop.example/?a=1&amp;b=2">go</a>', "<b>{{ tier.name }}</b>",
    "<a href=\"{{ 'https://shop.example/?a=1&amp;b=2' | safe }}\">s</a>",
    # names an include, a macro library or an earlier construct may (not) have assigned
    "<i>{{ label if label is defined else 'unset' }}</i>", "{{ local('q') if local is defined else '-' }}",
]
# Constructs whose email is inlined per email, drawn less often
_RARE_LEAVES = [
    "{{ '<b class=\"n\">s</b>' | safe }}",
    # markup passed to a macro as an argument, printed inside it
    "{{ card('<b class=\"n\">m</b>' | safe) }}",
    # a `| safe` value printed into an attribute
    "<a href=\"{{ 'https://shop.example/?q=<b>' | safe }}\">q</a>",
    "<p title=\"{{ 'x\" lang=\"en' | safe }}\">t</p>",
    # a <style> in the body, text after it and a statement next
    '<style>.n { color: blue }</style>after{% if ' + CONDITION + ' %}y{% endif %}',
    # blocks whose tags are in different elements as the HTML parser reads them
    '<p class="note">a{% if ' + CONDITION + ' %}<p>b</p>{% endif %}<span>c</span></p>',
    '<div class="box">a{% macro gone() %}</div><div>{% endmacro %}b</div>{{ gone() }}',
    '<p>a{% set kept %}</p><p class="note">{% endset %}b</p>',
    '<!--[if mso]><table><tr><td>{% if ' + CONDITION + ' %}<![endif]--><p>m</p>{% endif %}',
    '{% if ' + CONDITION + ' %}<!--[if mso]><p>{% endif %}<![endif]--><p>n</p>',
    '<!--[if mso]><p>{% if ' + CONDITION + ' %}x<![endif]--><b>y</b>{% endif %}',
]
_RAW = "{% raw %}{{ y }} {% if %}{% endraw %}"
_SET_LEAVES = [
    "{% set label = '%}' %}<span>{{ label }}</span>",
    "{% set label = tier.name ~ '!' %}",
    "{% set n = member.points | string | length %}<b>{{ n }}</b>",
]
_RARE_SET_LEAVES = [
    "{% set frag = '<b class=\"n\">f</b>' | safe %}<div>{{ frag }}</div>",
    "{% set held = card('h') %}<div>{{ held }}</div>",
]


def _containers(children: st.SearchStrategy[str], *, with_set: bool) -> list[st.SearchStrategy[str]]:
    wrap = [
        ('<p class="note">', "</p>"), ('<div class="box">', "</div>"), ("<span>", "</span>"),
        ('<p title="a b">', "</p>"), ('<p title="x + y">', "</p>"), ("<i>", "</i>"),
        ("<table><tr><td>", "</td></tr></table>"),
        ("<!--[if mso]><table><tr><td>", "</td></tr></table><![endif]-->"),
        ("{% call box() %}", "{% endcall %}"),
        ("{% for p in tier.perks %}<span>{{ p }}</span>", "{% endfor %}"),
        ("<ul>{% for p in tier.perks %}<li class=\"perk\">", "</li>{% endfor %}</ul>"),
        ("{% for i in range(member.points % 3) %}<p>", "</p>{% endfor %}"),
    ]
    found = [children.map(lambda c, o=o, e=e: o + c + e) for o, e in wrap]
    found.append(st.tuples(children, children).map(
        lambda t: "{% if " + CONDITION + " %}" + t[0] + "{% else %}" + t[1] + "{% endif %}"))
    found.append(children.map(lambda c: "{% macro local(y) %}<b class=\"n\">{{ y }}" + c
                              + "</b>{% endmacro %}<div>{{ local('z') }}</div>"))
    found.append(children.map(lambda c: "{% macro wrap() %}{% macro inner() %}<i>in</i>{% endmacro %}<span>"
                              "{{ inner() }}" + c + "</span>{% endmacro %}{{ wrap() }}"))
    found.append(children.map(lambda c: "{% macro pass_on() %}<em>" + c + "</em>{% endmacro %}"
                              "{{ card(pass_on()) }}"))
    if with_set:
        found.append(children.map(lambda c: "{% set s %}<i class=\"n\">" + c + "</i>{% endset %}{{ s }}"))
    return found


def _body(*, with_set: bool, raw: bool) -> st.SearchStrategy[str]:
    common = _LEAVES + (_SET_LEAVES if with_set else [])
    rare = _RARE_LEAVES + (_RARE_SET_LEAVES if with_set else []) + ([_RAW] if raw else [])
    leaves = st.one_of(st.sampled_from(common), st.sampled_from(common), st.sampled_from(rare))
    return st.recursive(leaves, lambda inner: st.lists(st.one_of(*_containers(inner, with_set=with_set)),
                                                        min_size=1, max_size=3).map("".join),
                        max_leaves=6)


_SELECTORS = [".note", "p", "span", ".box p", ".card span", ".main .card", "div > i", "p + p", "span + span",
              "p ~ p", ".card + p", "li:first-child", "li:last-child", "span:first-child", "p:last-child",
              '[title="a b"]', "p[title]", "a[href]", "b", ".n", "td", ".o span", ".foot", "i", "em",
              "[lang]", "div b",
              '[title="a b"] + p', 'p[title="a b"] ~ p', 'span ~ [title="a b"]', '[title="x + y"] + .note',
              '[title="a b"] + [title="x + y"]', 'p ~ p[title="x + y"] span']
_DECLARATIONS = ["color: red", "width: 10px", "text-align: center", "background-color: #abc", "padding: 1px"]
_CSS = st.lists(st.tuples(st.lists(st.sampled_from(_SELECTORS), min_size=1, max_size=2).map(", ".join),
                          st.sampled_from(_DECLARATIONS)).map(lambda t: f"{t[0]} {{ {t[1]} }}"),
                max_size=5).map("\n".join)


@st.composite
def programs(draw: st.DrawFn) -> dict[str, str]:
    """The files of one random program: an email extending a layout, importing macros, and
    including a snippet whose assignments stay inside it."""
    raw = draw(st.integers(0, 9)) == 9      # `{% raw %}`: inlined per email
    import_as = draw(st.integers(0, 9)) == 9  # `import ... as`: inlined per email
    body = draw(_body(with_set=True, raw=raw))
    snippet = draw(_body(with_set=True, raw=False).filter(lambda b: "_gen/snippet" not in b))
    helper = draw(st.sampled_from(HELPERS))
    footer = draw(st.sampled_from(["", "{% block footer %}{{ super() }}<p>more</p>{% endblock %}",
                                   "{% block footer %}<p class=\"foot\">mine</p>{% endblock %}"]))
    layout_extra = draw(st.sampled_from(["", "<p>end</p>", "{% include \"_gen/snippet.html\" %}"]))
    css = draw(_CSS)
    imports = IMPORT_AS if import_as else FROM_IMPORT
    if import_as:
        for name in ("card", "box", "outer"):
            body = body.replace(f"{name}(", f"lib.{name}(")
            snippet = snippet.replace(f"{name}(", f"lib.{name}(")
    layout = ('<!DOCTYPE html>\n<html><head><meta charset="utf-8"><style>' + css + "</style></head>\n<body>"
              '<div class="main">{% block content %}<p>default</p>{% endblock %}</div>\n'
              '{% block footer %}<p class="foot">f</p>{% endblock %}' + layout_extra + "</body></html>\n")
    email = ('---\nsubject: "x"\n---\n{% extends "_gen/layout.html" %}\n' + imports + "\n"
             "{% block content %}" + body + "{% endblock %}\n" + footer + "\n")
    return {"_gen/layout.html": layout, "_gen/macros.html": macro_library(helper),
            "_gen/snippet.html": imports + "\n" + snippet, "gen/en.html": email}


MEMBERS = (member(locale="en"), member(locale="en", points=50, tier="member"),
           member(locale="en", points=301, tier="silver", first_name="<b>Ann</b> }}"))


def compiled_or_fallback_equals_reference(files: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        renderer = renderer_for(program_dir(Path(folder), files))
        compiled = renderer.compiled("gen", "en")
        assert compiled.fallback is None or compiled.fallback.reason
        for someone in MEMBERS:
            html = renderer.render("gen", someone, now=NOW, tracked=False).html
            reference = renderer.reference_html("gen", someone, now=NOW)
            difference = dom_difference(html, reference)
            assert difference is None, (difference, None if compiled.fallback is None else str(compiled.fallback))


@pytest.mark.slow
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(programs())
def test_random_programs_compile_to_the_same_email_or_say_why_not(files):
    compiled_or_fallback_equals_reference(files)

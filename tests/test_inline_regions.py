"""Rules a loop or a condition changes are applied to each email region by region: only the
elements around the marked ones are parsed, inside their ancestors' start tags. The result is
the page premailer writes after rendering, and byte for byte what parsing the whole page gives;
where a region could mislead (rules reading an ancestor's siblings, a region printed with other
ancestors, regions nested by a recursive loop) the whole page is parsed."""

from __future__ import annotations

import re

import pytest

from loyalty_mail.rendering.dom import dom_difference
from loyalty_mail.rendering.inlining import NeedsFallback, compile_inlined, inline_css
from loyalty_mail.rendering.renderer import LinkTracker, email_environment
from loyalty_mail.rendering.text import html_to_text

LOOP = '<ul class="perks">{% for p in perks %}<li class="perk">{{ p }}</li>{% endfor %}</ul>'
MACRO = ('{% macro perk_list(items) %}<ul class="perks">{% for p in items %}<li class="perk">{{ p }}</li>'
         '{% endfor %}</ul>{% endmacro %}')
RECURSIVE = ('<ul class="perks">{% for p in tree recursive %}<li class="perk">{{ p.name }}'
             '{% if p.children %}<ul class="perks">{{ loop(p.children) }}</ul>{% endif %}</li>{% endfor %}</ul>')


def page(style: str, body: str) -> str:
    return (f"<html><head><style>.perk {{ color: #111 }} {style}</style></head>\n"
            f'<body><table><tr><td class="card">{body}</td></tr></table>\n'
            "<p>after</p></body></html>")


CASES = [
    # (style, body, regions used)
    (".perk:last-child { border-bottom: 0 }", LOOP, True),
    ("li + li { margin-top: 4px } li ~ li.perk { padding: 1px }",
     LOOP.replace("</ul>", '{% if perks | length > 1 %}<li class="perk">more</li>{% endif %}</ul>'), True),
    ("ul.perks > li:last-child { border: 0 } .card li.perk:first-child { width: 5px }", LOOP, True),
    # a macro printed in two places: the siblings are the same, the ancestors are not
    (".perk:last-child { border: 0 }", MACRO + '<div class="a">{{ perk_list(perks) }}</div>{{ perk_list(["x"]) }}',
     True),
    (".perks li:last-child { border: 0 }", MACRO + '<div class="a">{{ perk_list(perks) }}</div>'
     '{{ perk_list(["x"]) }}', False),
    # an ancestor's siblings
    ("tr:last-child td { border: 0 } tr ~ tr td { color: red }",
     '<table>{% for p in perks %}<tr><td class="perk">{{ p }}</td></tr>{% endfor %}</table>', False),
    # a recursive loop prints regions inside regions
    (".perk:last-child { border: 0 }", RECURSIVE, True),
    # ... or among other ancestors, as a `{% set %}` block does
    (".card > .n > ul li:last-child { border: 0 }",
     '{% for t in tree recursive %}<div class="n">' + LOOP + "{% if t.children %}{{ loop(t.children) }}{% endif %}"
     "</div>{% endfor %}", False),
]

# a `{% set %}` block printed among other ancestors: its rules are judged where it is printed,
# and an ancestor chain that differs there sends the template to per-email inlining
SET_BLOCK_ELSEWHERE = ".card > div > ul li:last-child { border: 0 }", \
    "{% set b %}" + LOOP + '{% endset %}<div class="a">{{ b }}</div><p>{{ b }}</p>'


def render(source: str, perks: list[str]) -> str:
    env = email_environment(None, autoescape=True)
    tree = [{"name": p, "children": [{"name": f"{p}.{n}", "children": []} for n in range(len(p) % 3)]}
            for p in perks]
    context = {"perks": perks, "tree": tree, "_tracker": LinkTracker(None, "https://t.example", "preview",
                                                                     frozenset(), False),
               "tracking": False, "open_pixel_url": lambda: ""}
    return env.from_string(source).render(context)


@pytest.mark.parametrize(("style", "body", "regions"), CASES)
def test_regions_give_the_page_premailer_writes_and_the_bytes_of_the_whole_page(style, body, regions):
    source = page(style, body)
    compiled = compile_inlined(source, text_of=html_to_text)
    restyler = compiled.restyler
    assert restyler is not None
    assert (restyler.regions > 0) == regions
    for perks in ([], ["one"], ["one", "two", "three"], ["one", "two", "three"], ["a", "bb", "ccc", "dddd"]):
        rendered = render(compiled.source, perks)
        ours = restyler.apply(rendered)
        assert "lm-region" not in ours and "data-lm-style" not in ours
        assert ours == restyler._apply_whole(re.sub(r"<!--/?lm-region \d+-->", "", rendered))
        assert dom_difference(ours, inline_css(render(source, perks))) is None, perks


def test_a_mark_that_is_not_an_attribute_is_left_as_written_on_the_whole_page():
    body = LOOP.replace("{{ p }}", '{{ p }} data-lm-style="0"')
    source = page(".perk:last-child { border: 0 }", body)
    compiled = compile_inlined(source, text_of=html_to_text)
    restyler = compiled.restyler
    assert restyler is not None and restyler.regions == 1
    rendered = render(compiled.source, ["one", "two"])
    ours = restyler.apply(rendered)
    assert "lm-region" not in ours and ours.count('data-lm-style="0"') == 2
    assert dom_difference(ours, inline_css(render(source, ["one", "two"]))) is None


def test_a_set_block_printed_among_other_ancestors_is_inlined_per_email_naming_it():
    with pytest.raises(NeedsFallback) as raised:
        compile_inlined(page(*SET_BLOCK_ELSEWHERE), text_of=html_to_text)
    assert "'.card > div > ul li:last-child'" in raised.value.reason and "'b'" in raised.value.reason

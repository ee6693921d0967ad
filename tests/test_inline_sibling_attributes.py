"""Sibling selectors whose attribute values hold spaces or combinator characters are read by
cssselect's tokenizer, not split at those characters: a rule next to a condition is still
applied per email, and each email equals rendering the files, then premailer."""

from __future__ import annotations

import pytest

from loyalty_mail.rendering.dom import dom_difference
from loyalty_mail.rendering.inlining import _sibling_groups

from .rendering_program import NOW, member, program_dir, renderer_for


@pytest.mark.parametrize(("selector", "groups"), [
    ('[title="a b"] + p', [['[title="a b"]', "p"]]),
    ('a[href~="x y"] ~ td', [['a[href~="x y"]', "td"]]),
    ('[title="a + b"] p', []),
    ('div > [title="x ~ y"]:first-child', [['[title="x ~ y"]']]),
    ("p:first-child + p", [["p"], ["p", "p"]]),
])
def test_a_selector_is_split_at_its_combinators_only(selector, groups):
    assert _sibling_groups(selector) == groups


@pytest.mark.parametrize("style", ['[title="a b"] + p { color: red }', 'span[title~="a b"] ~ p { color: red }',
                                   'span[title="a b"] + p { color: red }'])
def test_a_sibling_rule_with_a_spaced_attribute_value_next_to_a_condition(tmp_path, style):
    source = ('---\nsubject: "x"\npreheader: "p"\n---\n'
              f'<html><head><style>{style}</style></head>\n<body>\n'
              '<div><span title="a b">s</span>{% if member.points > 1000 %}<i>vip</i>{% endif %}<p>x</p></div>\n'
              '</body></html>\n')
    renderer = renderer_for(program_dir(tmp_path, {"odd/en.html": source}))
    for points in (8450, 50):
        someone = member(locale="en", points=points, tier="gold" if points > 1000 else "member")
        html = renderer.render("odd", someone, now=NOW, tracked=False).html
        assert dom_difference(html, renderer.reference_html("odd", someone, now=NOW)) is None

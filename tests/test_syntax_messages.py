"""Syntax errors say where an unclosed block was opened and what an unknown filter may be."""

from __future__ import annotations

import jinja2
import pytest

from loyalty_mail.rendering.syntax import syntax_message


def _message(source: str, **filters: object) -> str:
    env = jinja2.Environment(loader=jinja2.DictLoader({"t.html": source}))
    env.filters.update(filters)
    with pytest.raises(jinja2.TemplateSyntaxError) as caught:
        env.get_template("t.html")
    return syntax_message(env, caught.value)


def test_an_unclosed_block_names_the_line_it_was_opened_at():
    source = ("{% block content %}\n{% for x in [1] %}{{ x }}{% endfor %}\n{% set a %}x{% endset %}{% set b = 1 %}\n"
              "{% if b %}<p>\n{% for y in [2] %}{{ y }}{% endfor %}\n{% endblock %}\n")
    assert _message(source).endswith("(the 'if' opened at line 4 is not closed)")


def test_an_unclosed_block_at_the_end_of_the_file_names_its_line():
    assert _message("<p>\n{% for x in [1] %}{{ x }}\n</p>\n").endswith("(the 'for' opened at line 2 is not closed)")


def test_an_unknown_filter_gets_did_you_mean():
    message = _message("{{ 3 | point }}", points=str)
    assert message.startswith("no filter named 'point' (did you mean points?)")

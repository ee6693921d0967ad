"""Syntax errors say where an unclosed block was opened and what an unknown filter may be."""

from __future__ import annotations

import jinja2
import pytest

from loyalty_mail.rendering.syntax import syntax_column, syntax_message


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


def _column(source: str, **filters: object) -> tuple[int, int]:
    env = jinja2.Environment(loader=jinja2.DictLoader({"t.html": source}))
    env.filters.update(filters)
    with pytest.raises(jinja2.TemplateSyntaxError) as caught:
        env.get_template("t.html")
    return caught.value.lineno or 0, syntax_column(env, caught.value)


@pytest.mark.parametrize(("source", "place"), [
    ("<p>{{ a | points }}</p>\n<p>{{ a | upper | point }}</p>\n", (2, 19)),     # the unknown filter
    ("{{ a|point(2) }}\n", (1, 6)),
    ("{% filter point %}x{% endfilter %}\n", (1, 11)),
    ("{{ a is nmber }} {{ b is not nmber }}\n", (1, 9)),                          # the first unknown test
    ("<p>\n{% if a %}\n  {%- endblock %}\n", (3, 7)),                              # the tag Jinja did not expect
    ("{% frobnicate %}\n", (1, 4)),
    ("<p>\n  {{ x ! }}\n", (2, 8)),                                                # the lexer's, at its offset
    ('{% raw %}{{ x }}{% endraw %}{{ "a }}\n', (1, 32)),                         # a string never closed
    ("<p>{{ x }}\n{{/if}}</p>\n", (2, 3)),                                        # Handlebars' closing tag
    ("<p>{{ a / b }}</p>{{ c + }}\n", (1, 0)),                                      # nothing to point at
])
def test_a_syntax_error_about_a_filter_test_or_tag_has_its_column(source, place):
    assert _column(source, points=str) == place


def test_check_and_preview_give_the_column_of_an_unknown_filter(tmp_path):
    from click.testing import CliRunner

    from loyalty_mail.cli import cli

    from .rendering_program import ROOT, program_dir

    welcome = (ROOT / "templates" / "welcome" / "en.html").read_text(encoding="utf-8")
    project = program_dir(tmp_path, {"welcome/en.html": welcome.replace("member.points | points", "member.points | point")})
    (project / "segments").mkdir()
    expected = ("Error: templates/welcome/en.html:10:48: syntax error: no filter named 'point' (did you mean points?); "
                "the filters are listed in the README's \"Template context\"")
    for args in (["check"], ["preview", "welcome", "--sample", "--locale", "en"]):
        result = CliRunner().invoke(cli, ["--project", str(project), *args], catch_exceptions=False)
        assert result.exit_code == 1, result.output
        assert expected in result.stderr.splitlines(), result.stderr


def test_an_unknown_filter_a_render_reaches_inside_a_condition_has_its_column_and_did_you_mean(tmp_path):
    from loyalty_mail.rendering.renderer import TemplateError

    from .rendering_program import NOW, member, program_dir, renderer_for

    source = ('---\nsubject: "Hi"\npreheader: "A note"\n---\n{% extends "_layouts/en.html" %}\n{% block content %}\n'
              '<p>{% if member.points > 10 %}{{ member.points | point }}{% endif %}</p>\n{% endblock %}\n')
    renderer = renderer_for(program_dir(tmp_path, {"odd/en.html": source}))
    for render in (renderer.render, renderer.reference_html):
        with pytest.raises(TemplateError) as caught:
            render("odd", member(locale="en"), now=NOW, tracked=False) if render == renderer.render \
                else render("odd", member(locale="en"), now=NOW)
        assert [str(p) for p in caught.value.problems] == [
            "templates/odd/en.html:7:50: no filter named 'point' (did you mean points?); the filters are listed "
            "in the README's \"Template context\""]


@pytest.mark.parametrize(("source", "expected"), [
    ("<p>\n  {{#each user.deals}}<b>{{ this }}</b>{{/each}}</p>\n",
     "unexpected character '#' (`{{#if x}}` and `{{#each xs}}` are Handlebars: Jinja writes `{% if x %}` and "
     "`{% for x in xs %}`)"),
    ("<p>{{ x }}{{/if}}</p>\n",
     "unexpected character '/' (`{{/if}}` and `{{/each}}` are Handlebars: Jinja writes `{% endif %}` and "
     "`{% endfor %}`)"),
    ("<p>{{ x ! }}</p>\n", "unexpected character '!'"),
])
def test_handlebars_pasted_into_a_template_says_what_jinja_writes(source, expected):
    assert _message(source) == expected


def test_an_unknown_filter_in_a_subject_gets_did_you_mean(tmp_path):
    from loyalty_mail.rendering.renderer import TemplateError

    from .rendering_program import program_dir, renderer_for

    source = '---\nsubject: "You have {{ member.points | pionts }} points"\npreheader: "A note"\n---\n<p>x</p>\n'
    renderer = renderer_for(program_dir(tmp_path, {"odd/en.html": source}))
    with pytest.raises(TemplateError) as caught:
        renderer.compiled("odd", "en")
    assert [str(p) for p in caught.value.problems] == [
        "templates/odd/en.html:2: syntax error: no filter named 'pionts' (did you mean points?); the filters are "
        "listed in the README's \"Template context\""]


def test_an_argument_by_position_after_one_by_name_says_which_comes_first():
    message = _message("{% macro button(url, label) %}{% endmacro %}\n{{ button(url='https://x.example/', 'Shop') }}\n")
    assert message == ("invalid syntax for function call expression: arguments given by position come first, then "
                       "those given by name (`button('https://shop.example/', label='Shop')`, not "
                       "`button(url='https://shop.example/', 'Shop')`)")


@pytest.mark.parametrize(("front", "expected"), [
    ('subject: "Hi"\npreheader: "You have {{ member.points | money(\'XYZ\') }}"\n',
     "templates/odd/en.html:3: ValueError: `| money` takes an ISO 4217 currency code such as VND or USD, not 'XYZ'"),
    ('subject: "Hi {{ member.points | money(\'XYZ\') }}"\npreheader: "A note"\n',
     "templates/odd/en.html:2: ValueError: `| money` takes an ISO 4217 currency code such as VND or USD, not 'XYZ'"),
    ('preheader: "Hi {{ member.frist_name }}"\nsubject: "Hi"\n',
     "templates/odd/en.html:2: undefined variable: no field 'frist_name' in this email's data (did you mean "
     "first_name?)"),
])
def test_a_fault_in_the_preheader_is_at_the_preheader_line_not_the_subject_line(tmp_path, front, expected):
    from loyalty_mail.rendering.renderer import TemplateError

    from .rendering_program import NOW, member, program_dir, renderer_for

    renderer = renderer_for(program_dir(tmp_path, {"odd/en.html": f"---\n{front}---\n<p>x</p>\n"}))
    with pytest.raises(TemplateError) as caught:
        renderer.render("odd", member(locale="en"), now=NOW, tracked=False)
    assert [str(p) for p in caught.value.problems] == [expected]


def test_a_syntax_error_in_the_preheader_is_at_the_preheader_line(tmp_path):
    from loyalty_mail.rendering.renderer import TemplateError

    from .rendering_program import program_dir, renderer_for

    source = '---\nsubject: "Hi"\npreheader: "You have {{ member.points | pionts }}"\n---\n<p>x</p>\n'
    with pytest.raises(TemplateError) as caught:
        renderer_for(program_dir(tmp_path, {"odd/en.html": source})).compiled("odd", "en")
    assert [str(p) for p in caught.value.problems] == [
        "templates/odd/en.html:3: syntax error: no filter named 'pionts' (did you mean points?); the filters are "
        "listed in the README's \"Template context\""]

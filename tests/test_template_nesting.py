"""Templates nested past what Jinja's parser and Python's compiler take (statements, brackets,
operator chains): a syntax error at the template's line in `check`, `preview` and rendering,
never a RecursionError or an internal error."""

from __future__ import annotations

import jinja2
import pytest
from click.testing import CliRunner

from loyalty_mail.cli import cli
from loyalty_mail.errors import TemplateError
from loyalty_mail.rendering.nesting import nesting_problem

from .rendering_program import NOW, SECRET, member, program_dir, renderer_for

FRONT = '---\nsubject: "x"\npreheader: "p"\n---\n'

DEEP = {
    "loops": ("<p>" + "{% for i in [1] %}" * 21 + "x" + "{% endfor %}" * 21 + "</p>",
              "statements nested more than 16 deep ({% for %} inside 16 others): move the inner part into a "
              "macro or flatten it"),
    "conditions": ("<p>" + "{% if true %}" * 2000 + "x" + "{% endif %}" * 2000 + "</p>",
                   "statements nested more than 16 deep ({% if %} inside 16 others): move the inner part into a "
                   "macro or flatten it"),
    "brackets": ("<p>{{ " + "(" * 100 + "1" + ")" * 100 + " }}</p>",
                 "brackets nested more than 24 deep in one expression"),
    "chain": ("<p>{{ " + " + ".join(["1"] * 300) + " }}</p>",
              "an expression chains more than 100 operators: split it with {% set %} into parts"),
}


@pytest.mark.parametrize("kind", sorted(DEEP))
def test_a_template_nested_too_deeply_is_a_syntax_error_at_its_line(tmp_path, kind):
    body, message = DEEP[kind]
    project = program_dir(tmp_path, {"deep/en.html": FRONT + "\n" + body + "\n"})
    with pytest.raises(TemplateError) as raised:
        renderer_for(project).render("deep", member(locale="en"), now=NOW, tracked=False)
    assert str(raised.value) == f"templates/deep/en.html:6: syntax error: {message}"
    result = CliRunner().invoke(cli, ["--project", str(project), "check"], env={"LOYALTY_MAIL_SECRET": SECRET})
    assert result.exit_code == 1, result.output
    assert f"templates/deep/en.html:6: syntax error: {message}" in result.output
    assert "Internal error" not in result.output


def test_nesting_up_to_the_limits_renders():
    body = ("<p>" + "{% if true %}" * 16 + "{{ " + "(" * 24 + " + ".join(["1"] * 100) + ")" * 24 + " }}"
            + "{% endif %}" * 16 + "</p>")
    assert nesting_problem(jinja2.Environment(), body) is None
    assert jinja2.Environment().from_string(body).render() == "<p>100</p>"

"""The date filters given something that is not a date (a custom attribute or an event property
kept as text, a `preview --set` value), or a format that asks a date for a time zone, and the number
filters given text or an unknown currency, `truncate` a length shorter than its ending: a template
error at the template's line that says what the filter needs, never an internal error."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from loyalty_mail.cli import cli
from loyalty_mail.errors import TemplateError

from .rendering_program import NOW, SECRET, ROOT, member, program_dir, renderer_for


def page(body: str) -> str:
    return f'---\nsubject: "x"\npreheader: "p"\n---\n<html><body>\n<p>{body}</p>\n</body></html>\n'


@pytest.mark.parametrize(("expression", "message"), [
    ("member.attributes.since | date", "`| date` needs a date or a datetime, not str '2024-01-01'"),
    ("member.attributes.since | datetime", "`| datetime` needs a datetime, not str '2024-01-01'"),
    ("(member.attributes.since | localtime).year", "`| localtime` needs a datetime, not str '2024-01-01'"),
    ("member.joined_on | date('d MMM yyyy zzzz')", "`| date` cannot write date values in the format 'd MMM yyyy zzzz'"),
    ("member.attributes.since | money", "`| money` needs a number, not str '2024-01-01'"),
    ("1250000 | money('dong')", "`| money` takes an ISO 4217 currency code such as VND or USD, not 'dong'"),
    ("'many' | number", "`| number` needs a number, not str 'many'"),
    ("'Hello' | truncate(-1)", "`| truncate` needs a length of at least 3 (the length of its ending '...'), not -1"),
    ("'Hello' | truncate(4, leeway=-2)", "`| truncate` needs a leeway of 0 or more, not -2"),
])
def test_a_date_filter_on_a_value_it_cannot_write_is_a_template_error_at_its_line(tmp_path, expression, message):
    renderer = renderer_for(program_dir(tmp_path, {"odd/en.html": page("{{ " + expression + " }}")}))
    with pytest.raises(TemplateError) as raised:
        renderer.render("odd", member(locale="en", attributes={"since": "2024-01-01"}), now=NOW, tracked=False)
    assert str(raised.value) in (f"templates/odd/en.html:6: TypeError: {message}",
                                 f"templates/odd/en.html:6: ValueError: {message}")


def test_check_reports_a_date_filter_on_text_at_its_line(tmp_path):
    project = program_dir(tmp_path, {"odd/en.html": page("{{ member.attributes.since | default('2024-01-01') | date }}")})
    result = CliRunner().invoke(cli, ["--project", str(project), "check"], env={"LOYALTY_MAIL_SECRET": SECRET})
    assert result.exit_code == 1
    assert "templates/odd/en.html:6: TypeError: `| date` needs a date or a datetime, not str '2024-01-01'" in result.output
    assert "Internal error" not in result.output


@pytest.mark.parametrize(("value", "message"), [
    ("expires_at=garbage", "expires_at: 'garbage' is not an ISO 8601 time (e.g. 2026-12-31T17:00:00+07:00)"),
    ("birthday=31/12", "birthday: '31/12' is not an ISO 8601 date (e.g. 2026-12-31)"),
])
def test_preview_refuses_a_time_or_date_that_is_not_iso_8601(value, message):
    result = CliRunner().invoke(cli, ["--project", str(ROOT), "preview", "points_expiring", "--sample", "--set", value],
                                env={"LOYALTY_MAIL_SECRET": SECRET})
    assert result.exit_code == 1
    assert f"Invalid value for --set: {message}" in result.output
    assert "Internal error" not in result.output


def test_preview_renders_a_time_given_as_iso_8601():
    result = CliRunner().invoke(cli, ["--project", str(ROOT), "preview", "points_expiring", "--sample", "--locale", "en",
                                      "--format", "text", "--set", "expires_at=2027-01-31T17:00:00+00:00"],
                                env={"LOYALTY_MAIL_SECRET": SECRET})
    assert result.exit_code == 0, result.output
    assert "expire on February 1, 2027" in result.output

"""The static pass of `check`: every variable and attribute path, in every branch and macro,
against the documented context, with file:line:column and "did you mean"."""

from __future__ import annotations

import shutil
from pathlib import Path

from click.testing import CliRunner

from loyalty_mail.cli import cli
from loyalty_mail.config import load_settings
from loyalty_mail.rendering import Renderer
from loyalty_mail.rendering.static_check import check_static

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(__file__).parent / "fixtures" / "email-templates"  # public templates, see its README
FRONT = '---\nsubject: "Hi"\npreheader: "A note"\n---\n'


def program(tmp_path: Path, files: dict[str, str]) -> Path:
    """A copy of the example program with these template files added or replaced."""
    target = tmp_path / "program"
    shutil.copytree(ROOT / "templates", target / "templates")
    shutil.copytree(ROOT / "segments", target / "segments")
    shutil.copy(ROOT / "config.yaml", target / "config.yaml")
    for name, text in files.items():
        path = target / "templates" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return target


def static_problems(target: Path) -> list[str]:
    renderer = Renderer.for_program(load_settings(target, environ={}))
    variants = [v for e in renderer.catalog.names for v in renderer.catalog.variants[e].values()]
    raw = {v.html_path: (target / "templates" / v.html_path).read_text() for v in variants}
    return [str(p) for p in check_static(renderer.html_env, renderer.settings, variants, raw)]


def check(target: Path, *args: str):
    return CliRunner().invoke(cli, ["--project", str(target), "check", *args], catch_exceptions=False,
                              env={"LOYALTY_MAIL_SECRET": "k3J9xQ2mV7pL0wZ8rT5yB1nC6dF4gH2j"})


def test_a_field_in_a_branch_no_sample_takes_fails_the_check_with_line_and_column(tmp_path):
    body = FRONT + ('{% extends "_layouts/en.html" %}\n{% block content %}\n'
                    '<p>{% if member.points > 30000 %}{{ member.vip_code }}{% endif %}</p>\n'
                    '{% endblock %}\n')
    target = program(tmp_path, {"welcome/en.html": body})
    result = check(target)
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == (
        "Error: templates/welcome/en.html:7:44: undefined variable: member has no field 'vip_code' "
        "(member has: attributes, birthday, email, first_name, joined_at, joined_on, last_name, "
        "last_purchase_at, locale, member_id, name, nps_score, points, purchase_count, subscribed, "
        "tier, timezone, total_spend; custom attributes are member.attributes.NAME)")


def test_misspelled_names_get_did_you_mean_in_subject_body_layout_and_macro(tmp_path):
    target = program(tmp_path, {
        "welcome/en.html": ('---\nsubject: "Hi {{ member.frist_name }}"\npreheader: "{{ membr.points }}"\n---\n'
                            '{% extends "_layouts/en.html" %}\n{% from "_partials/blocks.html" import button, perk_lst %}\n'
                            '{% block content %}\n{% for perk in tier.perks %}{{ perk }} {{ tier.nxt }}{% endfor %}\n'
                            '{% if tier.next %}{{ tier.next.labl }}{% else %}{{ program.nmae }}{% endif %}\n'
                            '{% endblock %}\n'),
        "_partials/blocks.html": ('{% macro button(url, label) %}<a href="{{ url }}">{{ lable }}</a>{% endmacro %}\n'
                                  '{% macro perk_list(perks) %}{% endmacro %}\n'),
    })
    assert static_problems(target) == [
        "templates/_partials/blocks.html:1:54: undefined variable 'lable' (did you mean label?)",
        "templates/welcome/en.html:2:24: undefined variable: member has no field 'frist_name' "
        "(did you mean first_name?)",
        "templates/welcome/en.html:3:16: undefined variable 'membr' (did you mean member?)",
        "templates/welcome/en.html:6:48: undefined variable: templates/_partials/blocks.html has no macro "
        "'perk_lst' (did you mean perk_list?)",
        "templates/welcome/en.html:8:48: undefined variable: tier has no field 'nxt' (did you mean next?)",
        "templates/welcome/en.html:9:32: undefined variable: tier.next has no field 'labl' (did you mean label?)",
        "templates/welcome/en.html:9:60: undefined variable: program has no field 'nmae' (did you mean name?)",
    ]


def test_occurrence_fields_follow_the_triggers_of_the_flows_that_send_the_email(tmp_path):
    body = FRONT + '{% extends "_layouts/en.html" %}\n{% block content %}{{ occurrence.years }}{% endblock %}\n'
    target = program(tmp_path, {"welcome/en.html": body, "milestone/en.html": body})
    assert static_problems(target) == [
        "templates/welcome/en.html:6:34: undefined variable: occurrence has no field 'years' "
        "(occurrence has: key, kind; flows with trigger welcome give these fields)"]


def test_what_templates_bind_and_ask_about_is_not_an_error(tmp_path):
    body = FRONT + (
        '{% extends "_layouts/en.html" %}\n{% import "_partials/blocks.html" as blocks %}\n'
        '{% set greeting = member.first_name or "friend" %}\n'
        '{% block content %}\n'
        '{% set ns = namespace(total=0) %}{% for perk in tier.perks %}{% set ns.total = ns.total + loop.index %}'
        '{{ perk.upper() }}{% else %}{{ greeting }}{% endfor %}{{ ns.total }}\n'
        '{% macro row(label, value=member.points) %}{{ label }}{{ value }}{{ caller() }}{% endmacro %}\n'
        '{% call row("x") %}{{ member.attributes.vip_code | default("") }}{% endcall %}\n'
        '{% if member.nickname is defined %}{{ member.nickname }}{% endif %}{{ member.nickname | default("") }}\n'
        '{% with total = member.points + 1 %}{{ total }}{% endwith %}{{ member.get("nickname") }}\n'
        '{{ blocks.button(unsubscribe_url, tier_label(occurrence.new_tier)) }}{{ coupon("X") }}{{ now }}{{ range(3) | list }}\n'
        '{{ member["first_name"] }}{{ tier.next.perks if tier.next else "" }}{{ flow.name }}{{ self }}\n'
        '{% endblock %}\n')
    target = program(tmp_path, {"tier_upgrade/en.html": body})
    assert static_problems(target) == []
    result = check(target)
    assert result.exit_code == 0, result.output


def test_the_example_program_has_no_static_problems():
    assert static_problems(ROOT) == []


def test_an_imported_macro_sees_no_context_unless_imported_with_context(tmp_path):
    partial = '{% macro hello() %}{{ member.first_name }}{% endmacro %}\n'
    body = FRONT + ('{% extends "_layouts/en.html" %}\n{% from "_partials/hello.html" import hello %}\n'
                    '{% block content %}{{ hello() }}{% endblock %}\n')
    target = program(tmp_path, {"_partials/hello.html": partial, "welcome/en.html": body})
    assert static_problems(target) == [
        "templates/_partials/hello.html:1:23: undefined variable 'member': templates/_partials/hello.html is "
        "imported or included without context, so it sees only its own arguments and names; pass member as an "
        "argument, or add `with context` where it is imported"]
    with_context = body.replace("import hello %}", "import hello with context %}")
    target = program(tmp_path / "again", {"_partials/hello.html": partial, "welcome/en.html": with_context})
    assert static_problems(target) == []


def test_corpus_templates_included_by_an_email_raise_no_false_errors(tmp_path):
    """Public templates (static HTML, or Handlebars that is not Jinja) are left to the syntax
    check; those that parse as Jinja and use no variables give no static problems."""
    files: dict[str, str] = {}
    for path in sorted(CORPUS.glob("*.html")):
        text = path.read_text(encoding="utf-8")
        if "{{" in text or "{%" in text:
            continue
        files[f"corpus_{path.stem.split('__')[0].replace('-', '_')}_{len(files)}/en.html"] = FRONT + text
    assert files
    target = program(tmp_path, files)
    assert static_problems(target) == []


def test_a_missing_custom_attribute_at_send_time_names_line_column_and_the_closest_field(tmp_path):
    """`check` cannot know one member's custom attributes; the send-time error still says where
    and what was meant."""
    from datetime import date, datetime, timezone

    from loyalty_mail.errors import TemplateError

    body = FRONT + ('{% extends "_layouts/en.html" %}\n{% block content %}\n'
                    '<p>Your code: {{ member.attributes.vip_cod }}</p>\n'
                    '{% endblock %}\n')
    target = program(tmp_path, {"welcome/en.html": body})
    renderer = Renderer.for_program(load_settings(target, environ={}))
    member = dict(member_id="SV1", email="a@example.com", first_name="An", last_name="Le", locale="en",
                  timezone="UTC", joined_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
                  joined_on=date(2026, 1, 1), birthday=None, points=10, tier="member",
                  total_spend=0, purchase_count=0, last_purchase_at=None, nps_score=None,
                  subscribed=True, attributes={"vip_code": "X1"})
    try:
        renderer.render("welcome", member, now=datetime(2026, 11, 30, tzinfo=timezone.utc), tracked=False)
    except TemplateError as exc:
        message = str(exc)
    else:
        raise AssertionError("the render should fail")
    assert message == ("templates/welcome/en.html:7:36: undefined variable: no field 'vip_cod' in this "
                       "email's data (did you mean vip_code?)")


def test_a_file_that_is_not_there_is_named_where_it_is_included_extended_or_imported(tmp_path):
    body = FRONT + ('{% extends "_layouts/en.html" %}\n{% from "_partials/block.html" import button %}\n'
                    '{% block content %}\n<p>{% include "_partials/amount.html" %}</p>\n'
                    '{% include "_partials/optional.html" ignore missing %}\n{% endblock %}\n')
    target = program(tmp_path, {"welcome/en.html": body, "tier_upgrade/en.html": FRONT + '{% extends "_layouts/eng.html" %}\n'})
    assert static_problems(target) == [
        "templates/tier_upgrade/en.html:5:12: templates/_layouts/eng.html does not exist "
        "(did you mean templates/_layouts/en.html?)",
        "templates/welcome/en.html:6:9: templates/_partials/block.html does not exist "
        "(did you mean templates/_partials/blocks.html?)",
        "templates/welcome/en.html:8:15: templates/_partials/amount.html does not exist "
        "(did you mean templates/_partials/amounts.html?)"]
    result = check(target)
    assert result.exit_code == 1
    assert "templates/welcome/en.html:8:15: templates/_partials/amount.html does not exist" in result.output


def test_a_byte_order_mark_and_crlf_line_ends_keep_front_matter_lines_and_columns(tmp_path):
    body = FRONT + ('{% extends "_layouts/en.html" %}\n{% from "_partials/bom.html" import note %}\n'
                    '{% block content %}\n<p>{%- if true -%}\n   {{ note() }} {{ tier.lable }}{%- endif %}</p>\n'
                    '{% endblock %}\n')
    target = program(tmp_path, {})
    for name, text in {"welcome/en.html": body,
                       "_partials/bom.html": "{% macro note() %}<p>{{ nope }}</p>{% endmacro %}\n"}.items():
        (target / "templates" / name).write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    result = check(target)
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines()[-2:] == [
        "Error: templates/_partials/bom.html:1:25: undefined variable 'nope' (did you mean note?)",
        "templates/welcome/en.html:9:25: undefined variable: tier has no field 'lable' (did you mean label?)"]


def test_a_misspelled_beginning_of_a_longer_name_gets_did_you_mean(tmp_path):
    body = FRONT + '<html><body>\n<p>{{ member.frist }} {{ member.birth }} {{ tier.lab }}</p>\n</body></html>\n'
    target = program(tmp_path, {"welcome/en.html": body})
    assert static_problems(target) == [
        "templates/welcome/en.html:6:14: undefined variable: member has no field 'frist' (did you mean first_name?)",
        "templates/welcome/en.html:6:33: undefined variable: member has no field 'birth' (did you mean birthday?)",
        "templates/welcome/en.html:6:50: undefined variable: tier has no field 'lab' (did you mean label?)"]


def test_a_file_named_outside_the_templates_folder_is_refused_where_it_is_named(tmp_path):
    body = FRONT + ('<html><body>\n<p>{% include "../config.yaml" %}</p>\n'
                    '{% from "_partials/../../segments/vip.yaml" import x %}\n</body></html>\n')
    target = program(tmp_path, {"welcome/en.html": body})
    advice = 'layouts, partials and macros are files inside templates/, named from there ("_partials/blocks.html")'
    assert static_problems(target) == [
        f"templates/welcome/en.html:6:15: '../config.yaml' leads outside templates/: {advice}",
        f"templates/welcome/en.html:7:9: '_partials/../../segments/vip.yaml' leads outside templates/: {advice}"]


def test_a_block_no_layout_of_the_chain_defines_fails_the_check_where_it_is_named(tmp_path):
    body = FRONT + ('{% extends "_layouts/en.html" %}\n{% block contnet %}<p>Hi</p>{% endblock %}\n'
                    '{% block footer %}{{ super() }}{% block note %}{% endblock %}{% endblock %}\n')
    target = program(tmp_path, {"welcome/en.html": body})
    result = check(target)
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == (
        "Error: templates/welcome/en.html:6:10: block 'contnet' is not a block of templates/_layouts/en.html "
        "(did you mean content?)")


def test_a_macro_call_missing_a_required_or_naming_an_unknown_argument_fails_where_it_is_called(tmp_path):
    partial = ('{# blocks #}\n\n{% macro button(url, label) %}<a href="{{ url }}">{{ label }}</a>{% endmacro %}\n'
               '{% macro chip(text, tone="dark") %}<b>{{ text }}{{ kwargs }}</b>{% endmacro %}\n')
    body = FRONT + ('{% extends "_layouts/en.html" %}\n{% from "_partials/calls.html" import button %}\n'
                    '{% import "_partials/calls.html" as calls %}\n'
                    '{% macro row(label, value=1) %}{{ label }}{{ value }}{% endmacro %}\n'
                    '{% block content %}{{ button("https://x.example/y") }}\n'
                    '{{ calls.button(url="x", lable="y") }}{{ calls.chip("a", size=2) }}{{ row(label="x") }}'
                    '{{ row() }}\n{% endblock %}\n')
    target = program(tmp_path, {"_partials/calls.html": partial, "welcome/en.html": body})
    defined = "(defined at templates/_partials/calls.html:3: button(url, label))"
    assert static_problems(target) == [
        f"templates/welcome/en.html:9:23: button() needs 'label' {defined}",
        f"templates/welcome/en.html:10:10: button() has no parameter 'lable', did you mean label? {defined}",
        f"templates/welcome/en.html:10:10: button() needs 'label' {defined}",
        "templates/welcome/en.html:10:91: row() needs 'label' "
        "(defined at templates/welcome/en.html:8: row(label, value=...))"]
    result = check(target)
    assert result.exit_code == 1
    assert f"Error: templates/welcome/en.html:9:23: button() needs 'label' {defined}" in result.stderr


def test_a_call_block_around_a_macro_that_never_calls_caller_fails_where_it_is_called(tmp_path):
    partial = ('{% macro button(url, label) %}<a href="{{ url }}">{{ label }}</a>{% endmacro %}\n'
               '{% macro card(title) %}<div><b>{{ title }}</b>{{ caller() }}</div>{% endmacro %}\n'
               '{% macro loose() %}<i>{{ kwargs }}</i>{% endmacro %}\n'
               '{% macro named(caller) %}{{ caller() }}{% endmacro %}\n')
    body = FRONT + ('{% extends "_layouts/en.html" %}\n'
                    '{% from "_partials/calls.html" import button, card, loose, named %}\n'
                    '{% block content %}{% call button("https://x.example/", "Go") %}lost{% endcall %}\n'
                    '{% call card("Perks") %}kept{% endcall %}{% call loose() %}x{% endcall %}'
                    '{% call named() %}y{% endcall %}\n{% endblock %}\n')
    target = program(tmp_path, {"_partials/calls.html": partial, "welcome/en.html": body})
    assert static_problems(target) == [
        "templates/welcome/en.html:7:28: button() never calls caller(), so it cannot take the body of a "
        "{% call %} block: print it with {{ button(...) }}, or add {{ caller() }} to the macro "
        "(defined at templates/_partials/calls.html:1: button(url, label))"]


def test_an_unknown_filter_or_test_in_a_branch_no_sample_takes_fails_where_it_is_written(tmp_path):
    # Jinja refuses an unknown filter at the top level when it loads the file, but one inside a
    # condition only when a render reaches it: no sample member has 100 million points
    body = FRONT + ('{% extends "_layouts/en.html" %}\n{% from "_partials/big.html" import big %}{% block content %}\n'
                    '<p>{% if member.points > 100000000 %}{{ member.points | point }}{% endif %}</p>\n'
                    '<p>{% if tier.next %}{% if tier.next.threshold is nmber %}x{% endif %}{% endif %}</p>\n'
                    '{% endblock %}\n')
    macros = '{% macro big(n) %}{% if n > 100000000 %}{{ n | uper }}{% endif %}{% endmacro %}\n'
    target = program(tmp_path, {"welcome/en.html": body, "_partials/big.html": macros})
    result = check(target)
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-3:] == [
        "Error: templates/_partials/big.html:1:48: no filter named 'uper' (did you mean upper?); the filters are "
        "listed in the README's \"Template context\"",
        "templates/welcome/en.html:7:57: no filter named 'point' (did you mean points?); the filters are listed "
        "in the README's \"Template context\"",
        "templates/welcome/en.html:8:51: no test named 'nmber' (did you mean number?); the tests are listed in "
        "the README's \"Template context\""]


def test_a_macro_a_module_imported_as_a_name_lacks_fails_where_it_is_called(tmp_path):
    body = FRONT + ('{% extends "_layouts/en.html" %}\n{% import "_partials/blocks.html" as blocks %}\n'
                    '{% block content %}\n'
                    '{% if member.points > 100000000 %}{{ blocks.buton("https://shop.example/", "Shop") }}{% endif %}\n'
                    '{{ blocks.perk_list(tier.perks) }}{% if blocks.hero is defined %}{{ blocks.hero() }}{% endif %}\n'
                    '{% endblock %}\n')
    assert static_problems(program(tmp_path, {"welcome/en.html": body})) == [
        "templates/welcome/en.html:8:45: undefined variable: templates/_partials/blocks.html (imported as blocks) "
        "has no macro 'buton' (did you mean button?)"]

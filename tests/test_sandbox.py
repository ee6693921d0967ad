"""The sandbox's extensions of Jinja are live on the Jinja installed: each hook it overrides is
called when a template compiles, and that Jinja is within the range pyproject.toml allows."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import jinja2
import pytest
from jinja2.compiler import CodeGenerator
from packaging.version import Version

from loyalty_mail.rendering.limits import RenderLimitExceeded, RenderLimits
from loyalty_mail.rendering.sandbox import sandboxed_environment

ROOT = Path(__file__).resolve().parents[1]


def jinja_range() -> tuple[Version, Version]:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    spec = next(d for d in dependencies if d.startswith("jinja2"))
    low, high = re.fullmatch(r"jinja2>=([\d.]+),<([\d.]+)", spec.split("#")[0].strip()).groups()
    return Version(low), Version(high)


def test_the_installed_jinja_is_in_the_range_the_overrides_were_checked_against():
    low, high = jinja_range()
    assert low <= Version(jinja2.__version__) < high


@pytest.mark.parametrize("hook", ["visit_For", "visit_Concat", "_output_child_pre", "visit"])
def test_each_overridden_code_generator_hook_exists_in_jinja(hook):
    assert callable(getattr(CodeGenerator, hook, None)), f"Jinja {jinja2.__version__} has no {hook}"


def test_the_overrides_are_in_the_compiled_code():
    env = sandboxed_environment(None, autoescape=True)
    code = env.compile("{% for x in items %}{{ x ~ '!' }}{% endfor %}", raw=True)
    assert "environment.escape_output(" in code
    assert "environment.limits.iterate(" in code
    assert "environment.limits.checked_text(" in code


def test_the_hooks_do_what_they_are_for():
    env = sandboxed_environment(None, autoescape=True, limits=RenderLimits(0.2, 1000))
    env.limits.start()
    assert env.from_string("{{ x }}").render(x="<b>") == "&lt;b&gt;"
    assert env.from_string("{{ m }}").render(m=jinja2.utils.markupsafe.Markup("<b>")) == "<b>"
    with pytest.raises(RenderLimitExceeded):  # a loop of loops that prints nothing stops on time
        env.from_string("{% for i in items %}{% for j in items %}{% endfor %}{% endfor %}").render(
            items=range(100_000))
    with pytest.raises(RenderLimitExceeded):  # `~` is measured before it joins
        env.from_string("{% set s = 'x' * 900 %}{{ s ~ s }}").render()
    env.limits.start()
    assert env.from_string("{{ d.keys }}").render(d={"keys": 1}) != "1"  # a dict method stays a method
    assert env.from_string("{{ d.name }}").render(d={"name": "Lan"}) == "Lan"


@pytest.mark.parametrize("text", ["plain", "<b class=\"x\">Tom & Jerry's</b>", "Nguyễn", ""])
def test_output_escaping_is_markupsafes(text):
    from markupsafe import _escape_inner  # what the sandbox escapes a str with: markupsafe>=3.0,<3.1

    env = sandboxed_environment(None, autoescape=True)
    assert _escape_inner(text) == str(jinja2.utils.markupsafe.escape(text))
    assert env.from_string("{{ x }}").render(x=text) == str(jinja2.utils.markupsafe.escape(text))


def test_macro_internals_the_direct_call_reads_exist_in_jinja():
    env = sandboxed_environment(None, autoescape=True)
    macro = env.from_string("{% macro m(a, b) %}{{ a }}{% endmacro %}").module.m
    assert macro._argument_count == 2 and callable(macro._func)
    assert not (macro.caller or macro.catch_kwargs or macro.catch_varargs)


@pytest.mark.parametrize("autoescape", [True, False])
def test_macros_called_directly_give_what_jinja_gives(autoescape):
    source = ("{% macro m(a, b='<d>') %}<i>{{ a }}{{ b }}</i>{% endmacro %}"
              "{% macro v() %}{{ varargs | join }}{{ kwargs }}{% endmacro %}"
              "{% macro c(x) %}[{{ caller() }}{{ x }}]{% endmacro %}"
              "{{ m('<a>', '<b>') }}|{{ m('<a>') }}|{{ m(b='<e>', a=1) }}|{{ v(1, 2, k=3) }}|"
              "{% call c('<y>') %}<z>{% endcall %}|{{ m('<a>', '<b>') | length }}")
    ours = sandboxed_environment(None, autoescape=autoescape, limits=RenderLimits(1.0, 10_000))
    ours.limits.start()
    plain = jinja2.sandbox.ImmutableSandboxedEnvironment(autoescape=autoescape)
    assert ours.from_string(source).render() == plain.from_string(source).render()


GROWING = {
    "join filter": "{{ (['x' * 90000] * 1000) | join }}",
    "join filter, separator": "{{ ['a', 'b'] | join('-' * 90000 * 0 ~ 'y' * 900000) ~ (['z'] * 2) | join('q' * 900000) }}",
    "join method": "{{ ''.join(['x' * 90000] * 1000) }}",
    "center filter": "{{ 'x' | center(10 ** 10) }}",
    "center method": "{{ 'x'.center(10 ** 10) }}",
    "ljust": "{{ 'x'.ljust(10 ** 10) }}",
    "zfill": "{{ '1'.zfill(10 ** 10) }}",
    "indent": "{{ ('a\n' * 1000) | indent(10 ** 6) }}",
    "replace filter": "{{ ('x' * 1000) | replace('x', 'y' * 10000) }}",
    "replace method": "{{ ('x' * 1000).replace('x', 'y' * 10000) }}",
    "expandtabs": "{{ ('\t' * 1000).expandtabs(10 ** 6) }}",
    "format method": "{{ '{:>99999999}'.format(1) }}",
    "format method, nested width": "{{ '{:>{}}'.format(1, 10 ** 9) }}",
    "format filter": "{{ '%99999999d' | format(1) }}",
    "wordwrap": "{{ ('ab ' * 1000) | wordwrap(1, wrapstring='w' * 100000) }}",
}


@pytest.mark.parametrize("case", sorted(GROWING))
def test_filters_and_text_methods_that_grow_a_value_are_measured_before_they_run(case):
    env = sandboxed_environment(None, autoescape=True, limits=RenderLimits(5.0, 1_000_000))
    env.limits.start()
    with pytest.raises(RenderLimitExceeded):
        env.from_string(GROWING[case]).render()


def test_the_bounded_filters_and_methods_give_what_jinja_gives():
    env = sandboxed_environment(None, autoescape=False, limits=RenderLimits(5.0, 1_000_000))
    plain = jinja2.Environment()
    env.limits.start()
    people = [{"name": "Lan"}, {"name": "Minh"}]
    for source in ("{{ ['a', 'b', 3] | join(', ') }}", "{{ people | join(', ', attribute='name') }}",
                   "{{ 'x' | center(9) }}|", "{{ 'a\nb' | indent(2, first=true) }}",
                   "{{ 'a-b-c' | replace('-', '+', 1) }}", "{{ '%05d' | format(42) }}",
                   "{{ 'one two three' | wordwrap(5) }}", "{{ '-'.join(['a', 'b']) }}",
                   "{{ 'x'.ljust(3) }}|{{ '7'.zfill(3) }}|{{ '{:>4}'.format(1) }}|{{ 'a\tb'.expandtabs(4) }}"):
        assert env.from_string(source).render(people=people) == plain.from_string(source).render(people=people), source

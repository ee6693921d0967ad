"""The README stays true: every command and every configuration key is documented there."""

from __future__ import annotations

import re
import typing

import pytest

from pydantic import BaseModel

from loyalty_mail.config import Settings

from .conftest import REPO
from .test_cli import all_commands

README = (REPO / "README.md").read_text(encoding="utf-8")


def config_keys(model: type[BaseModel] = Settings, prefix: str = "") -> list[str]:
    """Every documented key: leaves and lists; a section (a nested model) is named by its keys."""
    keys = []
    for name, field in model.model_fields.items():
        if name == "project_dir":
            continue
        key, annotation = f"{prefix}{field.alias or name}", field.annotation  # as config.yaml writes it
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys += config_keys(annotation, f"{key}.")
            continue
        keys.append(key)
        if typing.get_origin(annotation) is tuple:
            item = typing.get_args(annotation)[0]
            if isinstance(item, type) and issubclass(item, BaseModel):
                keys += config_keys(item, f"{key}[].")
    return keys


def test_every_command_is_in_the_readme():
    missing = [" ".join(path) for path in all_commands()
               if not re.search(rf"`loyalty-mail {re.escape(' '.join(path))}\b", README)]
    assert missing == []


def test_every_config_key_is_in_the_configuration_reference():
    reference = README.split("## Configuration reference", 1)[1]
    keys = config_keys()
    assert "tiers.levels[].threshold" in keys and "program.currency" in keys
    missing = [key for key in keys if f"`{key}`" not in reference]
    assert missing == []


def test_quick_start_has_exactly_the_two_commands():
    quick = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert re.findall(r"```sh\n(.*?)\n```", quick, re.S) == [
        "pip install -e . && loyalty-mail demo", "pip install -e '.[test]' && pytest"]


def test_every_template_name_and_filter_is_documented():
    from loyalty_mail.rendering.context import CONTEXT_NAMES, MEMBER_FIELDS
    from loyalty_mail.rendering.formatting import FILTERS

    section = README.split("### Template context", 1)[1].split("\n### ", 1)[0]
    missing = [name for name in (*CONTEXT_NAMES, *MEMBER_FIELDS, *FILTERS) if f"`{name}" not in section]
    assert missing == []


FALLBACK_CONSTRUCTS = [
    ('{% import "_partials/blocks.html" as blocks %}{{ blocks.button("https://shop.example/", "Shop") }}',
     '`{% import "_partials/blocks.html" as blocks %}`'),
    ('{% from "_partials/blocks.html" import button as b %}{{ b("https://shop.example/", "Shop") }}',
     "a macro imported under another name (`import button as b`)"),
    ('{% raw %}{{ x }}{% endraw %}', "`{% raw %}` block"),
    ('{% include "_partials/amounts.html" without context %}', "an include `without context`"),
    ('{% include "_partials/" ~ locale ~ ".html" ignore missing %}', "include or\n   macro file chosen at render time"),
]


@pytest.mark.parametrize(("code", "documented"), FALLBACK_CONSTRUCTS)
def test_every_construct_inlined_per_email_is_in_the_fallback_list(tmp_path, code, documented):
    from .rendering_program import program_dir, renderer_for

    source = ('---\nsubject: "x"\npreheader: "p"\n---\n<html><head><style>.a { color: red }</style></head>'
              f'<body><p class="a">x</p>{code}</body></html>\n')
    compiled = renderer_for(program_dir(tmp_path, {"odd/en.html": source})).compiled("odd", "en")
    assert compiled.fallback is not None
    fallback = README.split("4. **Fallback.**", 1)[1].split("\n5. ", 1)[0]
    assert " ".join(documented.split()) in " ".join(fallback.split())  # however the lines wrap


def test_the_templates_readme_shows_a_preview_that_needs_no_database():
    # a program just made by `init` has no members: `--sample` is the preview that works there
    guide = (REPO / "templates" / "README.md").read_text(encoding="utf-8")
    assert "preview TEMPLATE --sample\n--locale en" in guide
    preview = next(line for line in README.splitlines() if line.startswith("| `loyalty-mail preview"))
    assert "in `program.default_locale` unless `--locale` says otherwise" in preview

"""A reason to inline per email names the file, line and selector or code where it was written:
in a layout, an include pasted in the middle of a layout's line, a macro library or the email
itself, also when the same code is written in several of those files."""

from __future__ import annotations

import pytest

from .rendering_program import program_dir, renderer_for

FRONT = '---\nsubject: "x"\npreheader: "p"\n---\n'
CHILD = (FRONT + '{% extends "_l/base.html" %}\n{% from "_l/lib.html" import card %}\n'
         '{% block body %}\n<p>{{ member.tier }}</p>\n{{ card() }}\n{% endblock %}\n')
LAYOUT = ('<html><head><style>.gold { color: red }</style></head>\n<body>\n<p>{{ member.tier }}</p>'
          '{% include "_l/inc.html" %}\n{% block body %}{% endblock %}\n<td>{{ member.tier }}</td>\n'
          '</body></html>\n')
INCLUDE = '<span>{{ member.tier }}</span>\n<p>x</p>\n'
LIB = '{% macro card() %}\n<b>{{ member.tier }}</b>\n{% endmacro %}\n'
DATA_CLASS = 'class="{{ member.tier }}"'
CONDITIONAL_STYLE = '{% if member.points > 1 %}<style>p { width: 1px }</style>{% endif %}'


@pytest.mark.parametrize(("files", "expected"), [
    # the include, pasted after a layout's text on one line, holding code the email and layout also hold
    ({"_l/inc.html": INCLUDE.replace("<p>x</p>", f"<p {DATA_CLASS}>x</p>")}, "templates/_l/inc.html:2"),
    ({"_l/base.html": LAYOUT.replace("<td>", f"<td {DATA_CLASS}>")}, "templates/_l/base.html:5"),
    ({"_l/lib.html": LIB.replace("<b>", f"<b {DATA_CLASS}>")}, "templates/_l/lib.html:2"),
    ({"odd/en.html": CHILD.replace("{{ card() }}", f"<i {DATA_CLASS}>{{{{ card() }}}}</i>")}, "templates/odd/en.html:9"),
    # a <style> in a condition, in the include and in the layout
    ({"_l/inc.html": INCLUDE.replace("<p>x</p>", CONDITIONAL_STYLE)}, "templates/_l/inc.html:2"),
    ({"_l/base.html": LAYOUT.replace("<td>", CONDITIONAL_STYLE + "<td>")}, "templates/_l/base.html:5"),
    # the same offending snippet in two files: the one that is printed first in the email
    ({"_l/inc.html": f"<span {DATA_CLASS}>x</span>\n",
      "_l/base.html": LAYOUT.replace("<td>", f"<td {DATA_CLASS}>")}, "templates/_l/inc.html:1"),
    ({"_l/lib.html": LIB.replace("<b>", f"<b {DATA_CLASS}>"),
      "_l/base.html": LAYOUT.replace("<td>", f"<td {DATA_CLASS}>")}, "templates/_l/lib.html:2"),
    # the same whole line in the layout and in the email's block: the layout's is printed first
    ({"_l/base.html": LAYOUT.replace("<p>{{ member.tier }}</p>", f"<p {DATA_CLASS}>x</p>"),
      "odd/en.html": CHILD.replace("<p>{{ member.tier }}</p>", f"<p {DATA_CLASS}>x</p>")}, "templates/_l/base.html:3"),
])
def test_a_reason_names_the_file_and_line_it_was_written_at(tmp_path, files, expected):
    program = {"odd/en.html": CHILD, "_l/base.html": LAYOUT, "_l/inc.html": INCLUDE, "_l/lib.html": LIB, **files}
    fallback = renderer_for(program_dir(tmp_path, program)).compiled("odd", "en").fallback
    assert fallback is not None
    assert str(fallback.location) == expected


def test_a_reason_in_a_long_layouts_include_is_not_placed_past_the_end_of_a_short_email(tmp_path):
    child = FRONT + '{% extends "_l/base.html" %}{% block body %}x{% endblock %}\n'
    layout = ('<html><head><style>.gold { color: red }</style></head>\n<body>\n' + "<p>text</p>\n" * 8
              + '<p>last</p>{% include "_l/inc.html" %}{% block body %}{% endblock %}\n</body></html>\n')
    include = "<span>x</span>" + CONDITIONAL_STYLE
    program = {"odd/en.html": child, "_l/base.html": layout, "_l/inc.html": include}
    fallback = renderer_for(program_dir(tmp_path, program)).compiled("odd", "en").fallback
    assert fallback is not None and "<style>" in fallback.reason
    assert str(fallback.location) == "templates/_l/inc.html:1"

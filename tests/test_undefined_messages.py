"""What a send-time "undefined" error says: a field read from a value that is none for this
member (the next tier of the highest tier) is not a misspelled name, and is not sent looking
for a "closest name" that has nothing to do with it."""

from __future__ import annotations

import pytest

from loyalty_mail.errors import TemplateError

from .rendering_program import NOW, member, program_dir, renderer_for


def test_a_field_of_a_value_that_is_none_says_so_at_its_line_and_column(tmp_path):
    page = '---\nsubject: "x"\npreheader: "p"\n---\n<html><body>\n<p>Next: {{ tier.next.label }}</p>\n</body></html>\n'
    renderer = renderer_for(program_dir(tmp_path, {"odd/en.html": page}))
    assert "Silver" in renderer.render("odd", member(locale="en", tier="member", points=10), now=NOW, tracked=False).html
    with pytest.raises(TemplateError) as raised:
        renderer.render("odd", member(locale="en", tier="platinum", points=40000), now=NOW, tracked=False)
    assert str(raised.value) == (
        "templates/odd/en.html:6:23: undefined variable: 'label' is read from a value that is none for this "
        "member (such as tier.next for the highest tier): ask {% if ... %} before reading its fields")

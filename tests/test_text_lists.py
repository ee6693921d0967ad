"""Lists in the text part: items on consecutive lines, "- " or their number, their paragraphs
indented under them with no blank line inside an item, nested lists indented. An email compiled
once gets the same text as converting the rendered HTML, its loops numbered as they render."""

from __future__ import annotations

import pytest

from loyalty_mail.rendering.renderer import tidy_text
from loyalty_mail.rendering.text import INDENT, ITEM, html_to_text, settle

from .rendering_program import NOW, member, program_dir, renderer_for


def test_nested_lists_are_indented_under_their_item_and_ordered_ones_numbered():
    html = ("<p>Intro</p><ul><li>One</li><li>Two<ul><li>Two A</li><li>Two B<ol><li>deep</li><li>deeper</li>"
            "</ol></li></ul></li><li>Three</li></ul><p>After</p>")
    assert html_to_text(html) == ("Intro\n\n- One\n- Two\n  - Two A\n  - Two B\n    1. deep\n    2. deeper\n"
                                  "- Three\n\nAfter\n")


def test_paragraphs_and_line_breaks_of_an_item_follow_it_without_blank_lines():
    html = ("<ol><li><p>First para</p><p>Second para</p></li><li>\n  <p>Next</p>\n</li>"
            "<li>a<br>b <a href='https://shop.example/a'>more</a></li></ol><p>End</p>")
    assert html_to_text(html) == ("1. First para\n   Second para\n2. Next\n3. a\n"
                                  "   b more (https://shop.example/a)\n\nEnd\n")


def test_an_ordered_list_honours_start_and_value():
    html = '<ol start="9"><li>nine</li><li>ten</li><li value="20">twenty</li><li>next</li></ol>'
    assert html_to_text(html) == "9. nine\n10. ten\n20. twenty\n21. next\n"


def test_a_list_first_inside_an_item_starts_on_its_line():
    assert html_to_text("<ul><li><ul><li>inner</li></ul></li><li></li></ul>") == "- - inner\n-\n"


def test_settle_drops_item_lines_that_printed_nothing_and_joins_an_empty_first_line():
    # as a compiled template's text comes out of Jinja: an `{% if %}` printed nothing
    rendered = f"x\n\n{ITEM}-\n{INDENT * 2}first\n{INDENT * 2}\n{INDENT * 2}second\n{ITEM}- b\n\nend\n"
    assert settle(rendered) == "x\n\n- first\n  second\n- b\n\nend\n"
    assert settle("plain\n  text\n") == "plain\n  text\n"
    assert tidy_text(f"a\n   {ITEM}1. x\n{INDENT * 3}y\n") == "a\n1. x\n   y\n"


LISTS = [
    '<p>Perks:</p>\n<ul>{% for p in perks %}\n  <li>{{ p }}{% if p | length > 3 %}<ul>{% for s in subs %}'
    "<li>{{ s }}</li>{% endfor %}</ul>{% endif %}</li>\n{% endfor %}</ul>\n<p>Thanks.</p>",
    "<ol>{% for p in perks %}<li><p>{{ p }}</p><p>more</p></li>{% endfor %}</ol><p>x</p>",
    '<ol start="5"><li>fixed</li>{% for p in perks %}<li>{{ p }}</li>{% endfor %}<li value="20">twenty</li>'
    "<li>next</li></ol>",
    "<ul><li>{% if perks %}<p>first para</p>{% endif %}<p>second</p></li>"
    "<li>{% for s in subs %}<br>{{ s }}{% endfor %}</li></ul>",
    "<ol><li>a<ol>{% for s in subs %}{% if s != 'skip' %}<li>{{ s }}</li>{% endif %}{% endfor %}</ol></li>"
    "<li>b</li></ol>",
]


@pytest.mark.parametrize("body", LISTS)
def test_the_text_of_an_email_compiled_once_is_the_text_of_its_rendered_html(tmp_path, body):
    page = ('---\nsubject: "x"\n---\n<html><head><style>p { margin: 0 }</style></head><body>'
            '{% set perks = member.attributes.perks %}{% set subs = member.attributes.subs %}\n'
            f"{body}\n</body></html>\n")
    renderer = renderer_for(program_dir(tmp_path, {"odd/en.html": page}))
    assert renderer.compiled("odd", "en").fallback is None
    for perks, subs in ([], []), (["One", "Two"], ["skip", "s2"]), (["One", "Twoo", "Three"], ["s1", "skip", "s3"]):
        someone = member(locale="en", attributes={"perks": perks, "subs": subs})
        text = renderer.render("odd", someone, now=NOW, tracked=False).text
        assert text == html_to_text(renderer.reference_html("odd", someone, now=NOW)), (perks, subs)
        assert INDENT not in text and ITEM not in text and "\n\n\n" not in text


def test_a_loop_of_ordered_items_is_numbered_as_it_renders(tmp_path):
    page = ('---\nsubject: "x"\n---\n<html><body><p>Steps:</p>'
            '<ol>{% for p in member.attributes.perks %}{% if p %}<li><p>{{ p }}</p><p>then</p></li>{% endif %}'
            "{% endfor %}</ol><p>Done.</p></body></html>\n")
    renderer = renderer_for(program_dir(tmp_path, {"odd/en.html": page}))
    someone = member(locale="en", attributes={"perks": ["Join", "", "Buy", "Redeem"]})
    text = renderer.render("odd", someone, now=NOW, tracked=False).text
    assert "Steps:\n\n1. Join\n   then\n2. Buy\n   then\n3. Redeem\n   then\n\nDone." in text

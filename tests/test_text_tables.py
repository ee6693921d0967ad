"""Data tables in the text part: each row on one line, its cells joined by " | ", empty cells left
out; layout tables (role="presentation", a table with tables inside it, one whose rows have at
most one cell with text) keep reading as paragraphs. An email compiled once gets the same text as
converting its rendered HTML, rows from loops and cells from conditions included."""

from __future__ import annotations

import pytest

from loyalty_mail.rendering.checks import sample_members, sample_occurrences
from loyalty_mail.rendering.renderer import tidy_text
from loyalty_mail.rendering.text import CELL, INDENT, ITEM, html_to_text, settle

from .rendering_program import NOW, ROOT, member, program_dir, renderer_for
from .test_text_links import CORPUS, _corpus_data, _port_to_member_attributes, assert_same_links

RECEIPT = ("<p>Your order:</p><table><tr><th><p>Item</p></th><th>Qty</th><th>Price</th></tr>"
           "<tr><td><p>Coffee</p></td><td>2</td><td><p>$8.00</p></td></tr>\n"
           "<tr><td>Cake</td><td>1</td><td>$4.50</td></tr>\n"
           "<tr><td>&nbsp;</td><td></td><td>&nbsp;</td></tr>\n"
           "<tr><td colspan='2'><strong>Total</strong></td><td><strong>$12.50</strong></td></tr></table>"
           "<p>Thanks.</p>")


def test_the_rows_of_a_data_table_read_as_lines_and_its_empty_cells_and_rows_are_left_out():
    assert html_to_text(RECEIPT) == ("Your order:\n\nItem | Qty | Price\nCoffee | 2 | $8.00\nCake | 1 | $4.50\n"
                                     "Total | $12.50\n\nThanks.\n")


def test_a_layout_table_keeps_its_paragraphs():
    presentation = RECEIPT.replace("<table>", '<table role="presentation">')
    assert "Item\n\nQty Price\n\nCoffee\n\n2\n$8.00\n\nCake 1 $4.50\n\n" in html_to_text(presentation)
    nested = RECEIPT.replace("<td>Cake</td>", "<td><table><tr><td>Cake</td></tr></table></td>")
    assert "Item\n\nQty Price\n\nCoffee\n\n2\n$8.00\n\nCake\n\n1 $4.50\n\n" in html_to_text(nested)
    social = ('<table align="center"><tr><td><a href="https://fb.example"><img alt="Facebook"></a></td>'
              '<td><a href="https://x.example"><img alt="X"></a></td></tr></table>')
    assert html_to_text(social) == "Facebook (https://fb.example) X (https://x.example)\n"
    one_column = "<table><tr><td><p>First</p></td></tr><tr><td><p>Second</p></td><td></td></tr></table>"
    assert html_to_text(one_column) == "First\n\nSecond\n"


def test_a_caption_or_a_thead_makes_a_data_table_and_links_and_headings_read_inline():
    html = ('<table><caption>Points <b>in May</b></caption><thead><tr><th><h2>When</h2></th><th>What</th></tr>'
            '</thead><tbody><tr><td>May 3<br>10:00</td><td>Bought <a href="https://shop.example/o/1">order 1</a>'
            "</td></tr></tbody></table><h2>Next</h2>")
    assert html_to_text(html) == ("Points in May\nWhen | What\nMay 3 10:00 | Bought order 1 (https://shop.example/o/1)"
                                  "\n\nNext\n----\n")


def test_a_data_table_inside_a_list_item_keeps_its_indentation():
    html = "<ul><li>Order<table><tr><td>Coffee</td><td>$8</td></tr></table></li><li>Next</li></ul>"
    assert html_to_text(html) == "- Order\n  Coffee | $8\n- Next\n"


def test_settle_joins_the_cells_of_a_rendered_row():
    rendered = f"x\n\n{CELL}a{CELL} {CELL}b \n{CELL} {CELL}\n{INDENT * 2}{CELL}c{CELL}d\n\nend"
    assert settle(rendered) == "x\n\na | b\n  c | d\n\nend"
    assert tidy_text(f"{ITEM}- {CELL}a{CELL}b\n") == "- a | b\n"


TABLES = [
    # rows from a loop, after a header row
    "<table><tr><th>Item</th><th>Price</th></tr>\n{% for p in perks %}\n"
    "  <tr><td>{{ p }}</td><td>{{ p | length }} pts</td></tr>\n{% endfor %}\n</table>",
    # cells that a condition prints, a value that can be empty, a row that can be empty
    "<table>{% for p in perks %}<tr>{% if p != 'Two' %}<td><p>{{ p }}</p></td>{% endif %}"
    "<td>{{ subs | join(', ') }}</td><td><a href='https://shop.example/{{ p }}'>see {{ p }}</a></td></tr>"
    "{% endfor %}<tr><td>Total</td><td>{{ perks | length }}</td></tr></table><p>End</p>",
    # a caption and sections, a list and a data table together
    "<ul>{% for s in subs %}<li>{{ s }}</li>{% endfor %}</ul><table><caption>Yours</caption><thead><tr>"
    "<th>A</th><th>B</th></tr></thead><tbody>{% for p in perks %}<tr><td>{{ p }}</td><td>"
    "{% if loop.first %}first{% endif %}</td></tr>{% endfor %}</tbody></table>",
]


@pytest.mark.parametrize("body", TABLES)
def test_the_text_of_a_table_compiled_once_is_the_text_of_its_rendered_html(tmp_path, body):
    page = ('---\nsubject: "x"\n---\n<html><head><style>td { padding: 0 }</style></head><body>'
            '{% set perks = member.attributes.perks %}{% set subs = member.attributes.subs %}\n'
            f"<p>Hello</p>\n{body}\n</body></html>\n")
    renderer = renderer_for(program_dir(tmp_path, {"odd/en.html": page}))
    assert renderer.compiled("odd", "en").fallback is None
    for perks, subs in ([], []), (["One"], []), (["One", "Two", "Three"], ["s1", "s2"]):
        someone = member(locale="en", attributes={"perks": perks, "subs": subs})
        text = renderer.render("odd", someone, now=NOW, tracked=False).text
        assert text == html_to_text(renderer.reference_html("odd", someone, now=NOW)), (perks, subs)
        assert CELL not in text and "\n\n\n" not in text
        if perks:
            assert "\nOne | " in text
        tracked = renderer.render("odd", someone, now=NOW, tracked=True, send_id="send-1")
        assert_same_links(tracked.html, tracked.text, f"{perks} {subs}")


RECEIPTS = {
    "postmark-templates__basic_receipt.html": ["Description | Amount", "Total | "],
    "sendgrid-email-templates__dynamic_receipt.html": ["Total | "],
    "mailgun-transactional-email-templates__billing.html": ["Service 1 | $ 19.99", "Total | $ 33.98"],
}


@pytest.mark.parametrize("name", sorted(RECEIPTS))
def test_the_public_receipts_read_one_line_per_row_compiled_and_per_email(tmp_path, name):
    source = _port_to_member_attributes((CORPUS / name).read_text(encoding="utf-8"))
    renderer = renderer_for(program_dir(tmp_path, {"receipt/en.html": f'---\nsubject: "r"\n---\n{source}'}))
    someone = member(locale="en", attributes=_corpus_data(CORPUS / name, source))
    text = renderer.render("receipt", someone, now=NOW, tracked=False).text
    reference = html_to_text(renderer.reference_html("receipt", someone, now=NOW))
    # a compiled heading is underlined as long as its template code, not its rendered text
    assert _not_underlines(text) == _not_underlines(reference)
    for line in RECEIPTS[name]:
        assert f"\n{line}" in text, text
    if name.startswith("postmark"):
        assert "\ndescription & co | amount & co\nTotal | total & co\n" in text
    tracked = renderer.render("receipt", someone, now=NOW, tracked=True, send_id="send-1")
    assert_same_links(tracked.html, tracked.text, name)


def _not_underlines(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line or set(line) - {"=", "-"}]


def test_the_example_statement_reads_one_line_per_row():
    renderer = renderer_for(ROOT)
    someone = sample_members(renderer, "en", NOW)[0]
    occurrence = next(o for o in sample_occurrences(renderer) if o["kind"] == "statement")
    for locale, label in ("en", "Points earned"), ("vi", "Điểm đã nhận"):
        text = renderer.render("statement", someone, now=NOW, occurrence=occurrence, locale=locale,
                               tracked=False).text
        assert f"\n\n{label} | +" in text and "\n\n+" not in text, text

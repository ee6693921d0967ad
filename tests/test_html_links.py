"""Links and the page structure are read with HTML parsers: a `>` inside an attribute, comments,
and Outlook's conditional comments (whose markup is a comment to lxml and HTML to Outlook)."""

from __future__ import annotations

import re

import lxml.html
import pytest

from loyalty_mail.rendering.dom import dom_difference
from loyalty_mail.rendering.links import links_in, rewrite_tree
from loyalty_mail.signing import TokenSigner

from .rendering_program import NOW, ROOT, SECRET, member, program_dir, renderer_for

WELCOME = (ROOT / "templates/welcome/en.html").read_text()

PAGE = """<html><body>
<a title="a > b" href="https://shop.example/1?a=1&amp;b=2">one</a>
<!-- <a href="https://shop.example/commented-out">not a link</a> -->
<!--[if mso]><table><tr><td><a class='x' href='https://shop.example/mso?c=3&amp;d=4' data-x="y > z">mso</a><![endif]-->
<a href="mailto:help@shop.example">mail</a><a href="#top">top</a><a href="https://shop.example/no" data-notrack>no</a>
<!--[if mso]></td></tr></table><![endif]-->
<a href=https://shop.example/unquoted>last</a>
</body></html>"""


def test_links_are_found_in_document_order_conditional_comments_included():
    assert links_in(PAGE) == [(0, "https://shop.example/1?a=1&b=2"), (1, "https://shop.example/mso?c=3&d=4"),
                              (2, "https://shop.example/unquoted")]


def test_a_conditional_comment_is_rewritten_in_place_and_keeps_markup_another_one_closes():
    page = lxml.html.document_fromstring(PAGE)
    assert rewrite_tree(page, lambda number, url: f"https://t.example/c/{number}?u={url}") == 3
    written = lxml.html.tostring(page, encoding="unicode")
    # the comment still opens a table it does not close (the next comment closes it)
    assert ("<!--[if mso]><table><tr><td><a class=\"x\" href=\"https://t.example/c/1?u=https://shop.example/"
            "mso?c=3&amp;d=4\" data-x=\"y &gt; z\">mso</a><![endif]-->") in written
    assert "<!--[if mso]></td></tr></table><![endif]-->" in written
    assert "<!-- <a href=\"https://shop.example/commented-out\">not a link</a> -->" in written
    assert 'href="https://t.example/c/0?u=https://shop.example/1?a=1&amp;b=2"' in written
    assert 'href="mailto:help@shop.example"' in written and 'href="https://shop.example/no"' in written


def with_content(extra: str) -> str:
    return WELCOME.replace("{% endblock %}", extra + "{% endblock %}", 1)


def test_a_link_in_a_conditional_comment_is_tracked_in_the_compiled_email(tmp_path):
    source = with_content('<!--[if mso]><p><a href="https://shop.example/outlook?m={{ member.member_id }}'
                          '&amp;tier=gold">for Outlook</a></p><![endif]-->')
    renderer = renderer_for(program_dir(tmp_path, {"welcome/en.html": source}))
    assert renderer.compiled("welcome", "en").fallback is None
    html = renderer.render("welcome", member(locale="en"), now=NOW).html
    comment = re.search(r"<!--\[if mso\]><p><a href=\"([^\"]+)\">for Outlook</a></p><!\[endif\]-->", html)
    assert comment is not None
    token = comment.group(1).rsplit("/c/", 1)[1]
    assert TokenSigner(SECRET).verify(token, "click").url == "https://shop.example/outlook?m=SV000123&tier=gold"


@pytest.mark.parametrize("markup", [
    # Outlook-only table cells opened and closed in two conditional comments, inside a condition
    '{% if member.points > 5 %}<!--[if mso]><table><tr><td><![endif]--><p>big</p>'
    '<!--[if mso]></td></tr></table><![endif]-->{% endif %}',
    # a `>` and a `<` inside attribute values of elements a condition opens and closes
    '{% if member.points > 5 %}<div title="a > b" data-note="<p>"><p>big</p></div>{% endif %}',
    # markup in an HTML comment is not markup
    '{% if member.points > 5 %}<!-- <div> -->{% endif %}<p>after</p>',
])
def test_the_page_structure_is_read_by_an_html_tokenizer(tmp_path, markup):
    renderer = renderer_for(program_dir(tmp_path, {"welcome/en.html": with_content(markup)}))
    assert renderer.compiled("welcome", "en").fallback is None
    someone = member(locale="en")
    html = renderer.render("welcome", someone, now=NOW, tracked=False).html
    assert dom_difference(html, renderer.reference_html("welcome", someone, now=NOW)) is None


@pytest.mark.parametrize(("expression", "url"), [
    ("'https://shop.example/a?x=1&y=2'", "https://shop.example/a?x=1&y=2"),
    ("'https://shop.example/a?x=1&amp;y=2' | safe", "https://shop.example/a?x=1&y=2"),
    ("'https://shop.example/' ~ member.member_id", "https://shop.example/SV000123"),
])
def test_an_href_that_is_one_expression_is_signed_as_the_browser_reads_it(tmp_path, expression, url):
    source = with_content('<p><a href="{{ ' + expression + ' }}">go</a></p>')
    renderer = renderer_for(program_dir(tmp_path, {"welcome/en.html": source}))
    assert renderer.compiled("welcome", "en").fallback is None
    sent = renderer.render("welcome", member(locale="en"), now=NOW, send_id="send-2")
    token = re.search(r'<a href="[^"]+/c/([^"]+)">go</a>', sent.html).group(1)
    assert TokenSigner(SECRET).verify(token, "click").url == url
    assert f"/c/{token}" in sent.text  # the text part links to the same click URL
    someone = member(locale="en")
    preview = renderer.render("welcome", someone, now=NOW, tracked=False).html
    assert dom_difference(preview, renderer.reference_html("welcome", someone, now=NOW)) is None


BULLETPROOF = (  # Campaign Monitor's bulletproof button: Outlook draws the VML shape, and follows its href
    '<div><!--[if mso]><v:roundrect xmlns:v="urn:schemas-microsoft-com:vml" href="https://shop.example/sale?m='
    '{{ member.member_id }}&amp;c=vml" style="height:40px;width:200px" arcsize="10%" stroke="f" fillcolor="#d62828">'
    '<w:anchorlock/><center>Shop the sale</center></v:roundrect><![endif]-->'
    '<!--[if !mso]><!-- --><a href="https://shop.example/sale?m={{ member.member_id }}&amp;c=html">Shop the sale</a>'
    '<!--<![endif]--></div>')


@pytest.mark.parametrize("source", [with_content(BULLETPROOF),  # compiled once
                                    with_content(BULLETPROOF + '<p class="{{ member.tier }}">per email</p>')])
def test_the_href_of_an_outlook_vml_button_is_tracked_like_a_link(tmp_path, source):
    renderer = renderer_for(program_dir(tmp_path, {"welcome/en.html": source}))
    html = renderer.render("welcome", member(locale="en"), now=NOW).html
    shape = re.search(r'<v:roundrect xmlns:v="urn:schemas-microsoft-com:vml" href="([^"]+)"', html)
    assert shape is not None
    token = shape.group(1).rsplit("/c/", 1)[1]
    assert TokenSigner(SECRET).verify(token, "click").url == "https://shop.example/sale?m=SV000123&c=vml"
    assert links_in(BULLETPROOF.replace("{{ member.member_id }}", "X"))[0] == (0, "https://shop.example/sale?m=X&c=vml")

"""Text the template writes as text stays text in the compiled email: HTML entities that decode to
`{{`, `{%` or `{#`, or braces an element closes between, are printed as written in both parts,
never run as template code."""

from __future__ import annotations

import pytest

from loyalty_mail.rendering.dom import dom_difference

from .rendering_program import NOW, member, program_dir, renderer_for


def page(body: str) -> str:
    return ('---\nsubject: "x"\npreheader: "p"\n---\n<html><head><style>.a { color: red }</style></head>\n'
            f"<body>\n{body}\n</body></html>\n")


@pytest.mark.parametrize(("body", "html", "text"), [
    ('<p class="a">Type &#123;&#123; member.email &#125;&#125; or &#123;% if x %&#125;, {{ member.first_name }}</p>',
     "Type {{ member.email }} or {% if x %}, Lan", "Type {{ member.email }} or {% if x %}, Lan"),
    ('<p class="a">&#123;# not a comment #&#125; &#123;{{ member.first_name }}&#125;</p>',
     "{# not a comment #} {Lan}", "{# not a comment #} {Lan}"),
    ('<p class="a"><b>{</b>{ member.email }</p>', "<b>{</b>{ member.email }", "{{ member.email }"),
    ('<p class="a" title="&#123;&#123; 7 * 7 &#125;&#125;">'
     '<a href="https://shop.example/?q=&#123;&#123;x&#125;&#125;&amp;m={{ member.member_id }}">go</a></p>',
     'title="{{ 7 * 7 }}"', "go (https://shop.example/?q={{x}}&m=SV000123)"),
])
def test_text_that_decodes_to_template_syntax_is_printed_as_written(tmp_path, body, html, text):
    renderer = renderer_for(program_dir(tmp_path, {"odd/en.html": page(body)}))
    someone = member(locale="en")
    email = renderer.render("odd", someone, now=NOW, tracked=False)
    assert renderer.compiled("odd", "en").fallback is None
    assert html in email.html
    assert text in email.text
    assert dom_difference(email.html, renderer.reference_html("odd", someone, now=NOW)) is None


def test_a_tracked_link_whose_url_decodes_to_template_syntax_signs_the_url_as_written(tmp_path):
    body = '<p><a href="https://shop.example/?q=&#123;&#123;x&#125;&#125;&amp;m={{ member.member_id }}">go</a></p>'
    renderer = renderer_for(program_dir(tmp_path, {"odd/en.html": page(body)}))
    email = renderer.render("odd", member(locale="en"), now=NOW, send_id="s1")
    signed = [line for line in email.text.splitlines() if "/c/" in line]
    assert len(signed) == 1
    token = signed[0].rsplit("/c/", 1)[1].rstrip(")")
    assert renderer.signer is not None
    assert renderer.signer.verify(token).url == "https://shop.example/?q={{x}}&m=SV000123"

"""Links in the text part: entities decoded once, the same URL as the HTML part, before and after
tracking, on the example templates, the test fixtures and the public templates corpus."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import httpx
import lxml.html
import pytest

from loyalty_mail import db
from loyalty_mail.config import load_settings
from loyalty_mail.rendering.checks import sample_members, sample_occurrences
from loyalty_mail.signing import TokenSigner
from loyalty_mail.tracking.app import create_app

from .rendering_program import NOW, ROOT, SECRET, member, program_dir, renderer_for

CORPUS = ROOT / "tests" / "fixtures" / "email-templates"  # eight public templates and their data
BASE = "https://t.senvang.example"
_TEXT_URL = re.compile(r"https?://[^\s<>()\"']+")

SHOP = """---
subject: "Gold offers"
---
<html><head><style>.offer {{ color: #333 }}</style></head><body>
<p class="{paragraph}">Shop <a href="https://shop.example/p?m={{{{ member.member_id }}}}&amp;tier=gold">gold offers</a></p>
</body></html>
"""


def token_url(url: str) -> str:
    """A click URL -> the URL its token carries; any other URL as it is."""
    if url.startswith(f"{BASE}/c/"):
        claims = TokenSigner(SECRET).verify(url.removeprefix(f"{BASE}/c/"), "click")
        assert claims.url is not None
        return claims.url
    return url


def _shown(element: Any) -> bool:
    """False inside the elements the text part leaves out (the hidden preheader, `data-text="skip"`)."""
    for node in (element, *element.iterancestors()):
        style = (node.get("style") or "").replace(" ", "").lower()
        if "display:none" in style or node.get("data-text") == "skip":
            return False
    return True


def html_links(document: str) -> set[str]:
    """The http(s) links of the HTML part, as a browser reads the href (entities decoded), and
    the URLs its visible text shows."""
    body = lxml.html.document_fromstring(document).find("body")
    hrefs = {(a.get("href") or "").strip() for a in body.iter("a") if _shown(a)}
    links = {href for href in hrefs if href.lower().startswith(("http://", "https://"))}
    for element in body.iter():
        if isinstance(element.tag, str) and element.tag not in ("style", "script") and _shown(element):
            links.update(_TEXT_URL.findall(element.text or ""))
        if element is not body and _shown(element.getparent()):
            links.update(_TEXT_URL.findall(element.tail or ""))
    return {token_url(link) for link in links}


def text_links(text: str) -> set[str]:
    return {token_url(url) for url in _TEXT_URL.findall(text)}


def assert_same_links(html: str, text: str, where: str) -> None:
    in_html, in_text = html_links(html), text_links(text)
    assert in_html == in_text, f"{where}: only in HTML {in_html - in_text}, only in text {in_text - in_html}"
    assert not any("&amp;" in url or "amp;" in url for url in in_text), f"{where}: {in_text}"


# -- an encoded ampersand in an href ----------------------------------------------------------

def click(project: Path, tmp_path: Path, url: str) -> httpx.Response:
    """GET a click URL from the tracking app, in process, on a real SQLite file."""
    settings = load_settings(project, environ={"LOYALTY_MAIL_SECRET": SECRET})
    engine = db.create_db_engine(f"sqlite:///{tmp_path / 'tracking.db'}")
    db.ensure_schema(engine)
    app = create_app(settings, engine, clock=lambda: NOW)

    async def get() -> httpx.Response:
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
                return await http.get(httpx.URL(url).path)
    try:
        return asyncio.run(get())
    finally:
        engine.dispose()


@pytest.mark.parametrize("paragraph", ["offer", "{{ tier.name }}"], ids=["compiled", "per-email"])
def test_an_encoded_ampersand_is_decoded_once_and_both_parts_carry_the_same_url(tmp_path, paragraph):
    project = program_dir(tmp_path, {"shop/vi.html": SHOP.format(paragraph=paragraph)})
    renderer = renderer_for(project)
    assert (renderer.compiled("shop", "vi").fallback is None) == (paragraph == "offer")
    wanted = "https://shop.example/p?m=SV000123&tier=gold"

    preview = renderer.render("shop", member(), now=NOW, tracked=False)
    assert f"(https://shop.example/p?m=SV000123&tier=gold)" in preview.text
    assert 'href="https://shop.example/p?m=SV000123&amp;tier=gold"' in preview.html

    sent = renderer.render("shop", member(), now=NOW, send_id="send-1")
    [in_html] = [a.get("href") for a in lxml.html.document_fromstring(sent.html).iter("a")
                 if "/c/" in a.get("href", "")]
    [in_text] = [url for url in _TEXT_URL.findall(sent.text) if "/c/" in url]
    assert in_html == in_text
    assert token_url(in_text) == wanted
    answer = click(project, tmp_path, in_text)
    assert (answer.status_code, answer.headers["location"]) == (302, wanted)


@pytest.mark.parametrize("paragraph", ["offer", "{{ tier.name }}"], ids=["compiled", "per-email"])
def test_member_data_in_a_link_is_not_decoded_in_the_text_part(tmp_path, paragraph):
    """Only what the template wrote as HTML is decoded: data that looks like an entity stays."""
    renderer = renderer_for(program_dir(tmp_path, {"shop/vi.html": SHOP.format(paragraph=paragraph)}))
    wanted = "https://shop.example/p?m=A&lt;B&tier=gold"
    sent = renderer.render("shop", member(member_id="A&lt;B"), now=NOW, send_id="send-1")
    assert html_links(sent.html) == text_links(sent.text) == {wanted}
    preview = renderer.render("shop", member(member_id="A&lt;B"), now=NOW, tracked=False)
    assert f"({wanted})" in preview.text


LINES_OF_THEIR_OWN = """---
subject: "Gold offers"
---
<html><head><style>.offer {{ color: #333 }}</style></head><body>
<table><tr><td class="{paragraph}">
  <a href="https://shop.example/">
    {{{{ program.name }}}}
  </a>
</td></tr></table>
<p class="{paragraph}">Shop our <a href="https://shop.example/gold">
  gold offers</a> now, or <a href="https://shop.example/all">see
  everything
  </a>.</p>
</body></html>
"""


@pytest.mark.parametrize("paragraph", ["offer", "{{ tier.name }}"], ids=["compiled", "per-email"])
def test_a_link_whose_tags_stand_on_lines_of_their_own_reads_label_then_url_on_one_line(tmp_path, paragraph):
    renderer = renderer_for(program_dir(tmp_path, {"shop/vi.html": LINES_OF_THEIR_OWN.format(paragraph=paragraph)}))
    assert (renderer.compiled("shop", "vi").fallback is None) == (paragraph == "offer")
    text = renderer.render("shop", member(), now=NOW, tracked=False).text
    assert text == ("Sen Vàng Rewards (https://shop.example/)\n\n"
                    "Shop our gold offers (https://shop.example/gold) now, or see\n"
                    "everything (https://shop.example/all).\n")


# -- the two parts carry the same links, on every template we have -------------------------

def _example_emails() -> list[tuple[str, str]]:
    renderer = renderer_for(ROOT)
    return [(email, locale) for email in renderer.catalog.names for locale in ("vi", "en")]


@pytest.mark.parametrize(("email", "locale"), _example_emails())
def test_example_templates_have_the_same_links_in_both_parts(email, locale):
    renderer = renderer_for(ROOT)
    for sample in sample_members(renderer, locale, NOW):
        for occurrence in sample_occurrences(renderer):
            for tracked in (True, False):
                rendered = renderer.render(email, sample, now=NOW, occurrence=occurrence, locale=locale,
                                           send_id="send-1" if tracked else None, tracked=tracked)
                assert_same_links(rendered.html, rendered.text,
                                  f"{email}/{locale} {sample['tier']} {occurrence['kind']} tracked={tracked}")


def _port_to_member_attributes(source: str) -> str:
    """Handlebars -> Jinja, the template's data read from the member's custom attributes."""
    def name(path: str) -> str:
        if path == "this" or path.startswith("this."):
            return path
        first, _, rest = path.partition(".")  # a subscript: `items` is also a dict method
        return f"member.attributes['{first}']" + (f".{rest}" if rest else "")

    source = re.sub(r"\{\{#each ([\w.]+)\}\}", lambda m: f"{{% for this in {name(m.group(1))} %}}", source)
    source = source.replace("{{/each}}", "{% endfor %}")
    def test(path: str) -> str:  # a missing field is false, as in Handlebars
        return f"{name(path)} is defined and {name(path)}"

    source = re.sub(r"\{\{#if ([\w.]+)\}\}", lambda m: f"{{% if {test(m.group(1))} %}}", source)
    source = re.sub(r"\{\{else if ([\w.]+)\}\}", lambda m: f"{{% elif {test(m.group(1))} %}}", source)
    source = source.replace("{{else}}", "{% else %}").replace("{{/if}}", "{% endif %}")
    return re.sub(r"\{\{\s*([\w.]+)\s*\}\}", lambda m: f"{{{{ {name(m.group(1))} }}}}", source)


def _corpus_data(path: Path, source: str) -> dict[str, object]:
    """The authors' sample data where they ship it; otherwise every field filled, URLs with two
    query parameters (an `&` the HTML part escapes and the text part must not)."""
    data_file = CORPUS / "data" / path.name.replace(".html", "_data.json")
    data: dict[str, object] = json.loads(data_file.read_text()) if data_file.exists() else {}
    for field in re.findall(r"member\.attributes\['(\w+)'\]", source):
        if field not in data:
            data[field] = (f"https://example.com/{field}?utm_source=email&utm_content={field}"
                           if field.endswith("url") else f"{field} & co")
    if "receipt_details" in data and isinstance(data["receipt_details"], str):
        data["receipt_details"] = [{"description": "Item one", "amount": "$10"}]
    return data


def test_corpus_templates_have_the_same_links_in_both_parts(tmp_path):
    files, data = {}, {}
    for index, path in enumerate(sorted(CORPUS.glob("*.html"))):
        source = _port_to_member_attributes(path.read_text(encoding="utf-8"))
        files[f"corpus{index}/vi.html"] = f'---\nsubject: "{path.stem}"\n---\n{source}'
        data[f"corpus{index}"] = (path.name, _corpus_data(path, source))
    assert len(files) == 8
    renderer = renderer_for(program_dir(tmp_path, files))
    for email, (name, attributes) in data.items():
        for tracked in (True, False):
            rendered = renderer.render(email, member(attributes=attributes), now=NOW, tracked=tracked,
                                       send_id="send-1" if tracked else None)
            assert_same_links(rendered.html, rendered.text, f"{name} tracked={tracked}")


def test_a_link_written_in_a_sentence_of_an_own_text_part_leaves_the_punctuation_after_it(tmp_path):
    text = ("The sale is on: https://shop.example/sale.\nQuestions? See https://help.example/faq, or write.\n"
            "Or (https://shop.example/x) and \"https://shop.example/q?a=1&b=2\"! Also https://shop.example/p?id=7;\n")
    renderer = renderer_for(program_dir(tmp_path, {"welcome/en.txt": text}))
    rendered = renderer.render("welcome", member(locale="en"), now=NOW, send_id="s")
    signed = re.findall(r"https://t\.senvang\.example/c/([\w-]+\.[\w-]+)", rendered.text)  # body.tag
    assert [TokenSigner(SECRET).verify(token, "click").url for token in signed] == [
        "https://shop.example/sale", "https://help.example/faq", "https://shop.example/x",
        "https://shop.example/q?a=1&b=2", "https://shop.example/p?id=7"]
    assert re.sub(r"https://t\.senvang\.example/c/[\w-]+\.[\w-]+", "URL", rendered.text) == (
        "The sale is on: URL.\nQuestions? See URL, or write.\nOr (URL) and \"URL\"! Also URL;\n")

"""The studio in a real browser (Playwright driving Chromium) against a real `loyalty-mail studio`
process on loopback: live reload of a template and a segment, the error in place of the preview
and the recovery, the pages at 1280 and 390 px, keyboard navigation, and the token."""

from __future__ import annotations

import os
import queue
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from .conftest import REPO
from .studio_program import AT, make_studio_program, points_between

CHROMIUM = "/usr/bin/chromium"
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not Path(CHROMIUM).exists() and os.environ.get("CI", "").lower() not in ("1", "true"),
                                 reason="Chromium is not installed (apt-get install chromium)"),
              pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")]
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install -e .[test])")
LIVE_SECONDS = 2.0  # an edit shows in the page within this


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def studio_process(base: Path) -> Iterator[tuple[str, Path]]:
    """A studio process on a free loopback port; yields its printed URL and the program directory."""
    url = f"sqlite:///{base / 'studio.db'}"
    directory = make_studio_program(base / "program", url)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "loyalty_mail", "--project", str(directory), "--database", url, "studio",
         "--port", str(port), "--at", AT],
        cwd=base, env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
        text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stderr], daemon=True).start()  # type: ignore[union-attr]
    deadline = time.monotonic() + 60
    printed = None
    while printed is None and time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            assert process.poll() is None, "the studio exited"
            continue
        found = re.search(r"http://127\.0\.0\.1:\d+/\?token=[\w-]+", line)
        printed = found.group(0) if found else None
    try:
        assert printed, "the studio printed no URL within 60 s"
        assert f":{port}/" in printed
        yield printed, directory
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    with studio_process(tmp_path_factory.mktemp("studio")) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser, studio):
    url, _ = studio
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.goto(url)
    yield tab
    context.close()


def origin(url: str) -> str:
    return url.split("/?")[0]


def test_a_request_without_the_token_is_refused(studio):
    url, _ = studio
    for path in ("/emails/welcome/en", "/segments", "/events"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(origin(url) + path, timeout=10)
        assert refused.value.code == 403


def test_an_edited_template_shows_in_the_preview_then_its_error_then_the_fix(page, studio):
    url, directory = studio
    page.goto(origin(url) + "/emails/welcome/en")
    desktop = page.frame_locator("iframe[title^='Desktop']")
    mobile = page.frame_locator("iframe[title^='Mobile']")
    sync_api.expect(desktop.locator("h1")).to_contain_text("Welcome, Lan!")
    path = directory / "templates" / "welcome" / "en.html"
    source = path.read_text(encoding="utf-8")
    try:
        path.write_text(source.replace("Welcome, {{", "Xin chào from the studio, {{"), encoding="utf-8")
        started = time.monotonic()
        sync_api.expect(desktop.locator("h1")).to_contain_text("Xin chào from the studio, Lan!",
                                                               timeout=LIVE_SECONDS * 1000)
        assert time.monotonic() - started < LIVE_SECONDS
        sync_api.expect(mobile.locator("h1")).to_contain_text("Xin chào from the studio")

        lines = source.splitlines(keepends=True)
        number = next(i for i, line in enumerate(lines) if "<h1" in line)
        lines[number] = lines[number].replace("{{ member.first_name", "{{ (member.first_name", 1)
        path.write_text("".join(lines), encoding="utf-8")
        error = page.locator("#preview-error")
        sync_api.expect(error).to_contain_text(f"templates/welcome/en.html:{number + 1}", timeout=LIVE_SECONDS * 1000)
        sync_api.expect(page.locator("iframe")).to_have_count(0)
        assert "Traceback" not in page.content()

        path.write_text(source.replace("Welcome, {{", "Fixed again, {{"), encoding="utf-8")
        sync_api.expect(desktop.locator("h1")).to_contain_text("Fixed again, Lan!", timeout=LIVE_SECONDS * 1000)
        sync_api.expect(page.locator("#preview-error")).to_have_count(0)
    finally:
        path.write_text(source, encoding="utf-8")


def test_an_edited_partial_updates_the_preview(page, studio):
    url, directory = studio
    page.goto(origin(url) + "/emails/welcome/vi")
    layout = directory / "templates" / "_layouts" / "vi.html"
    source = layout.read_text(encoding="utf-8")
    marker = "Đã sửa trong studio"
    try:
        layout.write_text(source.replace("{{ program.postal_address }}", f"{{{{ program.postal_address }}}} {marker}"),
                          encoding="utf-8")
        sync_api.expect(page.frame_locator("iframe[title^='Desktop']").locator("body")).to_contain_text(
            marker, timeout=LIVE_SECONDS * 1000)
    finally:
        layout.write_text(source, encoding="utf-8")


def test_an_edited_segment_shows_its_new_count_and_who_enters_and_leaves(page, studio):
    url, directory = studio
    page.goto(origin(url) + "/segments/vip")
    count = page.locator("#segment-count")
    sync_api.expect(count).to_have_text(f"{len(points_between(8000)):,}")
    path = directory / "segments" / "vip.yaml"
    source = path.read_text(encoding="utf-8")
    try:
        path.write_text(source.replace("at_least: gold", "at_least: silver"), encoding="utf-8")
        sync_api.expect(count).to_have_text(f"{len(points_between(2000)):,}", timeout=LIVE_SECONDS * 1000)
        entering = points_between(2000, 8000)
        sync_api.expect(page.locator("#change-summary")).to_have_text(
            f"This edit adds {len(entering):,} members and removes 0.")
        examples = page.locator("#head-change td:first-child").all_inner_texts()
        assert examples == sorted(entering)[:5]
    finally:
        path.write_text(source, encoding="utf-8")
    sync_api.expect(page.locator("#change-summary")).to_have_text("the file is as committed at HEAD",
                                                                  timeout=LIVE_SECONDS * 1000)


@pytest.mark.parametrize("width", [1280, 390])
def test_every_page_fits_the_width_and_labels_its_controls(browser, studio, width):
    url, _ = studio
    context = browser.new_context(viewport={"width": width, "height": 900})
    tab = context.new_page()
    tab.goto(url)
    try:
        for path in ("/emails/welcome/en", "/segments/vip", "/flows?member=ST0003", "/outbox", "/reports"):
            tab.goto(origin(url) + path)
            overflow = tab.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
            assert overflow <= 0, f"{path} is wider than {width} px by {overflow} px"
            split = tab.evaluate("""() => [...document.querySelectorAll('td')].filter(td => {
                    const range = document.createRange(); range.selectNodeContents(td);
                    return td.textContent.trim() && !td.textContent.trim().includes(' ')
                        && new Set([...range.getClientRects()].map(r => Math.round(r.top))).size > 1;
                }).map(td => td.textContent.trim())""")
            assert split == [], f"{path}: numbers or ids split over lines at {width} px: {split}"
            unlabelled = tab.evaluate("""() => [...document.querySelectorAll('input:not([type=hidden]), select, button, iframe')]
                .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                             && !e.getAttribute('aria-labelledby') && !e.getAttribute('title')
                             && !(e.tagName === 'BUTTON' && e.textContent.trim()))
                .map(e => e.outerHTML.slice(0, 80))""")
            assert unlabelled == [], path
    finally:
        context.close()


def test_the_keyboard_reaches_the_navigation_and_the_member_search(page, studio):
    url, _ = studio
    page.goto(origin(url) + "/emails/welcome/en")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.getAttribute('href')") == "/emails"
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/segments$"))
    page.goto(origin(url) + "/emails/welcome/en")
    page.get_by_label("Find a member (id or email)").fill("member12@")
    page.keyboard.press("Enter")
    page.get_by_role("link", name="ST0012").click()
    sync_api.expect(page.locator("#rendered-for")).to_contain_text("ST0012")
    sync_api.expect(page.frame_locator("iframe[title^='Desktop']").locator("h1")).to_contain_text("Name12")


def test_the_desktop_preview_is_wider_than_the_emails_mobile_breakpoint(page, studio):
    """The desktop frame shows the desktop layout: its window is wider than the email's
    `@media (max-width: ...)` breakpoint; the mobile frame is narrower."""
    url, _ = studio
    page.goto(origin(url) + "/emails/welcome/en")
    srcdoc = page.locator("iframe[title^='Desktop']").get_attribute("srcdoc") or ""
    breakpoint = max(int(px) for px in re.findall(r"max-width:\s*(\d+)px\s*\)", srcdoc))
    desktop = page.locator("iframe[title^='Desktop']").evaluate("frame => frame.clientWidth")
    mobile = page.locator("iframe[title^='Mobile']").evaluate("frame => frame.clientWidth")
    assert desktop > breakpoint >= 600 and mobile <= 375


def test_a_live_refresh_keeps_what_is_typed_and_the_focus(page, studio):
    url, directory = studio
    page.goto(origin(url) + "/emails/welcome/en")
    page.locator("#to").fill("me@studio.example")
    page.locator("#q").fill("member1")
    page.locator("#q").press("ArrowLeft")  # the caret, one back from the end
    path = directory / "templates" / "welcome" / "en.html"
    source = path.read_text(encoding="utf-8")
    try:
        path.write_text(source.replace("Welcome, {{", "Typed on, {{"), encoding="utf-8")
        sync_api.expect(page.frame_locator("iframe[title^='Desktop']").locator("h1")).to_contain_text(
            "Typed on, Lan!", timeout=LIVE_SECONDS * 1000)
        assert page.locator("#q").input_value() == "member1"
        assert page.locator("#to").input_value() == "me@studio.example"
        assert page.evaluate("[document.activeElement.id, document.activeElement.selectionStart]") == ["q", 6]
    finally:
        path.write_text(source, encoding="utf-8")


def test_a_tab_of_a_studio_that_stopped_says_so(browser, tmp_path):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    try:
        with studio_process(tmp_path) as (url, _):
            tab.goto(url)
            tab.goto(origin(url) + "/segments")
            sync_api.expect(tab.locator("#segment-list")).to_be_visible()
            sync_api.expect(tab.locator("#studio-gone")).to_have_count(0)
        sync_api.expect(tab.locator("#studio-gone")).to_contain_text("stopped or restarted", timeout=15_000)
        sync_api.expect(tab.locator("#studio-gone")).to_contain_text("Open the new URL it printed")
    finally:
        context.close()

"""The API's /docs page in a real browser (Playwright driving Chromium) against a real
`loyalty-mail api` process, with every request outside loopback refused: the page needs nothing
from the network."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from .conftest import REPO, TEST_CONFIG
from .processes import api_program, free_port, stop, wait_until_answering

CHROMIUM = "/usr/bin/chromium"
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not Path(CHROMIUM).exists() and os.environ.get("CI", "").lower() not in ("1", "true"),
                                 reason="Chromium is not installed (apt-get install chromium)")]
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install -e .[test])")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def test_docs_list_the_operations_with_no_network(tmp_path):
    project, url, engine = api_program(tmp_path, TEST_CONFIG)
    engine.dispose()
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "loyalty_mail", "--project", str(project), "--database", url,
                               "api", "--port", str(port)], env={**os.environ, "PYTHONPATH": str(REPO)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    refused: list[str] = []

    def only_loopback(route: sync_api.Route) -> None:
        if urlsplit(route.request.url).hostname in LOOPBACK:
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort("internetdisconnected")

    try:
        wait_until_answering(port, server)
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                context = browser.new_context()
                context.route("**/*", only_loopback)
                page = context.new_page()
                page.goto(f"http://127.0.0.1:{port}/docs")
                page.locator(".opblock").first.wait_for(timeout=30_000)
                operations = {(block.locator(".opblock-summary-method").inner_text().strip(),
                               block.locator(".opblock-summary-path").inner_text().strip().replace("\u200b", ""))
                              for block in page.locator(".opblock").all()}
            finally:
                browser.close()
    finally:
        stop(server)
    assert {("PUT", "/v1/members/{member_id}"), ("POST", "/v1/members/batch"), ("POST", "/v1/events"),
            ("GET", "/v1/members/{member_id}"), ("POST", "/v1/segment/track")} <= operations
    assert refused == []

"""The studio's routes, in process (httpx on the ASGI app) against a real program
directory in a git repository and a real database: the token, each page, live values after an
edit, the comparison with git HEAD, test sends, and that no program file is ever written."""

from __future__ import annotations

import asyncio
import hashlib
import re
import shutil
import threading
from datetime import datetime
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import httpx

from loyalty_mail.runtime import Runtime
from loyalty_mail.studio import Access, Workspace, create_app
from loyalty_mail.studio.renders import Renders
from loyalty_mail.studio.watch import ProgramWatcher

from .studio_program import AT, make_studio_program, points_between

HOST = "testserver"
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


class StudioClient:
    """Requests to the app in process, each on its own event loop, keeping cookies as a browser does."""

    def __init__(self, app: Any) -> None:
        self.app, self.cookies = app, httpx.Cookies()

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url=f"http://{HOST}", cookies=self.cookies) as c:
                response = await c.request(method, url, **kwargs)
                self.cookies = httpx.Cookies(c.cookies)
                return response

        return asyncio.run(send())

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)


def studio_client(directory: Path, database_url: str, *, hosts: tuple[str, ...] = (HOST,),
                  renders: Renders | None = None) -> tuple[StudioClient, Access]:
    runtime = Runtime.load(directory, database_url=database_url)
    access = Access()
    app = create_app(Workspace(runtime, at=datetime.fromisoformat(AT)), access, hosts=hosts, renders=renders)
    return StudioClient(app), access


@pytest.fixture
def program_dir(tmp_path: Path, database_url: str) -> Path:
    return make_studio_program(tmp_path / "program", database_url)


@pytest.fixture
def client(program_dir: Path, database_url: str):
    client, access = studio_client(program_dir, database_url)
    response = client.get(f"/?token={access.token}")
    assert response.status_code == 303
    return client


def text_of(response) -> str:
    return unescape(re.sub(r"<[^>]+>", " ", response.text))


def program_files(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted([directory / "config.yaml", *(directory / "segments").rglob("*"),
                             *(directory / "templates").rglob("*")]) if p.is_file()}


# -- the token ---------------------------------------------------------------------------------

def test_without_the_token_every_request_is_refused(program_dir, database_url):
    client, access = studio_client(program_dir, database_url)
    for path in ("/", "/emails", "/segments/vip", "/events", "/reports/page", "/static/studio.js"):
        assert client.get(path).status_code == 403, path
    assert client.get("/?token=not-the-token").status_code == 403
    assert client.post("/send-test", data={"to": "x@example.com"}).status_code == 403


def test_the_token_in_the_url_becomes_a_strict_httponly_cookie(program_dir, database_url):
    client, access = studio_client(program_dir, database_url)
    response = client.get(f"/segments?token={access.token}&x=1")
    assert response.status_code == 303
    assert response.headers["location"] == "/segments?x=1"  # the token leaves the address bar
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{access.cookie_name}={access.token};")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert client.get("/segments").status_code == 200  # the client keeps the cookie
    client.cookies.clear()
    client.cookies.set(access.cookie_name, "guess")
    assert client.get("/segments").status_code == 403


def test_a_request_for_another_host_name_is_refused(client):
    """DNS rebinding: a page of another site that resolves its name to 127.0.0.1."""
    assert client.get("/emails", headers={"host": "evil.example:8030"}).status_code == 403


def test_the_token_redirect_stays_on_the_studio_with_the_path_percent_encoded(program_dir, database_url):
    for path, location in (("/%E2%82%AC", "/%E2%82%AC"), ("/a%0d%0aX", "/a%0D%0AX"), ("/a%20b", "/a%20b"),
                           ("//evil.example/", "/evil.example/"), ("///evil.example/x", "/evil.example/x"),
                           ("/%5Cevil.example/", "/%5Cevil.example/")):
        client, access = studio_client(program_dir, database_url)
        response = client.get(f"http://{HOST}{path}?token={access.token}")
        assert response.status_code == 303 and response.headers["location"] == location, path


def test_a_websocket_is_refused_even_with_the_cookie(client):
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    cookie = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
    scope = {"type": "websocket", "asgi": {"version": "3.0"}, "http_version": "1.1", "scheme": "ws",
             "path": "/events", "raw_path": b"/events", "root_path": "", "query_string": b"",
             "headers": [(b"host", HOST.encode()), (b"cookie", cookie.encode())], "subprotocols": [],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    asyncio.run(client.app(scope, receive, send))
    assert sent == [{"type": "websocket.close", "code": 1008}]


# -- bad input: a 400 or a 404 page, never a 500 -------------------------------------------------

@pytest.mark.parametrize("url, code, message", [
    ("/reports/page?until=9999-12-31", 400, "until: 9999-12-31 is out of range (a day from 1900-01-01 to 2999-12-31)"),
    ("/reports/page?until=0001-01-05", 400, "until: 0001-01-05 is out of range"),
    ("/reports/page?since=1000-01-01", 400, "since: 1000-01-01 is out of range"),
    ("/reports?until=9999-12-31", 400, "is out of range"),
    ("/emails/welcome/vi?q=" + "a" * 60_000, 400, "the search has 60,000 characters: at most 200"),
    ("/segments/" + "s" * 300, 404, "no segment named"),
    ("/segments/a%00b", 404, "no segment named"),
])
def test_bad_input_is_a_clear_error_page(client, url, code, message):
    page = client.get(url)
    assert page.status_code == code and message in unescape(page.text), (url, page.status_code)


def test_a_bad_events_version_starts_from_the_current_one(client):
    """Straight on the ASGI app: the stream never ends, so read its first chunk and disconnect."""
    async def first_chunk(version: str) -> tuple[int, bytes]:
        messages: list[dict[str, Any]] = []
        answered = asyncio.Event()
        requested = False

        async def receive() -> dict[str, Any]:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await answered.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            messages.append(message)
            if message["type"] == "http.response.body":
                answered.set()

        cookie = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
                 "path": "/events", "raw_path": b"/events", "root_path": "", "query_string": urlencode(
                     {"version": version}).encode(), "headers": [(b"host", HOST.encode()), (b"cookie", cookie.encode())],
                 "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
        task = asyncio.create_task(client.app(scope, receive, send))
        await asyncio.wait_for(answered.wait(), 10)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        start = next(m for m in messages if m["type"] == "http.response.start")
        return start["status"], next(m["body"] for m in messages if m["type"] == "http.response.body")

    for version in ("\u00b2", "9" * 5000, "-1"):
        assert asyncio.run(first_chunk(version)) == (200, b"retry: 500\n\n"), version


def test_on_a_loopback_address_only_loopback_names_and_elsewhere_any_name_with_the_token(program_dir, database_url):
    from loyalty_mail.studio.security import allowed_hosts

    local, access = studio_client(program_dir, database_url, hosts=allowed_hosts("127.0.0.1"))
    for host in ("127.0.0.1:8030", "localhost:8030", "LocalHost:8030", "[::1]:8030"):
        assert local.get(f"/?token={access.token}", headers={"host": host}).status_code == 303, host
    assert local.get(f"/?token={access.token}", headers={"host": "evil.example:8030"}).status_code == 403
    shared, access = studio_client(program_dir, database_url, hosts=allowed_hosts("0.0.0.0"))
    hosts = ("studio-box.lan:8030", "192.168.1.5:8030", "[fe80::1]:8030", "localhost:8030")
    for host in hosts:
        assert shared.get("/emails/welcome/en", headers={"host": host}).status_code == 403, host  # no token
    for host in hosts:
        assert shared.get(f"/?token={access.token}", headers={"host": host}).status_code == 303, host


# -- emails ------------------------------------------------------------------------------------

def test_every_email_and_locale_is_listed_and_previewed_for_the_sample_member(client, program_dir):
    response = client.get("/emails")
    assert response.status_code == 303
    emails = sorted(p.name for p in (program_dir / "templates").iterdir() if not p.name.startswith(("_", ".")) and p.is_dir())
    page = client.get(response.headers["location"])
    assert page.status_code == 200
    for email in emails:
        for locale in ("en", "vi"):
            assert f'href="/emails/{email}/{locale}"' in page.text
    page = client.get("/emails/welcome/en")
    assert "SAMPLE000" in page.text and "(the sample member)" in page.text
    assert 'sandbox="" srcdoc="' in page.text and page.text.count("<iframe") == 2
    assert "Desktop, 600 px" in page.text and "Mobile, 375 px" in page.text
    assert "Compiled once" in page.text
    subject = re.search(r'id="subject">([^<]*)<', page.text).group(1)
    assert "Lan" in unescape(subject)  # the sample member's first name
    assert re.search(r'id="text-part">[^<]*\S', page.text)
    assert "content-security-policy" in page.headers


def test_a_member_found_by_email_is_the_one_the_preview_is_for(client):
    found = client.get("/emails/welcome/en?q=MEMBER7@studio")
    assert 'href="/emails/welcome/en?member=ST0007"' in found.text
    page = client.get("/emails/welcome/en?member=ST0007")
    assert re.search(r'id="rendered-for">ST0007 &lt;member7@studio.example&gt;<', page.text)
    assert "Name7" in unescape(re.search(r'id="subject">([^<]*)<', page.text).group(1))
    missing = client.get("/emails/welcome/en?member=NOPE")
    assert missing.status_code == 200 and "No such member: no member with id &#39;NOPE&#39;" in missing.text
    assert "(the sample member)" in missing.text and "srcdoc" in missing.text
    assert "Fix the file" not in missing.text and "does not render" not in missing.text


def test_a_broken_template_shows_its_file_and_line_and_the_page_recovers(client, program_dir):
    path = program_dir / "templates" / "welcome" / "en.html"
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines(keepends=True)
    broken_line = next(i for i, line in enumerate(lines) if "{{" in line)
    lines[broken_line] = lines[broken_line].replace("{{", "{{ (", 1)
    path.write_text("".join(lines), encoding="utf-8")
    page = client.get("/emails/welcome/en")
    assert page.status_code == 200
    assert f"templates/welcome/en.html:{broken_line + 1}" in page.text
    assert "This email does not render" in page.text and "srcdoc" not in page.text
    assert "Traceback" not in page.text
    path.write_text(source.replace("{{ member.first_name", "{{ member.frist_name", 1), encoding="utf-8")
    page = client.get("/emails/welcome/en")
    line = next(i for i, text in enumerate(source.splitlines(), 1) if "{{ member.first_name" in text)
    assert "This email does not render" in page.text and f"templates/welcome/en.html:{line}" in page.text
    shown = page.text[page.text.index('id="preview-error"'):]
    assert re.search(rf"templates/welcome/en.html:{line}:\d+</span>: undefined variable: member has no field "
                     r"&#39;frist_name&#39; \(did you mean first_name\?\)", shown)
    assert text_of(page).count("frist_name") == 1  # the static check's finding, once: not again from rendering
    path.write_text(source.replace("Welcome", "Hello again"), encoding="utf-8")
    page = client.get("/emails/welcome/en")
    assert "This email does not render" not in page.text and "Hello again" in unescape(page.text)


def test_a_slow_render_holds_neither_its_page_nor_the_others(program_dir, database_url):
    config = program_dir / "config.yaml"
    config.write_text(config.read_text(encoding="utf-8") + "\nrendering:\n  timeout: 2 seconds\n", encoding="utf-8")
    path = program_dir / "templates" / "welcome" / "en.html"
    path.write_text(path.read_text(encoding="utf-8").replace(
        "</p>", "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}</p>", 1), encoding="utf-8")
    client, access = studio_client(program_dir, database_url, renders=Renders(seconds=0.2))
    assert client.get(f"/?token={access.token}").status_code == 303
    page = client.get("/emails/welcome/en")
    assert page.status_code == 200 and "the render is still running after 0.2 s" in page.text
    assert client.get("/segments").status_code == 200
    assert client.get("/emails/welcome/vi").status_code == 200
    assert any(t.name == "studio-render" for t in threading.enumerate())  # answered while it renders


def test_a_page_waiting_for_a_render_answers_as_soon_as_the_studio_stops():
    from loyalty_mail.studio.renders import RenderPending

    renders, release = Renders(seconds=60), threading.Event()
    threading.Timer(0.2, renders.closing.set).start()
    with pytest.raises(RenderPending, match="the studio is stopping"):
        renders.run("slow", lambda: release.wait(30))
    release.set()
    assert Renders(seconds=60).run("quick", lambda: 42) == 42


def test_a_template_removed_while_the_page_loads_is_said_so(program_dir, database_url):
    """The files change between loading the templates and checking the email (the live reload
    brings the page up to date)."""
    from loyalty_mail.studio import emails

    workspace = Workspace(Runtime.load(program_dir, database_url=database_url), at=datetime.fromisoformat(AT))
    state = workspace.state()
    assert emails.preview(state, workspace.engine(), "welcome", "en", None, workspace.now()).rendered is not None
    shutil.rmtree(program_dir / "templates" / "_partials")
    shown = emails.preview(state, workspace.engine(), "welcome", "en", None, workspace.now())
    # the email's compiled code is kept: `check` names the file that is gone where it is imported
    assert shown.problems == []
    assert [str(p) for p in shown.errors] == [
        "templates/welcome/en.html:6:9: templates/_partials/blocks.html does not exist"]


def test_check_findings_for_the_email_are_shown(client, program_dir):
    path = program_dir / "templates" / "welcome" / "en.html"
    path.write_text(path.read_text(encoding="utf-8").replace("</p>", '<img src="https://cdn.test.example/a.png"></p>', 1),
                    encoding="utf-8")
    page = client.get("/emails/welcome/en")
    warnings = page.text[page.text.index('id="check-warnings"'):]
    assert "templates/welcome/en.html:" in warnings and "alt" in warnings



def test_the_static_check_finds_a_mistake_in_a_branch_no_sample_takes(client, program_dir):
    path = program_dir / "templates" / "welcome" / "en.html"
    source = path.read_text(encoding="utf-8")
    path.write_text(source.replace("{% endblock %}", "{% if member.points > 10**12 %}{{ member.nosuchfield }}"
                                   "{% endif %}{% endblock %}", 1), encoding="utf-8")
    line = source[:source.index("{% endblock %}")].count("\n") + 1
    page = client.get("/emails/welcome/en")
    assert "srcdoc" in page.text  # it renders: no sample member takes the branch
    errors = page.text[page.text.index('id="check-errors"'):]
    assert re.search(rf"templates/welcome/en.html:{line}:\d+</span>: undefined variable: member has no field "
                     "&#39;nosuchfield&#39;", errors)


def test_an_unknown_email_is_a_404_page(client):
    page = client.get("/emails/nope/en")
    assert page.status_code == 404 and "no email &#39;nope&#39;" in page.text


def test_a_broken_config_shows_its_problem_and_the_studio_recovers(client, program_dir):
    config = program_dir / "config.yaml"
    source = config.read_text(encoding="utf-8")
    config.write_text(source.replace("  currency: VND", "  currency: [VND", 1), encoding="utf-8")
    for path in ("/emails/welcome/en", "/segments/vip", "/flows"):
        page = client.get(path)
        assert page.status_code in (200, 400), path
        assert "config.yaml:" in page.text and "Traceback" not in page.text, path
    config.write_text(source, encoding="utf-8")
    page = client.get("/emails/welcome/en")
    assert "srcdoc" in page.text and "config.yaml does not load" not in page.text


# -- segments ----------------------------------------------------------------------------------

def count_shown(page) -> int:
    return int(re.search(r'id="segment-count">([\d,]+)<', page.text).group(1).replace(",", ""))


@needs_git
def test_segment_count_rules_sql_and_sample(client):
    page = client.get("/segments/vip")
    gold = points_between(8000)
    assert count_shown(page) == len(gold)
    assert "tier at_least gold" in page.text
    assert re.search(r'id="sql">SELECT', page.text)
    sample = re.findall(r"<td class=\"id\">(ST\d{4})</td>", page.text[page.text.index("sample-heading"):])
    assert sample == sorted(gold)[:len(sample)] and len(sample) == min(10, len(gold))
    assert "the file is as committed at HEAD" in page.text
    listing = client.get("/segments")
    assert f'data-count="{len(gold)}"' in listing.text


@needs_git
def test_an_edit_shows_the_new_count_and_who_enters_and_leaves_against_head(client, program_dir):
    path = program_dir / "segments" / "vip.yaml"
    path.write_text(path.read_text().replace("at_least: gold", "in: [silver, gold]"), encoding="utf-8")
    page = client.get("/segments/vip")
    entering = points_between(2000, 8000)
    leaving = points_between(25000)  # platinum members are no longer in
    assert count_shown(page) == len(points_between(2000, 25000))
    summary = text_of(page)
    assert (f"This edit adds {len(entering):,} member{'s' if len(entering) != 1 else ''} "
            f"and removes {len(leaving):,}") in re.sub(r"\s+", " ", summary)
    change = page.text[page.text.index('id="head-change"'):page.text.index('id="rules-heading"')]
    enter_part, _, leave_part = change.partition("Leaving, for example")
    assert re.findall(r"<td class=\"id\">(ST\d{4})</td>", enter_part) == sorted(entering)[:5]
    assert re.findall(r"<td class=\"id\">(ST\d{4})</td>", leave_part) == sorted(leaving)[:5]


@needs_git
def test_a_new_segment_file_and_a_broken_one(client, program_dir):
    (program_dir / "segments" / "big_spenders.yaml").write_text(
        "name: big_spenders\ndescription: new\npoints: {gte: 19000}\n", encoding="utf-8")
    page = client.get("/segments/big_spenders")
    assert count_shown(page) == len(points_between(19000))
    assert "segments/big_spenders.yaml is a new file (not in HEAD)" in page.text
    (program_dir / "segments" / "broken.yaml").write_text("name: broken\npoints: {greater: 3}\n", encoding="utf-8")
    page = client.get("/segments/broken")
    assert page.status_code == 200 and "segments/broken.yaml:2" in page.text and "greater" in page.text
    assert "Traceback" not in page.text


@needs_git
def test_a_segment_removed_while_the_page_loads_is_said_so(program_dir, database_url):
    from loyalty_mail.studio import segments

    workspace = Workspace(Runtime.load(program_dir, database_url=database_url), at=datetime.fromisoformat(AT))
    state = workspace.state()
    state.segments()
    (program_dir / "segments" / "vip.yaml").unlink()
    view = segments.segment_view(workspace, state, "vip")
    assert view.comparison is not None and view.comparison.status == "error"
    assert view.comparison.message.startswith("segments/vip.yaml changed while it was read")


def test_outside_a_git_repository_the_comparison_says_so(tmp_path, database_url):
    directory = make_studio_program(tmp_path / "program", database_url, git=False)
    client, access = studio_client(directory, database_url)
    client.get(f"/?token={access.token}")
    page = client.get("/segments/vip")
    assert count_shown(page) == len(points_between(8000))
    assert "not in a git repository" in page.text


# -- flows, outbox, reports --------------------------------------------------------------------

def test_flows_dry_run_and_explain(client):
    page = client.get("/flows")
    assert page.status_code == 200
    table = page.text[page.text.index('id="plan"'):]
    assert "<td class=\"id\">welcome</td>" in table or "<td class=\"id\">winback</td>" in table or "No flow has anything to do" in table
    page = client.get("/flows?member=ST0003")
    assert "ST0003 &lt;member3@studio.example&gt;" in page.text
    explained = page.text[page.text.index('id="explained"'):]
    assert re.search(r"; times on the member's clock \([A-Za-z_]+/[A-Za-z_]+\)</p>", explained), explained[:300]
    assert not re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d| UTC\)", explained)
    for flow in ("welcome", "milestones", "tier_upgrade", "winback"):
        assert f"<h3>{flow} " in page.text
    for typed in ("ST0003", "MEMBER3@studio.example", "member3@"):  # the email page's member search
        page = client.get(f"/flows?member={typed}")
        assert re.search(r'id="explained">ST0003 &lt;member3@studio.example&gt;', page.text), typed
    several = client.get("/flows?member=ST001")
    assert 'href="/flows?member=ST0012"' in several.text and 'id="explained"' not in several.text
    missing = client.get("/flows?member=NOPE")
    assert missing.status_code == 200 and "No such member" in missing.text and "import" not in text_of(missing)


def test_a_flow_naming_a_missing_template_shows_the_error_check_gives(client, program_dir):
    config = program_dir / "config.yaml"
    config.write_text(config.read_text(encoding="utf-8").replace("template: milestone\n", "template: milestne\n"),
                      encoding="utf-8")
    page = client.get("/flows")
    problems = page.text[page.text.index('id="flow-problems"'):page.text.index('id="plan-heading"')]
    assert "flow &#39;milestones&#39;: no email template &#39;milestne&#39; in templates/" in problems
    assert 'id="plan"' in page.text


def test_a_broken_segment_file_shows_in_place_and_the_other_flows_are_planned(client, program_dir):
    path = program_dir / "segments" / "lapsed_90_days.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("{gte: 90}", "{greater: 90}"), encoding="utf-8")
    page = client.get("/flows?member=ST0003")
    assert page.status_code == 200
    problems = text_of(page)[:text_of(page).index("Planned")]
    assert "segments/lapsed_90_days.yaml:" in problems and "greater" in problems
    assert "flow 'winback': unknown segment 'lapsed_90_days'" in problems
    assert re.search(r'id="unplanned">[^<]*winback', page.text)
    assert 'aria-current="page">Flows<' in page.text
    for flow in ("welcome", "milestones", "tier_upgrade"):  # the other flows are still explained
        assert f"<h3>{flow} " in page.text
    assert "<h3>winback " not in page.text


def test_flows_plan_as_the_dry_run_does_after_the_expiry_a_run_records(program_dir, database_url):
    """The Flows page shows what `run --dry-run` would do: the points that have expired by then
    are taken off first (rolled back), so a member whose only points expired before the month is
    skipped by the statement, as the dry run and the run skip them."""
    import json

    from click.testing import CliRunner

    from loyalty_mail.cli import cli

    at = "2026-12-01T09:30:00+07:00"
    rows = program_dir.parent / "late.jsonl"
    rows.write_text(json.dumps({"member_id": "ST0000", "type": "points_earned", "points": 800,
                                "occurred_at": "2025-10-15T10:00:00+07:00", "event_id": "late-1"}) + "\n")
    runner = CliRunner(env={"LOYALTY_MAIL_SECRET": "studio-test-secret-0123456789"})
    base = ["--project", str(program_dir), "--database", database_url]
    imported = runner.invoke(cli, [*base, "events", "import", str(rows)])
    assert imported.exit_code == 0, imported.output
    dry = runner.invoke(cli, [*base, "run", "--dry-run", "--flow", "statement", "--format", "json", "--at", at])
    assert dry.exit_code == 0, dry.output
    skipped = sorted(d["member_id"] for d in json.loads(dry.stdout)
                     if d["reason"] == "no activity in the period and no balance")
    assert "ST0000" in skipped
    runtime = Runtime.load(program_dir, database_url=database_url)
    access = Access()
    app = create_app(Workspace(runtime, at=datetime.fromisoformat(at)), access, hosts=(HOST,))
    client = StudioClient(app)
    assert client.get(f"/?token={access.token}").status_code == 303
    page = client.get("/flows")
    shown = re.search(r'<td class="id">statement</td><td>no activity in the period and no balance</td>'
                      r'<td class="n">(\d+)</td>', page.text)
    assert shown is not None and int(shown.group(1)) == len(skipped), page.text[page.text.index('id="plan"'):][:2000]


def test_outbox_and_report(client):
    page = client.get("/outbox")
    assert page.status_code == 200 and "The outbox is empty." in page.text
    page = client.get("/reports?since=2026-11-01&until=2026-11-20")
    assert 'src="/reports/page?since=2026-11-01&amp;until=2026-11-20"' in page.text
    report = client.get("/reports/page?since=2026-11-01&until=2026-11-20")
    assert report.status_code == 200 and report.text.lstrip().lower().startswith("<!doctype html")
    assert "default-src 'none'" in report.headers["content-security-policy"]
    bad = client.get("/reports/page?since=yesterday")
    assert bad.status_code == 400 and "is not a date" in bad.text
    bad = client.get("/reports?since=2026-11-20&until=2026-11-01")
    assert bad.status_code == 400 and "after the last day" in bad.text
    assert 'aria-current="page">Reports<' in bad.text  # the tab and the form stay, to correct the dates
    assert 'id="since" name="since" type="date" value="2026-11-20"' in bad.text
    assert "<iframe" not in bad.text


# -- send test ---------------------------------------------------------------------------------

def test_send_test_needs_the_csrf_token_and_sends_one_marked_message(client, program_dir):
    form = {"email": "welcome", "locale": "vi", "to": "me@studio.example", "member": ""}
    assert client.post("/send-test", data=form).status_code == 403
    assert client.post("/send-test", data={**form, "csrf": "0" * 64}).status_code == 403
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', client.get("/emails/welcome/vi").text).group(1)
    response = client.post("/send-test", data={**form, "csrf": csrf})
    assert response.status_code == 303  # post, redirect, get: a reload never sends again
    location = response.headers["location"]
    assert location.startswith("/emails/welcome/vi?sent=")
    page = client.get(location)
    assert page.status_code == 200 and "Sent " in page.text and "me@studio.example" in page.text
    assert 'id="to" name="to" type="email" required value="me@studio.example"' in page.text
    assert "Sent " in client.get(location).text  # a live refresh fetches the same address
    [message] = list((program_dir / "outbox").glob("*.eml"))
    raw = message.read_bytes()
    assert b"X-Loyalty-Mail-Test: yes" in raw and b"me@studio.example" in raw
    bad = client.post("/send-test", data={**form, "csrf": csrf, "to": "not an address", "member": "ST0003"})
    assert bad.status_code == 303 and "member=ST0003" in bad.headers["location"]
    page = client.get(bad.headers["location"])
    assert "is not an email address" in page.text and 'class="flash bad"' in page.text
    assert len(list((program_dir / "outbox").glob("*.eml"))) == 1
    assert "Sent " not in client.get("/emails/welcome/vi?sent=not-a-key").text


@pytest.mark.parametrize("field, value, message", [
    ("to", "@", "'@' is not an email address"),
    ("to", "x@y.z,evil@x.com", "'x@y.z,evil@x.com' is not an email address"),
    ("to", "x@y.z, evil@x.com", "is not an email address"),
    ("to", "Me <me@studio.example>", "is not an email address"),
    ("to", "a@b.example\x00", "'a@b.example\\x00' is not an email address"),
    ("to", "a@b.example\r\nBcc: evil@x.com", "is not an email address"),
    ("locale", "xx", "locale 'xx' is not one of the program's locales (vi, en)"),
])
def test_send_test_refuses_anything_but_one_address_and_a_program_locale(client, program_dir, field, value, message):
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', client.get("/emails/welcome/vi").text).group(1)
    form = {"email": "welcome", "locale": "vi", "to": "me@studio.example", "member": "", "csrf": csrf, field: value}
    response = client.post("/send-test", data=form)
    assert response.status_code == 303        # back to the email's page, which says why
    shown = client.get(response.headers["location"])
    assert message in unescape(shown.text)
    assert not list((program_dir / "outbox").glob("*.eml"))


def test_no_page_writes_a_program_file(client, program_dir):
    before = program_files(program_dir)
    for path in ("/emails/welcome/en", "/emails/milestone/vi?member=ST0020", "/segments", "/segments/vip",
                 "/flows?member=ST0001", "/outbox", "/reports", "/reports/page"):
        assert client.get(path).status_code == 200, path
    assert program_files(program_dir) == before


# -- the watcher -------------------------------------------------------------------------------

def test_the_watcher_sees_an_edit_a_new_file_and_a_removal(tmp_path):
    directory = tmp_path / "p"
    (directory / "templates" / "welcome").mkdir(parents=True)
    (directory / "segments").mkdir()
    (directory / "config.yaml").write_text("a")
    watcher = ProgramWatcher(directory)
    assert watcher.check() == 0
    (directory / "templates" / "welcome" / "en.html").write_text("x")
    assert watcher.check() == 1
    (directory / "templates" / "welcome" / "en.html").write_text("xy")
    assert watcher.check() == 2
    (directory / "templates" / "welcome" / "en.html").unlink()
    assert watcher.check() == 3
    (directory / "outbox").mkdir()
    (directory / "outbox" / "a.eml").write_text("not a program file")
    assert watcher.check() == 3



# -- git HEAD ----------------------------------------------------------------------------------

@needs_git
def test_head_version_of_a_file_in_a_program_below_the_repository_root(tmp_path):
    import subprocess

    from loyalty_mail.studio.git import head_version

    program = tmp_path / "repo" / "marketing" / "program"
    (program / "segments").mkdir(parents=True)
    (program / "segments" / "vip.yaml").write_text("committed\n")
    git = ["git", "-C", str(tmp_path / "repo")]
    subprocess.run([*git, "init", "-q"], check=True, timeout=60)
    assert head_version(program, "segments/vip.yaml").status == "new_file"  # no commit yet
    subprocess.run([*git, "add", "."], check=True, timeout=60)
    subprocess.run([*git, "-c", "user.email=a@test.example", "-c", "user.name=a", "commit", "-qm", "c"], check=True,
                   timeout=60)
    (program / "segments" / "vip.yaml").write_text("edited\n")
    assert head_version(program, "segments/vip.yaml").text == "committed\n"
    other = head_version(program, "segments/other.yaml")
    assert (other.status, other.message) == ("new_file", "segments/other.yaml is a new file (not in HEAD)")
    (tmp_path / "elsewhere").mkdir()
    assert head_version(tmp_path / "elsewhere", "segments/vip.yaml").status == "not_git"


def test_the_database_in_use_is_named_and_an_empty_one_is_said_so(client, program_dir, database_url, tmp_path):
    from loyalty_mail.db import display_url, resolve_url

    page = client.get("/segments")
    shown = display_url(resolve_url(database_url, program_dir))
    assert f'id="database">database: {shown}<' in unescape(page.text)
    assert 'id="no-members"' not in page.text
    empty_url = f"sqlite:///{tmp_path / 'empty.db'}"
    empty, access = studio_client(program_dir, empty_url)
    empty.get(f"/?token={access.token}")
    page = empty.get("/emails/welcome/en")
    notice = text_of(page)
    assert "has no members yet" in notice and "loyalty-mail --database sqlite:///demo/demo.db studio" in notice
    assert str(tmp_path / "empty.db") in notice


def test_a_missing_translation_is_shown_on_the_emails_page(client, program_dir):
    (program_dir / "templates" / "welcome" / "vi.html").unlink()
    page = client.get("/emails/welcome/en")
    warnings = text_of(page)[text_of(page).index("Check and lint: warnings"):]
    assert re.search(r"templates/welcome/\S* : missing translation: no vi.html, so members with locale vi get en.html",
                     warnings)
    assert "missing translation" not in client.get("/emails/milestone/en").text

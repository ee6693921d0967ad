"""The preference centre and the topic-aware unsubscribe, in process (httpx ASGI) on SQLite and
PostgreSQL, and once in headless Chromium against `loyalty-mail serve` (a real process)."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from loyalty_mail import consent, db
from loyalty_mail.models import tracking_events_table

from .test_consent import with_topics
from .flow_program import member
from .test_tracking import InProcessService, Service, sent_email

TOKEN = re.compile(r'name="form" value="([^"]+)"')


@pytest.fixture
def topical(program):
    """The flow-test program with topics; one welcome email (topic promotions) sent to M1."""
    with_topics(program)
    send_id, html = sent_email(program)
    return program, send_id, html


def links(html: str) -> tuple[str, str]:
    unsubscribe = re.search(r'href="https://t\.test\.example(/u/[^"]+)"', html).group(1)
    preferences = re.search(r'href="https://t\.test\.example(/p/[^"]+)"', html)
    return unsubscribe, preferences.group(1) if preferences else unsubscribe.replace("/u/", "/p/")


def state(program) -> tuple[bool, dict[str, bool], object, list[tuple]]:
    engine = db.create_db_engine(program.url)
    with engine.connect() as conn:
        ref = consent.member_ref(conn, "M1")
        prefs = consent.preferences(conn, ref, {"promotions": True, "statements": True, "surveys": False})
        log = [(e["action"], e["topic"], e["source"]) for e in consent.history(conn, ref)]
    engine.dispose()
    return prefs.subscribed, prefs.topics, prefs.paused_until, log


def test_one_click_leaves_the_topic_only(topical):
    program, send_id, html = topical
    unsubscribe, _ = links(html)
    service = InProcessService(program)
    try:
        answer = service.http.post(unsubscribe, content="List-Unsubscribe=One-Click",
                                   headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert (answer.status_code, answer.text) == (200, "unsubscribed")
        page = service.http.get(unsubscribe)
    finally:
        service.stop()
    subscribed, topics, _, log = state(program)
    assert subscribed is True and topics == {"promotions": False, "statements": True, "surveys": False}
    assert log == [("unsubscribe", "promotions", "one-click")]
    # the page offers leaving the topic, and the preferences (with unsubscribe from all)
    assert "Ngừng nhận email Ưu đãi và tin tức" in page.text and "/p/" in page.text
    engine = db.create_db_engine(program.url)
    with engine.connect() as conn:
        kinds = conn.execute(sa.select(tracking_events_table.c.kind, tracking_events_table.c.detail)
                             .where(tracking_events_table.c.kind == "unsubscribe")).all()
    engine.dispose()
    assert [(k, d) for k, d in kinds] == [("unsubscribe", {"topic": "promotions"})]


def test_preference_centre_forms_are_signed_and_gets_change_nothing(topical):
    program, send_id, html = topical
    unsubscribe, preferences = links(html)
    service = InProcessService(program)
    try:
        page = service.http.get(preferences)
        assert page.status_code == 200 and page.headers["cache-control"].startswith("no-store")
        assert "Tùy chọn email" in page.text and "<script" not in page.text
        assert 'value="promotions" checked' in page.text and 'value="surveys">' in page.text
        for _ in range(3):
            service.http.get(preferences)
            service.http.get(unsubscribe)
        assert state(program)[3] == []                      # GETs changed nothing
        form = TOKEN.search(page.text).group(1)
        # no form token, a forged one, another send's, or another site's: refused, nothing changes
        for body, headers in (
                ({"topic": "statements", "pause": "keep", "do": "save"}, {}),
                ({"form": "1.AAAA", "do": "unsubscribe_all"}, {}),
                ({"form": "99999999999.AAAAAAAAAAAAAAAAAAAAAA", "do": "unsubscribe_all"}, {}),
                ({"form": form, "do": "unsubscribe_all"}, {"Origin": "https://evil.example"})):
            refused = service.http.post(preferences, data=body, headers=headers)
            assert refused.status_code == 403 and "hết hạn" in refused.text
        refused = service.http.post(unsubscribe, data={"form": "1.AAAA", "leave": "all"})
        assert refused.status_code == 403
        assert state(program)[3] == []
        # save: promotions off, surveys on, pause 30 days
        saved = service.http.post(preferences, data={"form": form, "topic": ["statements", "surveys"],
                                                     "pause": "30", "do": "save"})
        assert saved.status_code == 303 and saved.headers["location"] == f"{preferences}?saved=1"
        again = service.http.get(saved.headers["location"])
        assert "Đã lưu tùy chọn của bạn." in again.text and "Mọi email đang tạm dừng đến" in again.text
        subscribed, topics, paused_until, log = state(program)
        assert subscribed and topics == {"promotions": False, "statements": True, "surveys": True}
        assert paused_until is not None and paused_until - datetime.now(timezone.utc) > timedelta(days=29)
        assert log == [("unsubscribe", "promotions", "link"), ("subscribe", "surveys", "link"),
                       ("pause", None, "link")]
        # a bad pause value, or an action the page does not have, is refused and says so
        for bad in ({"pause": "365", "do": "save"}, {"pause": "keep", "do": "delete_everything"}):
            refused = service.http.post(preferences, data={"form": form, **bad})
            assert refused.status_code == 400 and "yêu cầu một lựa chọn mà trang không có" in refused.text
        assert len(state(program)[3]) == 3
        # unsubscribe from all
        done = service.http.post(preferences, data={"form": form, "do": "unsubscribe_all"})
        assert done.status_code == 200 and "Bạn đã hủy đăng ký" in done.text
        assert state(program)[0] is False and state(program)[3][-1] == ("unsubscribe", None, "link")
        assert "Bạn đã hủy đăng ký" in service.http.get(preferences).text
        # once unsubscribed from all, a form still open in another tab writes no topic choices
        late = service.http.post(preferences, data={"form": form, "topic": ["promotions", "surveys"],
                                                    "pause": "keep", "do": "save"})
        assert late.status_code == 200 and "Bạn đã hủy đăng ký" in late.text
        assert state(program)[1] == {"promotions": False, "statements": True, "surveys": True}
        assert len(state(program)[3]) == 4
        assert service.http.get("/p/preview").status_code == 404
    finally:
        service.stop()


def test_the_unsubscribe_page_button_leaves_the_topic(topical):
    program, send_id, html = topical
    unsubscribe, _ = links(html)
    service = InProcessService(program)
    try:
        page = service.http.get(unsubscribe)
        form = TOKEN.search(page.text).group(1)
        assert 'name="leave" value="all">Hủy đăng ký mọi email</button>' in page.text
        left = service.http.post(unsubscribe, data={"form": form, "leave": "topic"})
        assert left.status_code == 200 and "Bạn sẽ không nhận email Ưu đãi và tin tức" in left.text
        assert state(program)[:2] == (True, {"promotions": False, "statements": True, "surveys": False})
        every = service.http.post(unsubscribe, data={"form": form, "leave": "all"})
        assert every.status_code == 200 and "Bạn đã hủy đăng ký" in every.text
    finally:
        service.stop()
    assert state(program)[0] is False
    assert state(program)[3] == [("unsubscribe", "promotions", "link"), ("unsubscribe", None, "link")]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_preference_centre_in_chromium(topical, tmp_path):
    """A reader turns promotions off and saves, in a real browser, without JavaScript; the
    database has the change and the next plan leaves the member out of the promotions flows."""
    playwright = pytest.importorskip("playwright.sync_api")
    import shutil
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    program, send_id, html = topical
    _, preferences = links(html)
    service = Service(program)
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_context(java_script_enabled=False, locale="vi-VN").new_page()
            page.goto(service.base + preferences)
            assert page.title() == "Tùy chọn email"
            promotions = page.get_by_label("Ưu đãi và tin tức")
            assert promotions.is_checked()
            promotions.uncheck()
            page.get_by_role("button", name="Lưu tùy chọn").click()
            page.wait_for_url(re.compile(r"\?saved=1$"))
            assert page.get_by_role("status").inner_text() == "Đã lưu tùy chọn của bạn."
            assert not page.get_by_label("Ưu đãi và tin tức").is_checked()
            browser.close()
    finally:
        service.stop()
    subscribed, topics, _, log = state(program)
    assert subscribed and topics["promotions"] is False and log == [("unsubscribe", "promotions", "link")]
    # the next plan: M1 crosses 1,000 points, but is no longer planned for the promotions milestone
    program.load("events", [{"member_id": "M1", "type": "purchase", "occurred_at": "2026-11-23T11:00:00+07:00",
                             "amount": 2_000_000, "currency": "VND", "event_id": "p1"}], at="2026-11-23T11:00:00+07:00")
    plan = program.dry("2026-11-23T11:05:00+07:00", "milestones")
    assert [(d["decision"], d["reason"]) for d in plan] == [("skip", "topic: not subscribed to promotions")]


def test_view_in_browser_is_the_sent_email_without_an_open(topical):
    program, send_id, html = topical
    view = re.search(r'href="https://t\.test\.example(/v/[^"]+)"', html).group(1)
    service = InProcessService(program)
    try:
        shown = service.http.get(view)
        other_kind = service.http.get(view.replace("/v/", "/v/x"))
        wrong = service.http.get("/v/" + links(html)[0].split("/u/")[1])   # an unsubscribe token
    finally:
        service.stop()
    assert shown.status_code == 200 and shown.headers["x-robots-tag"] == "noindex"
    pixel = re.compile(r'<img src="https://t\.test\.example/o/[^"]+"[^>]*>')
    assert pixel.search(html) and not pixel.search(shown.text)
    assert shown.text == pixel.sub("", html)      # the same email, the same signed links
    assert other_kind.status_code == 404 and wrong.status_code == 404
    engine = db.create_db_engine(program.url)
    with engine.connect() as conn:
        assert conn.execute(sa.select(tracking_events_table.c.kind)).all() == []   # not an open
    engine.dispose()


def test_reports_count_unsubscribes_and_complaints_per_topic(topical):
    from loyalty_mail.tracking.store import record_events
    from loyalty_mail.tracking.webhooks import DeliveryEvent

    program, send_id, html = topical
    service = InProcessService(program)
    try:
        service.http.post(links(html)[0], content="List-Unsubscribe=One-Click")
    finally:
        service.stop()
    engine = db.create_db_engine(program.url)
    later = datetime.fromisoformat("2026-11-23T12:00:00+07:00")
    record_events(engine, [DeliveryEvent("spam_complaint", send_id, "m1@example.com", later, "ev-spam",
                                         suppress_as="spam_complaint")], later)
    engine.dispose()
    result = program.run("report", "--by", "topic", "--format", "json", at="2026-11-24T10:00:00+07:00")
    assert result.exit_code == 0, result.output
    rows = {row["topic"]: row for row in json.loads(result.stdout)["rows"]}
    assert list(rows) == ["promotions"]
    assert (rows["promotions"]["sent"], rows["promotions"]["unsubscribed"], rows["promotions"]["spam"]) == (1, 1, 1)
    assert sorted(state(program)[3]) == [("suppress", None, "webhook"), ("unsubscribe", "promotions", "one-click")]


def test_double_opt_in(program):
    """A member created with double opt-in on gets the confirmation (trigger `confirmation`, the
    shipped confirm_email template), with or without a join date and whatever topics they chose;
    members stored before it was on get none; no marketing until they press the button on the
    confirmation page, then marketing; all in the consent log."""
    with_topics(program)
    joined = "2026-11-23T09:00:00+07:00"
    program.load("members", [member("OLD", joined_at="2025-01-01T09:00:00+07:00")], at=joined)
    path = program.dir / "config.yaml"
    path.write_text(path.read_text().replace("program:\n", "program:\n  double_opt_in: true\n")
                    .replace("{name: welcome, topic: promotions,", "{name: welcome, topic: promotions, delay: 1 hour,")
                    + "  - {name: confirm, trigger: confirmation, template: confirm_email, class: service, "
                      "quiet_hours: false}\n")
    program.load("members", [member("M1", joined_at=joined),
                             member("M2", **{"topic.promotions": "no", "topic.statements": "no"})], at=joined)
    assert program.run("run", "--once", at="2026-11-23T09:05:00+07:00").exit_code == 0
    sent = {e.name: e.read_bytes() for e in (program.dir / "outbox").glob("*.eml")}
    assert len(sent) == 2
    assert sorted(program.sends()) == [("confirm", "confirm", "sent"), ("confirm", "confirm", "sent")]
    import email
    import email.policy
    messages = [email.message_from_bytes(raw, policy=email.policy.default) for raw in sent.values()]
    [eml] = [m for m in messages if "m1@example.com" in m["To"]]
    html = eml.get_body(("html",)).get_content()
    confirm = re.search(r'href="https://t\.test\.example(/k/[^"]+)"', html).group(1)
    assert program.run("run", "--once", at="2026-11-23T09:30:00+07:00").exit_code == 0
    assert len(list((program.dir / "outbox").glob("*.eml"))) == 2           # once each
    waiting = {d["flow"]: d["reason"] for d in program.dry("2026-11-23T10:30:00+07:00", "welcome")}
    assert waiting == {"welcome": "not confirmed: double opt-in, marketing waits for the member to confirm "
                                  "their address"}
    service = InProcessService(program)
    try:
        page = service.http.get(confirm)
        assert page.status_code == 200 and "Xác nhận" in page.text
        assert service.http.post(confirm, data={"form": "1.AAAA"}).status_code == 403
        assert state(program)[3] == [("await_confirm", None, "import")]   # GET and a forged post: nothing
        done = service.http.post(confirm, data={"form": TOKEN.search(page.text).group(1)})
        assert done.status_code == 200 and "đã được xác nhận" in done.text
    finally:
        service.stop()
    assert state(program)[3] == [("await_confirm", None, "import"), ("confirm", None, "link")]
    assert [d["decision"] for d in program.dry("2026-11-23T10:30:00+07:00", "welcome")] == ["send"]


@pytest.mark.parametrize(("program_line", "flow", "error"), [
    ("", "{name: confirm, trigger: confirmation, template: confirm_email, class: service}",
     "a confirmation flow needs program.double_opt_in: true"),
    ("  double_opt_in: true\n", "{name: confirm, trigger: confirmation, template: confirm_email}",
     "a confirmation flow is service email (class: service)"),
])
def test_a_confirmation_flow_needs_double_opt_in_and_is_service_email(program, program_line, flow, error):
    path = program.dir / "config.yaml"
    path.write_text(path.read_text().replace("program:\n", "program:\n" + program_line) + f"  - {flow}\n")
    result = program.run("check")
    assert result.exit_code == 1 and error in result.stderr


def test_a_form_with_too_many_fields_is_a_400_not_a_500(topical):
    from loyalty_mail.signing import TokenClaims, TokenSigner

    from .flow_program import SECRET

    program, send_id, html = topical
    unsubscribe, preferences = links(html)
    confirm = f"/k/{TokenSigner(SECRET).sign(TokenClaims('confirm', send_id))}"
    body = "&".join(f"topic=t{n}" for n in range(60))
    service = InProcessService(program)
    try:
        for path in (unsubscribe, preferences, confirm):
            answer = service.http.post(path, content=body,
                                       headers={"Content-Type": "application/x-www-form-urlencoded"})
            assert answer.status_code == 400, (path, answer.status_code)
            assert "Biểu mẫu này có quá nhiều trường" in answer.text
    finally:
        service.stop()
    assert state(program)[3] == []


def test_one_click_sent_as_multipart_form_data_leaves_the_topic(topical):
    """RFC 8058 lets the provider send `List-Unsubscribe=One-Click` as multipart/form-data."""
    program, send_id, html = topical
    unsubscribe, _ = links(html)
    service = InProcessService(program)
    try:
        for body, content_type in ((b"--B\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\n"
                                    b"One-Clack\r\n--B--\r\n", "multipart/form-data; boundary=B"),
                                   (b"List-Unsubscribe=One-Click", "multipart/form-data; boundary=B"),
                                   (b"--B\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n"
                                    b"List-Unsubscribe=One-Click\r\n--B--\r\n", "multipart/form-data; boundary=B")):
            refused = service.http.post(unsubscribe, content=body, headers={"Content-Type": content_type})
            assert refused.status_code in (400, 403), (body, refused.status_code)
        assert state(program)[3] == []
        answer = service.http.post(unsubscribe, files={"List-Unsubscribe": (None, "One-Click")})
        assert answer.request.headers["content-type"].startswith("multipart/form-data; boundary=")
        assert (answer.status_code, answer.text) == (200, "unsubscribed")
    finally:
        service.stop()
    subscribed, topics, _, log = state(program)
    assert subscribed is True and topics["promotions"] is False
    assert log == [("unsubscribe", "promotions", "one-click")]

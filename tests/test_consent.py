"""Topics, message classes and the consent log: what the planner does with them, how imports and
the API set them, the segment rule `subscribed_to`, and `members consent`. SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from loyalty_mail import consent, db, suppression
from loyalty_mail.config import Settings, load_settings
from loyalty_mail.errors import ConfigError
from loyalty_mail.models import consent_log_table, member_topics_table

from .flow_program import Program, member

TOPICS = """\
topics:
  - {name: promotions, label: {en: Offers and news, vi: Ưu đãi và tin tức}}
  - {name: statements, label: {en: Points statements, vi: Sao kê điểm}}
  - {name: surveys, default: false}
"""
STATEMENT = ("  - {name: statement, trigger: event, event: statement, template: points_receipt, "
             "class: service, topic: statements, quiet_hours: false}\n")
JOINED = "2025-01-01T10:00:00+07:00"
BOUGHT = "2026-11-20T10:00:00+07:00"


def with_topics(program: Program) -> Program:
    """The flow-test program with three topics: its four flows are about promotions, and a
    service flow sends statements."""
    path = program.dir / "config.yaml"
    text = path.read_text().replace("flows:\n", TOPICS + "flows:\n").replace(
        ", trigger: ", ", topic: promotions, trigger: ")
    path.write_text(text + STATEMENT)
    return program


def engine_of(program: Program) -> sa.Engine:
    return db.create_db_engine(program.url)


def log_of(engine: sa.Engine, member_id: str) -> list[tuple]:
    with engine.connect() as conn:
        return [(e["action"], e["topic"], e["source"]) for e in consent.history(conn, consent.member_ref(conn, member_id))]


def test_topics_config_shorthand_labels_and_mistakes(tmp_path):
    settings = Settings.model_validate({
        "topics": ["promotions", {"name": "statements", "label": {"en": "Statements", "vi": "Sao kê"}}],
        "flows": [{"name": "w", "trigger": "welcome", "template": "welcome", "topic": "promotions"},
                  {"name": "s", "trigger": "welcome", "template": "welcome", "topic": "statements",
                   "class": "service"}]})
    assert [t.name for t in settings.topics] == ["promotions", "statements"]
    assert settings.topics[1].label_for("vi_VN", "en") == "Sao kê"
    assert settings.topics[0].label_for("vi", "en") == "Promotions"
    assert settings.flows[1].message_class == "service" and settings.flows[1].frequency_cap is False
    assert settings.flows[0].message_class == "marketing" and settings.flows[0].frequency_cap is True
    assert settings.flow_topic("s") == "statements"

    (tmp_path / "config.yaml").write_text(
        "topics: [promotions]\nflows:\n"
        "  - {name: a, trigger: welcome, template: welcome, topic: promo}\n"
        "  - {name: b, trigger: welcome, template: welcome, class: service, topic: promotions,\n"
        "     frequency_cap: true}\n"
        "  - {name: c, trigger: welcome, template: welcome, class: transactional, topic: promotions}\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(tmp_path, environ={})
    text = str(raised.value)
    assert "config.yaml:4" in text and "a service flow is outside the frequency cap" in text
    assert "config.yaml:6" in text and "flows[2].class: Input should be 'marketing' or 'service'" in text
    (tmp_path / "config.yaml").write_text(
        "topics: [promotions]\nflows:\n  - {name: a, trigger: welcome, template: welcome, topic: promo}\n"
        "  - {name: b, trigger: welcome, template: welcome}\n")
    with pytest.raises(ConfigError, match=r"flow 'a': unknown topic 'promo' \(topics: promotions\)"):
        load_settings(tmp_path, environ={})


def test_the_plan_respects_topics_pauses_and_classes(program):
    """A member who left promotions gets no promotion but still a statement; a paused member gets
    neither; a service flow ignores quiet hours (here: by its own choice) and the cap."""
    with_topics(program)
    program.load("members", [member("M1", joined_at=JOINED, **{"topic.promotions": "no"}),
                             member("M2", joined_at=JOINED), member("M3", joined_at=JOINED)], at=JOINED)
    engine = engine_of(program)
    with engine.begin() as conn:
        until = consent.pause(conn, consent.member_ref(conn, "M3"), 30, "manual",
                              datetime.fromisoformat(BOUGHT))
    assert until == datetime.fromisoformat(BOUGHT) + timedelta(days=30)
    paused = f"paused: email paused until {until.astimezone(timezone(timedelta(hours=7))):%Y-%m-%d %H:%M} +07"
    program.load("events", [
        {"member_id": m, "type": t, "occurred_at": at, "amount": amount, "currency": "VND", "event_id": f"{m}-{t}"}
        for m in ("M1", "M2", "M3")
        for t, at, amount in (("purchase", BOUGHT, 2_000_000), ("statement", "2026-11-20T22:30:00+07:00", None))
    ], at="2026-11-20T22:30:00+07:00")
    plan = program.dry("2026-11-20T22:45:00+07:00", "milestones", "statement")
    got = {(d["member_id"], d["flow"]): (d["decision"], d["reason"] if d["decision"] == "skip" else d["deferred"])
           for d in plan}
    assert got == {
        ("M1", "milestones"): ("skip", "topic: not subscribed to promotions"),
        ("M1", "statement"): ("send", None),
        ("M2", "milestones"): ("send", "quiet hours until 08:00 local (Asia/Ho_Chi_Minh)"),
        ("M2", "statement"): ("send", None),   # a service email: outside the cap of one a day
        ("M3", "milestones"): ("skip", paused),
        ("M3", "statement"): ("skip", paused),
    }
    # a pause is not recorded: once it ends the member is decided again
    with engine.begin() as conn:
        consent.pause(conn, consent.member_ref(conn, "M3"), None, "link", datetime.fromisoformat(BOUGHT))
    later = {d["member_id"]: d["decision"] for d in program.dry("2026-11-20T22:50:00+07:00", "statement")}
    assert later == {"M1": "send", "M2": "send", "M3": "send"}
    assert log_of(engine, "M1") == [("unsubscribe", "promotions", "import")]
    assert log_of(engine, "M3") == [("pause", None, "manual"), ("resume", None, "link")]
    engine.dispose()


def test_left_topics_stay_left_and_the_log_is_complete(program, tmp_path):
    """An import leaves a topic and may put a member in one they never chose, but never undoes a
    member's own choice; unsubscribing and suppressions are logged with their source."""
    with_topics(program)
    program.load("members", [member("M1", joined_at=JOINED), member("M2", joined_at=JOINED)], at=JOINED)
    engine = engine_of(program)
    now = datetime.fromisoformat(BOUGHT)
    with engine.begin() as conn:
        m1 = consent.member_ref(conn, "M1")
        topics = {"promotions": True, "statements": True, "surveys": False}
        assert consent.set_topics(conn, {m1: {"promotions": False}}, topics, "link", now) == 1
        assert consent.set_topics(conn, {m1: {"promotions": False}}, topics, "link", now) == 0  # no change
    program.load("members", [{"member_id": "M1", "email": "m1@example.com", "topics": {"promotions": True,
                                                                                    "surveys": True}},
                             {"member_id": "M2", "email": "m2@example.com", "topic.surveys": "yes"}],
                 at="2026-11-21T10:00:00+07:00")
    with engine.begin() as conn:
        suppression.add(conn, "m2@example.com", "hard_bounce", now + timedelta(days=2), source="bounce")
        suppression.unsubscribe(conn, ["M1@example.com"], now + timedelta(days=3), source="api")
        chosen = {(r.member_ref, r.topic): r.subscribed for r in conn.execute(sa.select(member_topics_table))}
    assert chosen[(m1, "promotions")] is False and chosen[(m1, "surveys")] is True
    assert log_of(engine, "M1") == [("unsubscribe", "promotions", "link"), ("subscribe", "surveys", "import"),
                                    ("unsubscribe", None, "api")]
    assert log_of(engine, "M2") == [("subscribe", "surveys", "import"), ("suppress", None, "bounce")]

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"member_id": "M9", "email": "m9@example.com", "topic.offers": "no"}) + "\n"
                   + json.dumps({"member_id": "M8", "email": "m8@example.com", "topics": {"promotions": "maybe"}}) + "\n")
    result = program.run("members", "import", str(bad))
    assert result.exit_code != 0
    assert "bad.jsonl: row 1: topic.offers: unknown topic 'offers' (topics in config.yaml: promotions, statements, " \
        "surveys)" in result.output

    shown = program.run("members", "consent", "M1", "--format", "json")
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.stdout)
    assert data["subscribed"] is False
    assert data["topics"] == {"promotions": False, "statements": True, "surveys": True}
    assert [(e["action"], e["topic"], e["source"]) for e in data["log"]] == log_of(engine, "M1")
    table = program.run("members", "consent", "M1")
    assert "Consent log (3)" in table.output and "(all email)" in table.output
    assert program.run("members", "consent", "NOPE").exit_code != 0
    engine.dispose()


def test_the_database_refuses_to_change_the_log(program):
    program.load("members", [member("M1", joined_at=JOINED)], at=JOINED)
    engine = engine_of(program)
    with engine.begin() as conn:
        suppression.unsubscribe(conn, ["m1@example.com"], datetime.fromisoformat(BOUGHT), source="manual")
    with pytest.raises(sa.exc.DatabaseError, match="the consent log is append-only"):
        with engine.begin() as conn:
            conn.execute(consent_log_table.update().values(source="api"))
    assert log_of(engine, "M1") == [("unsubscribe", None, "manual")]
    engine.dispose()


def test_only_consent_writes_topics_and_the_log():
    """consent.py alone writes member_topics and consent_log, and never updates or deletes the
    log (read from the source)."""
    from .test_ownership import PACKAGE, modules
    import ast
    writers = set()
    for path in modules(PACKAGE):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("update", "delete", "insert")
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id in ("consent_log_table", "member_topics_table")):
                writers.add((path.name, node.func.value.id, node.func.attr))
            if (isinstance(node, ast.Call) and isinstance(node.func, (ast.Name, ast.Attribute))
                    and getattr(node.func, "id", getattr(node.func, "attr", None)) in ("upsert", "insert_ignoring_duplicates")
                    and node.args and isinstance(node.args[0], ast.Name)
                    and node.args[0].id in ("consent_log_table", "member_topics_table")):
                writers.add((path.name, node.args[0].id, "upsert"))
    assert writers == {("consent.py", "consent_log_table", "insert"), ("consent.py", "member_topics_table", "upsert")}


def test_subscribed_to_in_segments(program):
    with_topics(program)
    (program.dir / "segments" / "statement_readers.yaml").write_text("subscribed_to: statements\n")
    (program.dir / "segments" / "surveyed.yaml").write_text("subscribed_to: surveys\n")
    (program.dir / "segments" / "not_promoted.yaml").write_text("not: {subscribed_to: promotions}\n")
    program.load("members", [member("M1", joined_at=JOINED, **{"topic.statements": "false"}),
                             member("M2", joined_at=JOINED, **{"topic.surveys": "true"}),
                             member("M3", joined_at=JOINED, subscribed="false")], at=JOINED)

    def members_of(segment: str) -> list[str]:
        result = program.run("segments", "members", segment, "--format", "json")
        assert result.exit_code == 0, result.output
        return sorted(row["member_id"] for row in json.loads(result.stdout))

    assert members_of("statement_readers") == ["M2"]
    assert members_of("surveyed") == ["M2"]
    assert members_of("not_promoted") == ["M3"]
    # explain names the rule that keeps a member out
    (program.dir / "segments" / "lapsed.yaml").write_text("subscribed_to: statements\n")
    explained = program.run("explain", "M1", at="2026-11-23T10:00:00+07:00")
    assert "not in segment lapsed: not subscribed to statements, the rule needs subscribed to statements" \
        in explained.output
    (program.dir / "segments" / "wrong.yaml").write_text("subscribed_to: offers\n")
    result = program.run("segments", "list")
    assert result.exit_code != 0
    assert "wrong.yaml:1" in result.output and "unknown topic 'offers' (topics in config.yaml: promotions, " \
        "statements, surveys)" in result.output


def test_migration_logs_who_left_before_the_log(tmp_path):
    """Members unsubscribed before the consent log existed have that as their first entry."""
    engine = db.create_db_engine(f"sqlite:///{tmp_path / 'old.db'}")
    db.upgrade(engine, "0011")
    left = datetime(2026, 1, 2, tzinfo=timezone.utc)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO members (member_id, email, tier, subscribed, unsubscribed_at, created_at, "
                             "updated_at, attributes) VALUES ('A', 'a@example.com', 'member', false, "
                             "'2026-01-02 00:00:00.000000', '2026-01-01 00:00:00.000000', "
                             "'2026-01-02 00:00:00.000000', '{}'), ('B', 'b@example.com', 'member', true, NULL, "
                             "'2026-01-01 00:00:00.000000', '2026-01-01 00:00:00.000000', '{}')"))
    db.upgrade(engine)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(consent_log_table.c.member_ref, consent_log_table.c.action,
                                      consent_log_table.c.source, consent_log_table.c.occurred_at)).all()
    engine.dispose()
    assert rows == [(1, "unsubscribe", "manual", left)]


def test_the_api_sets_topics_and_logs_them_as_api(project, database_url):
    from .conftest import FIXED_NOW, TEST_CONFIG
    from .test_api import Client, _new_key
    from loyalty_mail.api.app import create_app
    from loyalty_mail.runtime import Runtime

    (project / "config.yaml").write_text(TEST_CONFIG + TOPICS, encoding="utf-8")
    runtime = Runtime.load(project, database_url=database_url, clock=lambda: FIXED_NOW)
    engine = runtime.engine()
    client = Client(create_app(runtime.settings, engine, runtime.now), _new_key(engine, "t", "admin"))
    r = client("PUT", "/v1/members/M1", json={"email": "a@example.com", "topics": {"promotions": False}})
    assert r.status_code == 200, r.text
    r = client("PUT", "/v1/members/M2", json={"email": "b@example.com", "topics": {"offers": False}})
    assert r.status_code == 422
    assert [(e["field"], e["message"]) for e in r.json()["error"]["errors"]] == [
        ("topics", "unknown topic 'offers' (topics in config.yaml: promotions, statements, surveys)")]
    client("POST", "/v1/members/M1/unsubscribe")
    with engine.connect() as conn:
        assert [(e["action"], e["topic"], e["source"], e["occurred_at"]) for e in consent.history(conn, 1)] == [
            ("unsubscribe", "promotions", "api", FIXED_NOW), ("unsubscribe", None, "api", FIXED_NOW)]
    runtime.close()


def test_a_campaign_send_keeps_its_topic_to_delivery_unsubscribe_and_report(program):
    """A campaign's topic is in its sends' occurrences, not in config.yaml: a member who leaves it
    after the plan gets nothing, one-click leaves only that topic, and reports group by it."""
    import email
    import email.policy
    import re

    from .test_campaigns import write_campaign
    from .test_tracking import InProcessService

    with_topics(program)
    program.load("members", [member("C1", joined_at=JOINED), member("C2", joined_at=JOINED)], at=JOINED)
    write_campaign(program, "sale", 'template: reengagement\nat: "2026-12-05 22:00"\ntopic: promotions\n')
    assert program.run("campaigns", "schedule", "sale", at="2026-12-01T00:00:00Z").exit_code == 0
    assert program.run("run", "--once", at="2026-12-05T15:00:00Z").exit_code == 0  # quiet hours: planned
    assert sorted(program.sends()) == [("sale", "campaign", "planned")] * 2
    engine = engine_of(program)
    with engine.begin() as conn:
        consent.set_topics(conn, {consent.member_ref(conn, "C1"): {"promotions": False}},
                           {"promotions": True, "statements": True, "surveys": False}, "link",
                           datetime.fromisoformat("2026-12-05T16:00:00+00:00"))
    assert program.run("run", "--once", at="2026-12-06T01:30:00Z").exit_code == 0
    assert sorted(program.sends()) == [("sale", "campaign", "sent"), ("sale", "campaign", "suppressed")]

    [eml] = list((program.dir / "outbox").glob("*.eml"))
    html = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default).get_body(("html",)).get_content()
    unsubscribe = re.search(r'href="https://t\.test\.example(/u/[^"]+)"', html).group(1)
    service = InProcessService(program)
    try:
        assert "Ngừng nhận email Ưu đãi và tin tức" in service.http.get(unsubscribe).text
        answer = service.http.post(unsubscribe, content="List-Unsubscribe=One-Click",
                                   headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert (answer.status_code, answer.text) == (200, "unsubscribed")
    finally:
        service.stop()
    with engine.connect() as conn:
        prefs = consent.preferences(conn, consent.member_ref(conn, "C2"),
                                    {"promotions": True, "statements": True, "surveys": False})
    assert prefs.subscribed is True and prefs.topics["promotions"] is False
    assert log_of(engine, "C2") == [("unsubscribe", "promotions", "one-click")]
    engine.dispose()

    report = program.run("report", "--since", "2026-12-01", "--until", "2026-12-07", "--by", "topic",
                         "--format", "json", at="2026-12-07T00:00:00Z")
    assert report.exit_code == 0, report.output
    assert [(r["topic"], r["sent"], r["unsubscribed"]) for r in json.loads(report.stdout)["rows"]] == \
        [("promotions", 1, 1)]


def test_two_topic_changes_at_once_never_collide(program):
    """Two requests leave the same topic at the same moment (a double click, one-click and the
    page): the second waits for the first and neither fails (on PostgreSQL the second's insert
    met the first's row)."""
    import threading

    program.load("members", [member("M1", joined_at=JOINED)], at=JOINED)
    with_topics(program)
    engine = engine_of(program)
    topics = {"promotions": True, "statements": True, "surveys": False}
    now = datetime.fromisoformat(BOUGHT)
    with engine.connect() as conn:
        ref = consent.member_ref(conn, "M1")
    errors: list[BaseException] = []

    def second() -> None:
        try:
            with db.writer(engine).begin() as conn:
                consent.set_topics(conn, {ref: {"promotions": False}}, topics, "one-click", now)
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    with db.writer(engine).begin() as first:
        assert consent.set_topics(first, {ref: {"promotions": False}}, topics, "link", now) == 1
        other = threading.Thread(target=second)
        other.start()
        other.join(1.0)   # it waits for this transaction (the row, or SQLite's write lock)
    other.join(30)
    assert not other.is_alive() and errors == []
    with engine.connect() as conn:
        assert consent.preferences(conn, ref, topics).topics["promotions"] is False
    engine.dispose()


def test_members_consent_says_what_a_subscribed_member_gets_now(program):
    """Subscribed, yet nothing goes: a suppressed address or a pause; marketing waits for a
    confirmation. `members consent` says so instead of 'subscribed'."""
    with_topics(program)
    program.load("members", [member(m, joined_at=JOINED) for m in ("OK1", "SUP", "PAU")], at=JOINED)
    config = program.dir / "config.yaml"
    config.write_text(config.read_text().replace("program:\n", "program:\n  double_opt_in: true\n", 1))
    program.load("members", [member("NEW", joined_at=JOINED)], at=JOINED)
    engine = engine_of(program)
    now = datetime.now(timezone.utc)
    with engine.begin() as conn:
        suppression.add(conn, "sup@example.com", "hard_bounce", now, source="bounce")
        consent.pause(conn, consent.member_ref(conn, "PAU"), 30, "link", now)
    engine.dispose()
    said = {}
    for member_id in ("OK1", "SUP", "PAU", "NEW"):
        shown = program.run("members", "consent", member_id, "--format", "json")
        assert shown.exit_code == 0, shown.output
        said[member_id] = json.loads(shown.stdout)
        assert said[member_id]["subscribed"] is True
    assert said["OK1"]["all_email"] == "subscribed"
    assert said["SUP"]["all_email"] == "nothing: the address is suppressed (hard_bounce)"
    assert said["SUP"]["suppressed"] == "hard_bounce"
    assert said["PAU"]["all_email"].startswith("nothing: paused until ")
    assert said["NEW"]["all_email"].startswith("service email only: marketing waits for the address's confirmation")
    table = program.run("members", "consent", "SUP")
    assert "nothing: the address is suppressed (hard_bounce)" in table.output


def test_topic_mistakes_in_a_row_are_row_errors_and_a_csv_header_names_its_file(program, tmp_path):
    """An unknown `topic.NAME` in a JSON Lines row, or a topic given twice with two values, is that
    row's error (--skip-invalid imports the rest); in a CSV header it is the file's, named."""
    with_topics(program)
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in (
        {"member_id": "G1", "email": "g1@example.com", "topic.surveys": True},
        {"member_id": "B1", "email": "b1@example.com", "topic.nosuch": True},
        {"member_id": "B2", "email": "b2@example.com", "topics": {"promotions": False}, "topic.promotions": True},
        {"member_id": "G2", "email": "g2@example.com", "topics": {"promotions": False}, "topic.promotions": "no"})))
    refused = program.run("members", "import", str(rows))
    assert refused.exit_code == 1
    assert "rows.jsonl: row 2: topic.nosuch: unknown topic 'nosuch'" in refused.output
    assert ("row 3: topic.promotions: topic 'promotions' is false in `topics` or `topic.promotions` and true "
            "here: give it once") in refused.output
    skipped = program.run("members", "import", str(rows), "--skip-invalid")
    assert skipped.exit_code == 0, skipped.output
    engine = engine_of(program)
    with engine.connect() as conn:
        got = {m: consent.preferences(conn, consent.member_ref(conn, m), {"promotions": True, "surveys": False}).topics
               for m in ("G1", "G2")}
        assert conn.execute(sa.text("SELECT count(*) FROM members WHERE member_id IN ('B1', 'B2')")).scalar() == 0
    engine.dispose()
    assert got == {"G1": {"promotions": True, "surveys": True}, "G2": {"promotions": False, "surveys": False}}
    header = tmp_path / "rows.csv"
    header.write_text("member_id,email,topic.nosuch\nC1,c1@example.com,yes\n")
    csv_refused = program.run("members", "import", str(header))
    assert csv_refused.exit_code == 1
    assert "rows.csv: row 1: column 'topic.nosuch': unknown topic 'nosuch'" in csv_refused.output


def test_a_flow_topic_mistake_is_reported_at_the_flow(tmp_path):
    (tmp_path / "config.yaml").write_text(
        "program:\n  name: Test\ntopics: [promotions]\nflows:\n"
        "  - {name: a, trigger: welcome, template: welcome, topic: promo}\n"
        "  - name: b\n    trigger: welcome\n    template: welcome\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(tmp_path, environ={})
    assert [str(p).split("config.yaml", 1)[1] for p in raised.value.problems] == [
        ":5:59: flow 'a': unknown topic 'promo' (topics: promotions)",
        ":6:5: flow 'b' names no topic; with `topics:` set every flow names one (topic: promotions; "
        "topics: promotions)"]

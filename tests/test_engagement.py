"""Segments see engagement: received / opened / clicked our emails, people only by default."""

from __future__ import annotations

from datetime import timedelta


from loyalty_mail.models import members_table, sends_table, tracking_events_table
from loyalty_mail.segments import context_for, list_members, load_catalog

from .conftest import FIXED_NOW, REPO


def _send(conn, ref: int, send_id: str, flow: str, sent_days_ago: int, key: str | None = None) -> None:
    at = FIXED_NOW - timedelta(days=sent_days_ago)
    conn.execute(sends_table.insert().values(
        send_id=send_id, member_ref=ref, flow=flow, occurrence_key=key or send_id, template="welcome", state="sent",
        reason="test", occurrence={}, occurred_at=at, scheduled_for=at, created_at=at, sent_at=at))


def _hit(conn, send_id: str, kind: str, days_ago: int, machine: bool = False, bot: bool = False) -> None:
    conn.execute(tracking_events_table.insert().values(
        send_id=send_id, kind=kind, source="tracker", occurred_at=FIXED_NOW - timedelta(days=days_ago),
        machine=machine, bot=bot, detail={}))


def test_engagement_conditions_on_both_databases(runtime, project):
    (project / "segments").mkdir()
    (project / "segments" / "disengaged.yaml").write_text((REPO / "segments/disengaged.yaml").read_text())
    (project / "segments" / "clickers.yaml").write_text(
        "name: clickers\ndescription: x\nemails: {action: clicked, flow: winback, count: {gte: 2}, within: 30 days}\n")
    (project / "segments" / "any_open.yaml").write_text(
        "name: any_open\ndescription: x\nemails: {action: opened, include_automated: true, within: 60 days}\n")
    (project / "segments" / "people_clicked.yaml").write_text(
        "name: people_clicked\ndescription: x\nemails: {action: clicked, within: 30 days}\n")
    engine = runtime.engine()
    lapsed = FIXED_NOW - timedelta(days=120)
    people = {"IGNORES": 1, "MACHINE_ONLY": 2, "OPENER": 3, "CLICKER": 4, "NEVER_MAILED": 5, "OLD_OPEN": 6,
              "BOT_CLICKED": 7}
    with engine.begin() as conn:
        for member_id, ref in people.items():
            conn.execute(members_table.insert().values(
                id=ref, member_id=member_id, email=f"{member_id.lower()}@example.com", tier="member",
                points=0, total_spend=0, purchase_count=1, last_purchase_at=lapsed, subscribed=True,
                attributes={}, created_at=FIXED_NOW, updated_at=FIXED_NOW))
        for member_id, ref in people.items():
            if member_id != "NEVER_MAILED":
                _send(conn, ref, f"s-{member_id}", "winback", 20)
        _hit(conn, "s-MACHINE_ONLY", "open", 19, machine=True)
        _hit(conn, "s-OPENER", "open", 19)
        _send(conn, people["CLICKER"], "s-CLICKER-2", "winback", 10)
        _hit(conn, "s-CLICKER", "click", 19)
        _hit(conn, "s-CLICKER-2", "click", 9)
        _hit(conn, "s-CLICKER-2", "click", 9, bot=True)
        _hit(conn, "s-OLD_OPEN", "open", 90)
        _hit(conn, "s-BOT_CLICKED", "click", 19, bot=True)  # a link scanner, not the member
    catalog, problems = load_catalog(runtime.settings)
    assert problems == []

    ctx = context_for(runtime.settings, catalog, FIXED_NOW, engine.dialect.name)

    def members(name: str) -> list[str]:
        with engine.connect() as conn:
            return [row["member_id"] for row in list_members(conn, catalog.get(name), ctx)]

    assert members("disengaged") == ["BOT_CLICKED", "CLICKER", "IGNORES", "MACHINE_ONLY", "OLD_OPEN"]
    assert members("clickers") == ["CLICKER"]
    assert members("any_open") == ["MACHINE_ONLY", "OPENER"]
    assert members("people_clicked") == ["CLICKER"]


def test_engagement_with_one_step_of_a_journey(runtime, project):
    (project / "segments").mkdir()
    (project / "segments" / "opened_step.yaml").write_text(
        "name: opened_step\ndescription: x\nemails: {action: opened, flow: series, step: welcome_perk}\n")
    engine = runtime.engine()
    keys = {"STEP": "welcome/welcome_perk", "LONGER": "welcome/welcome_perks", "WILDCARD": "welcome/welcomeXperk",
            "OTHER_FLOW": "welcome/welcome_perk"}
    with engine.begin() as conn:
        for ref, (member_id, key) in enumerate(keys.items(), 1):
            conn.execute(members_table.insert().values(
                id=ref, member_id=member_id, email=f"{member_id.lower()}@example.com", tier="member",
                points=0, total_spend=0, purchase_count=0, subscribed=True, attributes={},
                created_at=FIXED_NOW, updated_at=FIXED_NOW))
            _send(conn, ref, f"j-{ref}", "other" if member_id == "OTHER_FLOW" else "series", 5, key=key)
            _hit(conn, f"j-{ref}", "open", 4)
    catalog, problems = load_catalog(runtime.settings)
    assert problems == []
    ctx = context_for(runtime.settings, catalog, FIXED_NOW, engine.dialect.name)
    with engine.connect() as conn:
        assert [row["member_id"] for row in list_members(conn, catalog.get("opened_step"), ctx)] == ["STEP"]


def test_engagement_mistakes_are_reported_with_line(tmp_path, runtime, project):
    (project / "segments").mkdir()
    (project / "segments" / "bad.yaml").write_text(
        "name: bad\ndescription: x\nemails:\n  action: read\n  within: 2 fortnights\n")
    _, problems = load_catalog(runtime.settings)
    [problem] = [str(p) for p in problems]
    assert problem.endswith("segments/bad.yaml:4:11: emails: action: takes one of received, opened, clicked "
                            "(found 'read')")

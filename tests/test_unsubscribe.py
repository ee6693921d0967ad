"""Unsubscribing is one function: the CLI, an import, a webhook and the link in an email all
leave the same trace (member unsubscribed since then, address suppressed as `unsubscribe`)."""

from __future__ import annotations

import json
from datetime import timedelta

import sqlalchemy as sa
from freezegun import freeze_time

from loyalty_mail import suppression
from loyalty_mail.models import members_table, sends_table
from loyalty_mail.tracking.store import record_events, unsubscribe
from loyalty_mail.tracking.webhooks import DeliveryEvent

from .conftest import FIXED_NOW


def members_file(project, subscribed: dict[str, bool]):
    path = project / f"members-{len(list(project.glob('members-*.jsonl')))}.jsonl"
    path.write_text("".join(json.dumps({"member_id": m, "email": f"{m.lower()}@example.com",
                                        "joined_at": "2026-01-01T10:00:00+07:00", "subscribed": s}) + "\n"
                            for m, s in subscribed.items()))
    return path


def state(runtime) -> tuple[dict[str, tuple], dict[str, str]]:
    m = members_table
    with runtime.engine().connect() as conn:
        members = {r.member_id: (r.subscribed, r.unsubscribed_at)
                   for r in conn.execute(sa.select(m.c.member_id, m.c.subscribed, m.c.unsubscribed_at))}
        listed = {r["email"]: r["reason"] for r in suppression.listing(conn)}
    return members, listed


def test_every_way_in_unsubscribes_the_member_and_suppresses_the_address(run, project, runtime):
    everyone = {"M1": True, "M2": True, "M3": True, "M4": True, "M5": True}
    assert run("members", "import", str(members_file(project, everyone))).exit_code == 0
    engine = runtime.engine()
    with engine.begin() as conn:
        ref = conn.execute(sa.select(members_table.c.id).where(members_table.c.member_id == "M4")).scalar_one()
        conn.execute(sends_table.insert().values(
            send_id="a" * 32, member_ref=ref, flow="welcome", occurrence_key="welcome", template="welcome",
            state="sent", reason="joined", occurrence={}, occurred_at=FIXED_NOW, scheduled_for=FIXED_NOW,
            created_at=FIXED_NOW, attempts=1))

    with freeze_time(FIXED_NOW):
        added = run("suppress", "add", "M1@Example.com", "--reason", "unsubscribe")
        assert added.exit_code == 0 and "suppressed 1 address(es)" in added.stdout
        assert run("members", "import", str(members_file(project, {"M2": False}))).exit_code == 0
    later = FIXED_NOW + timedelta(hours=1)
    record_events(engine, [DeliveryEvent("unsubscribe", None, "m3@example.com", later, "ev1",
                                         suppress_as="unsubscribe")], later)
    assert unsubscribe(engine, "a" * 32, later, "link") is not None

    members, listed = state(runtime)
    assert members == {"M1": (False, FIXED_NOW), "M2": (False, FIXED_NOW), "M3": (False, later),
                       "M4": (False, later), "M5": (True, None)}
    assert listed == {f"m{n}@example.com": "unsubscribe" for n in (1, 2, 3, 4)}


def test_an_import_never_resubscribes_and_keeps_the_first_date(run, project, runtime):
    assert run("members", "import", str(members_file(project, {"M1": True}))).exit_code == 0
    with runtime.engine().begin() as conn:
        assert suppression.unsubscribe(conn, ["m1@example.com"], FIXED_NOW - timedelta(days=1)) == 1
        assert suppression.unsubscribe(conn, ["M1@example.com "], FIXED_NOW) == 0
    assert run("members", "import", str(members_file(project, {"M1": True}))).exit_code == 0
    members, listed = state(runtime)
    assert members == {"M1": (False, FIXED_NOW - timedelta(days=1))}
    assert listed == {"m1@example.com": "unsubscribe"}

"""Event import: aggregates, points, and a tier history that follows the configured thresholds."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa

from loyalty_mail.models import events_table, members_table, tier_changes_table
from loyalty_mail.tiers import TierLadder

# Test ladder (conftest): member 0, silver 1,000, gold 5,000, platinum 20,000 points;
# 1 point per 1,000 VND.


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def seed_members(run, tmp_path: Path, *ids: str) -> None:
    path = tmp_path / "members.csv"
    path.write_text("member_id,email\n" + "".join(f"{i},{i.lower()}@example.com\n" for i in ids))
    assert run("members", "import", str(path)).exit_code == 0


def history(runtime) -> dict[str, list[tuple]]:
    m, t = members_table, tier_changes_table
    with runtime.engine().connect() as connection:
        rows = connection.execute(
            sa.select(m.c.member_id, t.c.from_tier, t.c.to_tier, t.c.changed_at, t.c.reason)
            .join(m, m.c.id == t.c.member_ref).order_by(m.c.member_id, t.c.changed_at, t.c.id)
        ).all()
    out: dict[str, list[tuple]] = {}
    for member_id, from_tier, to_tier, changed_at, reason in rows:
        out.setdefault(member_id, []).append((from_tier, to_tier, changed_at.isoformat(), reason))
    return out


def members(runtime) -> dict[str, dict]:
    with runtime.engine().connect() as connection:
        return {r["member_id"]: dict(r) for r in connection.execute(sa.select(members_table)).mappings()}


def test_tiers_and_history_follow_the_thresholds(run, runtime, tmp_path):
    seed_members(run, tmp_path, "JUMP", "DROP", "STEADY")
    events = jsonl(tmp_path / "events.jsonl", [
        # JUMP: 0 -> 6,000 points in one purchase: member -> gold in one step (skips silver).
        {"member_id": "JUMP", "type": "purchase", "occurred_at": "2026-03-01T10:00:00+07:00",
         "amount": 6_000_000, "items": ["ao dai", "non la"]},
        # DROP: silver, then gold, then redeems back below gold; a refund-like adjustment of points.
        {"member_id": "DROP", "type": "purchase", "occurred_at": "2026-03-01T09:00:00",
         "amount": "1200000"},
        {"member_id": "DROP", "type": "points_earned", "occurred_at": "2026-03-05T09:00:00", "points": 4000,
         "campaign": "double points"},
        {"member_id": "DROP", "type": "points_redeemed", "occurred_at": "2026-03-09T09:00:00", "points": 4500},
        # STEADY: stays below silver; 999 points exactly.
        {"member_id": "STEADY", "type": "purchase", "occurred_at": "2026-03-01T09:00:00", "amount": "999999"},
    ])
    result = run("events", "import", str(events))
    assert result.exit_code == 0, result.output
    assert "5 events added, 3 members updated, 0 rejected, 4 tier changes" in result.stdout

    state = members(runtime)
    assert (state["JUMP"]["points"], state["JUMP"]["tier"]) == (6000, "gold")
    assert (state["DROP"]["points"], state["DROP"]["tier"]) == (700, "member")
    assert (state["STEADY"]["points"], state["STEADY"]["tier"]) == (999, "member")
    assert state["JUMP"]["purchase_count"] == 1 and state["JUMP"]["total_spend"] == Decimal("6000000")
    assert state["JUMP"]["last_purchase_at"] == datetime(2026, 3, 1, 3, 0, tzinfo=timezone.utc)

    assert history(runtime) == {
        "JUMP": [("member", "gold", "2026-03-01T03:00:00+00:00",
                  "purchase of 6,000,000.00 VND (+6,000 points)")],
        "DROP": [("member", "silver", "2026-03-01T02:00:00+00:00",
                  "purchase of 1,200,000.00 VND (+1,200 points)"),
                 ("silver", "gold", "2026-03-05T02:00:00+00:00", "points_earned (+4,000 points)"),
                 ("gold", "member", "2026-03-09T02:00:00+00:00", "points_redeemed (-4,500 points)")],
    }
    # Every member's stored tier is what the ladder says for their points.
    ladder = TierLadder.from_settings(runtime.settings.tiers)
    for row in state.values():
        assert row["tier"] == ladder.tier_for(row["points"], row["total_spend"])


def test_events_apply_in_time_order_whatever_the_file_order(run, runtime, tmp_path):
    seed_members(run, tmp_path, "M1")
    # The redemption comes first in the file but after the purchase in time: it must succeed.
    events = jsonl(tmp_path / "e.jsonl", [
        {"member_id": "M1", "type": "points_redeemed", "occurred_at": "2026-04-02T00:00:00Z", "points": 500},
        {"member_id": "M1", "type": "purchase", "occurred_at": "2026-04-01T00:00:00Z", "amount": 1500000},
        {"member_id": "M1", "type": "signup", "occurred_at": "2026-03-31T08:00:00Z"},
    ])
    result = run("events", "import", str(events))
    assert result.exit_code == 0, result.output
    state = members(runtime)["M1"]
    assert state["points"] == 1000 and state["tier"] == "silver"
    assert state["joined_at"] == datetime(2026, 3, 31, 8, 0, tzinfo=timezone.utc)
    assert [h[:2] for h in history(runtime)["M1"]] == [("member", "silver")]


def test_bad_event_rows_fail_the_import_and_change_nothing(run, runtime, tmp_path):
    seed_members(run, tmp_path, "M1", "M2")
    events = jsonl(tmp_path / "e.jsonl", [
        {"member_id": "M1", "type": "purchase", "occurred_at": "2026-04-01T00:00:00Z", "amount": 3000000},
        {"member_id": "GHOST", "type": "purchase", "occurred_at": "2026-04-01T00:00:00Z", "amount": 10},
        {"member_id": "M2", "type": "points_redeemed", "occurred_at": "2026-04-01T00:00:00Z", "points": 50},
        {"member_id": "M1", "type": "purchase", "occurred_at": "2026-04-01T00:00:00Z", "amount": 5,
         "currency": "USD"},
        {"member_id": "M1", "type": "Purchase!", "occurred_at": "yesterday"},
        {"member_id": "M1", "type": "purchase", "occurred_at": "2026-04-01T00:00:00Z"},
    ])
    result = run("events", "import", str(events))
    assert result.exit_code == 1
    assert result.stderr.splitlines()[:5] == [
        f"Error: {events}: row 2: member_id: unknown member 'GHOST' (add the member first: `members import`, or PUT /v1/members/ID)",
        f"{events}: row 3: points: redeems 50 points dated 2026-04-01 00:00 UTC; member 'M2' had 0 then and has 0 "
        "now: a balance never goes below 0",
        f"{events}: row 4: currency: 'USD' is not the program currency VND; convert amounts before importing",
        f"{events}: row 5: type: 'Purchase!' is not an event type (lowercase letters, digits and _); "
        "occurred_at: 'yesterday' is not a valid ISO 8601 date or time (e.g. 2026-03-01T09:30:00+07:00)",
        f"{events}: row 6: amount: is required for a purchase",
    ]
    state = members(runtime)
    assert state["M1"]["points"] == 0 and state["M1"]["purchase_count"] == 0
    with runtime.engine().connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(events_table)).scalar_one() == 0

    skipped = run("events", "import", str(events), "--skip-invalid")
    assert skipped.exit_code == 0, skipped.output
    assert "1 event added, 1 member updated, 5 rejected, 1 tier change" in skipped.stdout
    assert members(runtime)["M1"]["points"] == 3000


def test_event_ids_make_reimport_safe(run, runtime, tmp_path):
    seed_members(run, tmp_path, "M1")
    rows = [{"event_id": f"pos-{i}", "member_id": "M1", "type": "purchase",
             "occurred_at": f"2026-05-0{i}T12:00:00+07:00", "amount": 400000} for i in range(1, 4)]
    path = jsonl(tmp_path / "e.jsonl", rows)
    assert run("events", "import", str(path)).exit_code == 0
    again = run("events", "import", str(path))
    assert again.exit_code == 0
    assert "0 events added" in again.stdout and "3 already imported (skipped)" in again.stdout
    state = members(runtime)["M1"]
    assert state["purchase_count"] == 3 and state["points"] == 1200

    dup = jsonl(tmp_path / "dup.jsonl", [{**rows[0], "event_id": "x"}, {**rows[1], "event_id": "x"}])
    result = run("events", "import", str(dup))
    assert result.exit_code == 1 and "row 2: event_id: 'x' already appears in row 1" in result.stderr


def test_events_from_csv_with_explicit_points_and_properties(run, runtime, tmp_path):
    seed_members(run, tmp_path, "M1")
    path = tmp_path / "e.csv"
    path.write_text("member_id,type,occurred_at,amount,points,store\n"
                    "M1,purchase,2026-06-01 18:30,250000,1200,Q1\n"
                    "M1,review_written,2026-06-02 09:00,,50,\n")
    result = run("events", "import", str(path))
    assert result.exit_code == 0, result.output
    with runtime.engine().connect() as connection:
        stored = connection.execute(
            sa.select(events_table.c.type, events_table.c.points, events_table.c.properties,
                      events_table.c.currency).order_by(events_table.c.occurred_at)).all()
    assert [tuple(r) for r in stored] == [("purchase", 1200, {"store": "Q1"}, "VND"),
                                         ("review_written", 50, {}, None)]
    assert members(runtime)["M1"]["points"] == 1250 and members(runtime)["M1"]["tier"] == "silver"

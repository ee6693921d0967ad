"""Concurrent requests written together (api/writer.py), and one event a request applied without
the staging table (importing/events.py OneEvent): the same answers, words and effects as the
batch path, each request on its own, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from loyalty_mail import db
from loyalty_mail.api import keys
from loyalty_mail.api.app import create_app
from loyalty_mail.models import (events_table, members_table, point_lots_table, tier_changes_table,
                                 touched_members_table)
from loyalty_mail.runtime import Runtime

from .conftest import FIXED_NOW, TEST_CONFIG

WAIT_S = 20


class Api:
    """The app in process; `post` sends requests at once on one event loop."""

    def __init__(self, runtime: Runtime):
        self.engine = runtime.engine()
        self.app = create_app(runtime.settings, self.engine, runtime.now)
        with db.writer(self.engine).begin() as conn:
            self.key = keys.create(conn, "test", "admin", FIXED_NOW)

    def post(self, *requests: tuple[str, Any]) -> list[httpx.Response]:
        return asyncio.run(self._send(list(requests), grouped=False))

    def post_in_one_group(self, *requests: tuple[str, Any]) -> list[httpx.Response]:
        """Send every request while the writer is held by another one, so that all of them wait
        and are then written in one transaction (checked)."""
        return asyncio.run(self._send(list(requests), grouped=True))

    async def _send(self, requests: list[tuple[str, Any]], grouped: bool) -> list[httpx.Response]:
        writer = self.app.state.writer
        entered, release = threading.Event(), threading.Event()

        def hold(_transaction: Any) -> None:
            entered.set()
            release.wait(WAIT_S)

        transport = httpx.ASGITransport(app=self.app)
        headers = {"Authorization": f"Bearer {self.key}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://api", headers=headers) as client:
            if not grouped:
                return list(await asyncio.gather(*(client.post(path, json=body) for path, body in requests)))
            held = asyncio.ensure_future(writer.run(hold))
            await _until(entered.is_set)
            sent = [asyncio.ensure_future(client.post(path, json=body)) for path, body in requests]
            await _until(lambda: writer.queued() == len(requests))
            groups = writer.groups
            release.set()
            await held
            answers = list(await asyncio.gather(*sent))
        assert writer.groups == groups + 1, "the requests were not written in one transaction"
        return answers

    def rows(self, query: Any) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def member(self, member_id: str) -> dict[str, Any]:
        [row] = self.rows(sa.select(members_table).where(members_table.c.member_id == member_id))
        return row


async def _until(condition: Any) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


@pytest.fixture
def api(project: Path, database_url: str, request: pytest.FixtureRequest) -> Iterator[Api]:
    config = TEST_CONFIG
    if getattr(request, "param", None) == "expiring points":
        config = config.replace("  points_per_currency_unit: 0.001\n",
                                "  points_per_currency_unit: 0.001\n  points:\n    expiry: {after: 12 months}\n")
    (project / "config.yaml").write_text(config, encoding="utf-8")
    runtime = Runtime.load(project, database_url=database_url, clock=lambda: FIXED_NOW)
    api = Api(runtime)
    members = [{"member_id": f"M{n}", "email": f"m{n}@example.com"} for n in (1, 2, 3)]
    [answer] = api.post(("/v1/members/batch", {"members": members}))
    assert answer.status_code == 200, answer.text
    yield api
    api.app.state.writer.close()
    runtime.close()


def purchase(event_id: str | None, member_id: str, amount: int, at: str = "2026-11-20T10:00:00+07:00") -> dict[str, Any]:
    event = {"member_id": member_id, "type": "purchase", "amount": amount, "occurred_at": at}
    return {**event, "event_id": event_id} if event_id else event


def test_concurrent_requests_repeating_event_ids_apply_each_event_once(api):
    bodies = [purchase(f"e-{n % 4}", "M1", 1_000_000) for n in range(12)]
    answers = api.post_in_one_group(*(("/v1/events", body) for body in bodies))
    assert [a.status_code for a in answers] == [200] * 12
    assert sum(a.json()["events"]["inserted"] for a in answers) == 4
    assert sum(a.json()["events"]["already_applied"] for a in answers) == 8
    assert [a.json()["events"]["inserted"] for a in answers[:4]] == [1, 1, 1, 1]  # in the order they came
    member = api.member("M1")
    assert (member["points"], member["tier"], member["purchase_count"]) == (4000, "silver", 4)
    assert len(api.rows(sa.select(events_table.c.id))) == 4
    assert [(c["from_tier"], c["to_tier"]) for c in api.rows(sa.select(tier_changes_table))] == [("member", "silver")]
    queued = api.rows(sa.select(touched_members_table.c.member_ref))
    assert {q["member_ref"] for q in queued} >= {member["id"]}  # the daemon is woken for M1

    answers = api.post(*(("/v1/events", body) for body in bodies[:4]))  # not grouped this time
    assert [a.json()["events"] for a in answers] == [{"inserted": 0, "already_applied": 1}] * 4
    assert api.member("M1")["points"] == 4000


def test_a_bad_request_in_a_group_is_its_own_answer_and_the_others_commit(api):
    requests = [
        ("/v1/events", purchase("ok-1", "M1", 2_000_000)),
        ("/v1/events", {"event_id": "bad-1", "member_id": "M2", "type": "points_redeemed", "points": 500,
                        "occurred_at": "2026-11-20T10:00:00+07:00"}),     # M2 has no points yet
        ("/v1/events", purchase("ok-2", "M2", 1_000_000)),
        ("/v1/events", purchase("bad-2", "nobody", 1_000)),
        ("/v1/events", [purchase("batch-ok", "M3", 5_000_000), purchase("batch-bad", "M3", -1)]),  # written, then rolled back
        ("/v1/events?partial=true", [purchase("part-ok", "M3", 1_000_000), purchase("part-bad", "nobody", 1)]),
        ("/v1/events", purchase("ok-3", "M1", 1_000_000)),
    ]
    answers = api.post_in_one_group(*requests)
    assert [a.status_code for a in answers] == [200, 422, 200, 422, 422, 200, 200]
    assert answers[1].json()["error"]["errors"][0]["message"] == (
        "redeems 500 points dated 2026-11-20 03:00 UTC; member 'M2' had 0 then and has 0 now: a balance never "
        "goes below 0")
    assert answers[3].json()["error"]["errors"][0]["message"] == "unknown member 'nobody' (add the member first: `members import`, or PUT /v1/members/ID)"
    assert [e["index"] for e in answers[4].json()["error"]["errors"]] == [1]
    assert [e["index"] for e in answers[5].json()["rejected"]] == [1]
    stored = {row["event_id"] for row in api.rows(sa.select(events_table.c.event_id))}
    assert stored == {"ok-1", "ok-2", "ok-3", "part-ok"}
    assert (api.member("M1")["points"], api.member("M2")["points"], api.member("M3")["points"]) == (3000, 1000, 1000)


# Each bad event, alone (one event a request) and first of a batch with a good one (the staging path).
BAD_EVENTS = [
    {"member_id": "nobody", "type": "signup", "occurred_at": "2026-11-20T10:00:00Z"},
    {"member_id": "M1", "type": "points_redeemed", "points": 5, "occurred_at": "2026-11-20T10:00:00+07:00"},
    {"member_id": "M1", "type": "purchase", "occurred_at": "2026-11-20T10:00:00Z"},
    {"member_id": "M1", "type": "purchase", "amount": "12,5", "currency": "USD", "occurred_at": "tomorrow"},
    {"member_id": "M1", "type": "Purchase!", "occurred_at": "2026-11-20T10:00:00Z", "points": -1},
    {"member_id": " ", "type": "points_earned", "occurred_at": "2026-11-20"},
    {"event_id": "x" * 129, "member_id": "M1", "type": "signup", "occurred_at": "2026-11-20"},
    "not an object",
]


@pytest.mark.parametrize("bad", BAD_EVENTS, ids=range(len(BAD_EVENTS)))
def test_one_bad_event_gets_the_batch_path_s_422_word_for_word(api, bad):
    good = purchase("good", "M2", 1_000)
    alone, first = api.post(("/v1/events", bad), ("/v1/events", [bad, good]))
    assert alone.status_code == first.status_code == 422
    assert alone.json() == first.json()
    assert alone.json()["error"]["message"].startswith("1 item(s) are invalid; nothing was applied")
    partial = api.post(("/v1/events?partial=true", bad))[0]
    assert partial.status_code == 200 and partial.json()["rejected"] == alone.json()["error"]["errors"]
    assert api.rows(sa.select(events_table.c.id)) == []


@pytest.mark.parametrize("api", ["points that last", "expiring points"], indirect=True)
def test_one_event_a_request_has_the_batch_path_s_effects(api, request):
    def events(member_id: str) -> list[dict[str, Any]]:
        at = "2026-11-2{}T10:00:00+07:00".format
        return [
            {"event_id": f"{member_id}-1", "member_id": member_id, "type": "signup", "occurred_at": at(0)},
            {"event_id": f"{member_id}-2", "member_id": member_id, "type": "purchase", "amount": "2000000.5",
             "occurred_at": at(1), "store": "Hanoi", "properties": {"items": ["tea"]}},
            {"event_id": f"{member_id}-3", "member_id": member_id, "type": "points_redeemed", "points": 1500,
             "occurred_at": at(2)},
            {"event_id": f"{member_id}-4", "member_id": member_id, "type": "review_written", "points": 10,
             "occurred_at": "2026-11-23 09:00"},
        ]

    for event in events("M1"):
        [answer] = api.post(("/v1/events", event))
        assert answer.status_code == 200, answer.text
    [answer] = api.post(("/v1/events", events("M2")))
    assert answer.status_code == 200, answer.text

    def state(member_id: str) -> Any:
        member = api.member(member_id)
        e, t, lots = events_table, tier_changes_table, point_lots_table
        return (
            {k: member[k] for k in ("points", "tier", "total_spend", "purchase_count", "last_purchase_at",
                                    "joined_at", "joined_on")},
            [{**row, "event_id": row["event_id"][3:]} for row in api.rows(
                sa.select(e.c.event_id, e.c.type, e.c.occurred_at, e.c.amount, e.c.currency, e.c.points,
                          e.c.properties).where(e.c.member_ref == member["id"]).order_by(e.c.id))],
            api.rows(sa.select(t.c.from_tier, t.c.to_tier, t.c.changed_at, t.c.reason)
                     .where(t.c.member_ref == member["id"]).order_by(t.c.id)),
            api.rows(sa.select(*(c for c in lots.c if c.name not in ("id", "member_ref")))
                     .where(lots.c.member_ref == member["id"]).order_by(lots.c.id)),
        )

    one_by_one, batched = state("M1"), state("M2")
    assert one_by_one == batched
    assert one_by_one[0]["points"] == 510 and [c["to_tier"] for c in one_by_one[2]] == ["silver", "member"]
    assert bool(one_by_one[3]) == ("expiring" in request.node.callspec.params["api"])


def test_a_key_revoked_after_it_was_let_in_writes_nothing(api):
    [first] = api.post(("/v1/events", purchase("before", "M1", 1_000)))
    assert first.status_code == 200
    with db.writer(api.engine).begin() as conn:
        keys.revoke(conn, "test", FIXED_NOW)
    [after] = api.post(("/v1/events", purchase("after", "M1", 1_000)))
    assert after.status_code == 401 and after.json()["error"]["message"] == "unknown or revoked API key"
    assert {row["event_id"] for row in api.rows(sa.select(events_table.c.event_id))} == {"before"}
    [again] = api.post(("/v1/events", purchase("after", "M1", 1_000)))
    assert again.status_code == 401

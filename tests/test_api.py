"""The HTTP API in process (httpx against the ASGI app) on SQLite and PostgreSQL, and once as a
real uvicorn process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings, strategies as st

from loyalty_mail import db
from loyalty_mail.api import keys
from loyalty_mail.api.app import create_app
from loyalty_mail.models import events_table, members_table, suppressions_table
from loyalty_mail.runtime import Runtime

from .conftest import FIXED_NOW, REPO, TEST_CONFIG
from .processes import api_program, free_port, wait_until_answering

FIXTURES = Path(__file__).parent / "fixtures" / "segment"
SEGMENT_MAPPING = """\
ingest:
  segment:
    events:
      Item Purchased: {type: purchase, amount: properties.revenue}
"""


class Client:
    """Requests to the app in process, each on its own event loop."""

    def __init__(self, app: Any, key: str | None):
        self.app, self.key = app, key

    def __call__(self, method: str, url: str, *, key: str | None = "default", **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        key = self.key if key == "default" else key
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"

        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
                return await client.request(method, url, headers=headers, **kwargs)

        return asyncio.run(send())


def _new_key(engine: sa.Engine, name: str, scope: str) -> str:
    with db.writer(engine).begin() as conn:
        return keys.create(conn, name, scope, FIXED_NOW)


@pytest.fixture
def api_runtime(project: Path, database_url: str):
    (project / "config.yaml").write_text(TEST_CONFIG + SEGMENT_MAPPING, encoding="utf-8")
    rt = Runtime.load(project, database_url=database_url, clock=lambda: FIXED_NOW)
    yield rt
    rt.close()


@pytest.fixture
def client(api_runtime: Runtime) -> Client:
    engine = api_runtime.engine()
    return Client(create_app(api_runtime.settings, engine, api_runtime.now), _new_key(engine, "test", "admin"))


def _member(engine: sa.Engine, member_id: str) -> dict[str, Any] | None:
    m = members_table
    with engine.connect() as conn:
        row = conn.execute(sa.select(m).where(m.c.member_id == member_id)).mappings().first()
    return dict(row) if row else None


def _count(engine: sa.Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def test_put_member_upserts_with_the_import_rules(client, api_runtime):
    r = client("PUT", "/v1/members/M1", json={"email": "a@example.com", "points": 1200, "favourite": "tea"})
    assert r.status_code == 200, r.text
    assert r.json()["members"] == {"inserted": 1, "updated": 0}
    stored = _member(api_runtime.engine(), "M1")
    assert stored["tier"] == "silver" and stored["attributes"] == {"favourite": "tea"}
    r = client("PUT", "/v1/members/M1", json={"email": "a@example.com", "first_name": "An"})
    assert r.json()["members"] == {"inserted": 0, "updated": 1}
    stored = _member(api_runtime.engine(), "M1")
    assert stored["points"] == 1200 and stored["first_name"] == "An"  # a missing field keeps what is stored


def test_a_bad_member_is_422_in_the_importers_words(client):
    r = client("PUT", "/v1/members/M1", json={"email": "not-an-address", "points": -5})
    assert r.status_code == 422
    errors = r.json()["error"]["errors"]
    assert [(e["index"], e["field"], e["found"]) for e in errors] == [(0, "email", "not-an-address"), (0, "points", -5)]
    assert errors[0]["message"] == "'not-an-address' is not a valid email address"
    assert errors[1]["message"] == "-5 is negative" and "whole number" in errors[1]["allowed"]


def test_a_computed_column_is_an_item_error_not_a_failure(client):
    r = client("POST", "/v1/members/batch", json={"members": [{"member_id": "M1", "email": "a@example.com",
                                                               "tier": "gold"}]})
    assert r.status_code == 422
    [error] = r.json()["error"]["errors"]
    assert error["field"] == "tier" and "the tier follows from points" in error["message"]


def test_a_batch_is_all_or_nothing_unless_partial(client, api_runtime):
    batch = {"members": [{"member_id": "M1", "email": "a@example.com"}, {"member_id": "M2", "email": "bad"},
                         {"member_id": "M1", "email": "b@example.com"}]}
    r = client("POST", "/v1/members/batch", json=batch)
    assert r.status_code == 422
    assert [(e["index"], e["field"]) for e in r.json()["error"]["errors"]] == [(1, "email"), (2, "member_id")]
    assert _member(api_runtime.engine(), "M1") is None
    r = client("POST", "/v1/members/batch?partial=true", json=batch)
    assert r.status_code == 200
    body = r.json()
    assert body["members"]["inserted"] == 1 and [e["index"] for e in body["rejected"]] == [1, 2]
    assert _member(api_runtime.engine(), "M1")["email"] == "a@example.com"


def test_events_apply_points_and_tiers_once_per_event_id(client, api_runtime):
    client("PUT", "/v1/members/M1", json={"email": "a@example.com"})
    event = {"event_id": "e-1", "member_id": "M1", "type": "purchase", "amount": 2_000_000,
             "occurred_at": "2026-11-20T10:00:00+07:00", "items": ["tea"]}
    first = client("POST", "/v1/events", json=event)
    assert first.status_code == 200, first.text
    assert first.json()["events"] == {"inserted": 1, "already_applied": 0} and first.json()["tier_changes"] == 1
    again = client("POST", "/v1/events", json=[event])
    assert again.status_code == 200 and again.json()["events"] == {"inserted": 0, "already_applied": 1}
    engine = api_runtime.engine()
    assert _member(engine, "M1")["points"] == 2000 and _member(engine, "M1")["tier"] == "silver"
    assert _count(engine, events_table) == 1


def test_an_event_for_an_unknown_member_is_an_item_error(client):
    r = client("POST", "/v1/events", json={"member_id": "nobody", "type": "signup",
                                           "occurred_at": "2026-11-20T10:00:00Z"})
    assert r.status_code == 422
    [error] = r.json()["error"]["errors"]
    assert (error["index"], error["field"]) == (0, "member_id")
    assert error["message"] == "unknown member 'nobody' (add the member first: `members import`, or PUT /v1/members/ID)"


def test_create_unknown_members_creates_them_from_the_event_email(project, database_url):
    (project / "config.yaml").write_text(TEST_CONFIG + "ingest:\n  create_unknown_members: true\n", encoding="utf-8")
    rt = Runtime.load(project, database_url=database_url, clock=lambda: FIXED_NOW)
    try:
        engine = rt.engine()
        client = Client(create_app(rt.settings, engine, rt.now), _new_key(engine, "k", "ingest"))
        r = client("POST", "/v1/events", json=[
            {"member_id": "N1", "email": "n1@example.com", "type": "signup", "occurred_at": "2026-11-20T10:00:00Z"},
            {"member_id": "N2", "type": "signup", "occurred_at": "2026-11-20T10:00:00Z"}])
        assert r.status_code == 422 and [e["index"] for e in r.json()["error"]["errors"]] == [1]
        assert _member(engine, "N1") is None  # all or nothing, the created member too
        r = client("POST", "/v1/events?partial=true", json=[
            {"member_id": "N1", "email": "n1@example.com", "type": "signup", "occurred_at": "2026-11-20T10:00:00Z"}])
        assert r.status_code == 200 and r.json()["members"]["inserted"] == 1
        assert _member(engine, "N1")["joined_at"] is not None
    finally:
        rt.close()


def test_partial_creates_no_member_for_an_event_it_rejects(project, database_url):
    """With ?partial=true a refused item changes nothing: the member its email would have created
    is not created, while a good event in the same request still creates its own."""
    (project / "config.yaml").write_text(TEST_CONFIG + "ingest:\n  create_unknown_members: true\n", encoding="utf-8")
    rt = Runtime.load(project, database_url=database_url, clock=lambda: FIXED_NOW)
    try:
        engine = rt.engine()
        client = Client(create_app(rt.settings, engine, rt.now), _new_key(engine, "k", "ingest"))
        r = client("POST", "/v1/events?partial=true", json=[
            {"event_id": "p-1", "member_id": "N1", "email": "n1@example.com", "type": "purchase", "amount": -1,
             "occurred_at": "2026-11-20T10:00:00Z"},
            {"event_id": "p-2", "member_id": "N2", "email": "n2@example.com", "type": "points_redeemed",
             "points": 5, "occurred_at": "2026-11-20T10:00:00Z"},
            {"event_id": "p-3", "member_id": "N3", "email": "n3@example.com", "type": "purchase", "amount": 5000,
             "occurred_at": "2026-11-20T10:00:00Z"}])
        assert r.status_code == 200, r.text
        body = r.json()
        assert [(e["index"], e["field"]) for e in body["rejected"]] == [(0, "amount"), (1, "points")]
        assert body["members"] == {"inserted": 1, "updated": 0} and body["events"]["inserted"] == 1
        assert _member(engine, "N1") is None and _member(engine, "N2") is None
        assert _member(engine, "N3")["total_spend"] == 5000
        r = client("POST", "/v1/events?partial=true", json={
            "event_id": "p-4", "member_id": "N4", "email": "n4@example.com", "type": "purchase", "amount": -1,
            "occurred_at": "2026-11-20T10:00:00Z"})
        assert r.status_code == 200 and r.json()["members"]["inserted"] == 0, r.text
        assert _member(engine, "N4") is None
    finally:
        rt.close()


def test_get_member_answers_like_explain(client, api_runtime, project):
    (project / "segments").mkdir(exist_ok=True)
    (project / "segments" / "rich.yaml").write_text("name: rich\npoints: {gte: 5000}\n", encoding="utf-8")
    (project / "segments" / "poor.yaml").write_text("name: poor\npoints: {lt: 100}\n", encoding="utf-8")
    engine = api_runtime.engine()
    client = Client(create_app(api_runtime.settings, engine, api_runtime.now), client.key)
    client("PUT", "/v1/members/M1", json={"email": "a@example.com", "points": 6000})
    r = client("GET", "/v1/members/M1")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["tier"], body["points"], body["member"]["email"]) == ("gold", 6000, "a@example.com")
    assert body["segments"] == ["rich"] and body["flows"] == []
    assert client("GET", "/v1/members/nobody").status_code == 404


def test_unsubscribe_uses_the_one_unsubscribe(client, api_runtime):
    client("PUT", "/v1/members/M1", json={"email": "a@example.com"})
    r = client("POST", "/v1/members/M1/unsubscribe")
    assert r.status_code == 200 and r.json()["newly_suppressed"] is True
    assert _member(api_runtime.engine(), "M1")["subscribed"] is False
    assert _count(api_runtime.engine(), suppressions_table) == 1
    # and an upsert saying subscribed: true does not undo it
    client("PUT", "/v1/members/M1", json={"email": "a@example.com", "subscribed": True})
    assert _member(api_runtime.engine(), "M1")["subscribed"] is False


def test_segment_identify_and_track_examples(client, api_runtime):
    identify = json.loads((FIXTURES / "identify.json").read_text())
    r = client("POST", "/v1/segment/identify", json=identify)
    assert r.status_code == 200, r.text
    stored = _member(api_runtime.engine(), "019mr8mf4r")
    assert (stored["email"], stored["first_name"], stored["last_name"]) == ("pgibbons@example.com", "Peter", "Gibbons")
    assert stored["attributes"] == {"industry": "Technology"}
    track = {**json.loads((FIXTURES / "track.json").read_text()), "messageId": "msg-1"}
    for _ in range(2):  # a retried message is applied once
        r = client("POST", "/v1/segment/track", json=track)
        assert r.status_code == 200, r.text
    engine = api_runtime.engine()
    with engine.connect() as conn:
        [event] = conn.execute(sa.select(events_table)).mappings().all()
    assert (event["type"], event["event_id"], str(event["amount"])) == ("purchase", "msg-1", "14.99")
    assert event["properties"]["name"] == "Leap to Conclusions Mat"
    assert _member(engine, "019mr8mf4r")["purchase_count"] == 1


def test_segment_batch_example(client, api_runtime):
    batch = json.loads((FIXTURES / "batch.json").read_text())
    r = client("POST", "/v1/segment/batch", json=batch)
    assert r.status_code == 422  # the third message's user is not a member
    [error] = r.json()["error"]["errors"]
    assert (error["index"], error["field"]) == (2, "member_id")
    r = client("POST", "/v1/segment/batch?partial=true", json=batch)
    assert r.status_code == 200, r.text
    assert r.json()["members"]["inserted"] == 1 and r.json()["events"]["inserted"] == 1
    with api_runtime.engine().connect() as conn:
        assert conn.execute(sa.select(events_table.c.type)).scalars().all() == ["song_played"]
    anonymous = client("POST", "/v1/segment/identify", json={"anonymousId": "x", "traits": {"email": "a@b.co"}})
    assert anonymous.status_code == 422 and anonymous.json()["error"]["errors"][0]["field"] == "userId"


def test_segment_unknown_message_type_echoes_what_was_sent(client):
    r = client("POST", "/v1/segment/batch", json={"batch": [{"type": "nonsense", "userId": "M1"}]})
    assert r.status_code == 422, r.text
    [error] = r.json()["error"]["errors"]
    assert (error["index"], error["field"], error["found"]) == (0, "type", "nonsense")


def test_authentication_and_scopes(client, api_runtime):
    engine = api_runtime.engine()
    reader = _new_key(engine, "reader", "read")
    assert client("GET", "/v1/members/M1", key=None).status_code == 401
    assert client("GET", "/v1/members/M1", key="lm_not-a-key").status_code == 401
    r = client("PUT", "/v1/members/M1", key=reader, json={"email": "a@example.com"})
    assert r.status_code == 403 and "scope read" in r.json()["error"]["message"]
    assert client("GET", "/v1/members/M1", key=reader).status_code == 404  # allowed, no such member
    with db.writer(engine).begin() as conn:
        keys.revoke(conn, "reader", FIXED_NOW)
    assert client("GET", "/v1/members/M1", key=reader).status_code == 401
    import base64
    basic = "Basic " + base64.b64encode(f"{client.key}:".encode()).decode()
    r = client("PUT", "/v1/members/M1", key=None, headers={"Authorization": basic}, json={"email": "a@example.com"})
    assert r.status_code == 200  # Segment's way of sending a write key


def test_malformed_json_is_400_and_an_oversized_body_is_413(client, api_runtime):
    r = client("POST", "/v1/events", content=b'{"member_id": ')
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    big = b"[" + b" " * api_runtime.settings.api.max_body_bytes + b"]"
    r = client("POST", "/v1/events", content=big)
    assert r.status_code == 413

    async def chunks():
        for _ in range(5):
            yield b" " * api_runtime.settings.api.max_body_bytes
    r = client("POST", "/v1/events", content=chunks())  # no Content-Length: counted while read
    assert r.status_code == 413
    assert client("POST", "/v1/members/batch", json={"members": [{}] * 1001}).status_code == 422
    r = client("POST", "/v1/events?partial=maybe", json={})
    assert r.status_code == 422 and "Traceback" not in r.text


def test_openapi_lists_every_route(client):
    r = client("GET", "/openapi.json", key=None)
    assert r.status_code == 200
    paths = r.json()["paths"]
    assert {"/v1/members/{member_id}", "/v1/members/batch", "/v1/events", "/v1/segment/identify",
            "/v1/segment/track", "/v1/segment/batch", "/v1/members/{member_id}/unsubscribe"} <= set(paths)
    assert client("GET", "/docs", key=None).status_code == 200
    # every error is documented with the shape the API answers, not FastAPI's `detail`
    responses = paths["/v1/events"]["post"]["responses"]
    assert {"400", "401", "403", "409", "413", "415", "422", "503"} <= set(responses)
    assert responses["422"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
    assert responses["415"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
    assert "Content-Type" in responses["415"]["description"]
    for path, method in (("/v1/members/{member_id}", "put"), ("/v1/members/batch", "post"),
                         ("/v1/segment/track", "post"), ("/v1/segment/batch", "post")):
        assert "415" in paths[path][method]["responses"]
    assert "409" in paths["/v1/segment/track"]["post"]["responses"]
    assert "409" not in paths["/v1/members/batch"]["post"]["responses"]
    assert "415" not in paths["/v1/members/{member_id}"]["get"]["responses"]
    assert "HTTPValidationError" not in r.text
    # Swagger UI's files are served by the API itself
    page = client("GET", "/docs", key=None).text
    assert "cdn" not in page and "/docs/assets/swagger-ui-bundle.js" in page
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"):
        assert client("GET", f"/docs/assets/{asset}", key=None).status_code == 200


def test_a_member_id_with_a_slash_is_reached_percent_encoded(client):
    put = client("PUT", "/v1/members/shop%2F42", json={"email": "s42@example.com"})
    assert put.status_code == 200, put.text
    got = client("GET", "/v1/members/shop%2F42")
    assert got.status_code == 200 and got.json()["member"]["member_id"] == "shop/42"
    assert client("POST", "/v1/members/shop%2F42/unsubscribe").status_code == 200


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30)
    | st.sampled_from(["\x00", "\ud800", "x" * 200_000, "🎉", "2026-13-45", "-1", "1e400"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["member_id", "email", "points", "type", "occurred_at", "amount", "tier", "bad key",
                         "attributes", "event_id", "userId", "event", "traits", "properties", "batch",
                         "members", "\x00", "__problems__"]), children, max_size=6),
    max_leaves=12)
_paths = st.sampled_from(["/v1/members/batch", "/v1/events", "/v1/segment/identify", "/v1/segment/track",
                          "/v1/segment/batch", "/v1/members/M%00", "/v1/members/M1"])


@pytest.mark.slow
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=_paths, body=_json, deep=st.integers(0, 3))
def test_junk_payloads_get_a_4xx_with_a_message(client, path, body, deep):
    raw = json.dumps(body, ensure_ascii=True).encode() if deep < 3 else b"[" * 100_000 + b"]" * 100_000
    method = "PUT" if path.startswith("/v1/members/M") else "POST"
    r = client(method, path, content=raw)
    assert r.status_code < 500 or r.status_code == 503, r.text
    if r.status_code >= 400:
        assert r.json()["error"]["message"] and "Traceback" not in r.text


@pytest.mark.slow
def test_the_api_under_uvicorn(tmp_path):
    project, url, engine = api_program(tmp_path, TEST_CONFIG)
    key = _new_key(engine, "k", "admin")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    server = subprocess.Popen([sys.executable, "-m", "loyalty_mail", "--project", str(project), "--database", url,
                               "api", "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until_answering(port, server)
        headers = {"Authorization": f"Bearer {key}"}
        r = httpx.put(f"http://127.0.0.1:{port}/v1/members/M1", json={"email": "a@example.com"}, headers=headers)
        assert r.status_code == 200, r.text
        assert _member(engine, "M1")["email"] == "a@example.com"  # committed before the answer
    finally:
        server.send_signal(signal.SIGTERM)
        output = server.communicate(timeout=30)[0].decode()
        engine.dispose()
    assert server.returncode == 0, output
    assert key not in output


def test_unstorable_text_is_a_422_naming_the_field(client):
    r = client("PUT", "/v1/members/M1", content=b'{"email": "a\\ud800@example.com", "first_name": "A\\u0000"}')
    assert r.status_code == 422, r.text
    errors = {e["field"]: e for e in r.json()["error"]["errors"]}
    assert "NUL" in errors["first_name"]["message"] and "surrogate" in errors["email"]["message"]
    assert errors["email"]["found"] == "a\ud800@example.com"  # echoed, escaped as JSON allows


def test_a_nul_in_the_path_member_id_is_a_422_not_a_stored_id(client, api_runtime):
    for path in ("/v1/members/a%00b", "/v1/members/%00"):
        r = client("PUT", path, json={"email": "a@example.com"})
        assert r.status_code == 422, r.text
        [error] = r.json()["error"]["errors"]
        assert error["field"] == "member_id" and "NUL" in error["message"]
    assert _count(api_runtime.engine(), members_table) == 0
    assert client("GET", "/v1/members/a%00b").status_code == 404
    assert client("POST", "/v1/members/a%00b/unsubscribe").status_code == 404


_M1 = '"member_id": "M1", "email": "m1@example.com"'
_TRACK = '"type": "track", "userId": "M1", "event": "Order Completed", "timestamp": "2026-11-01T00:00:00Z"'


@pytest.mark.parametrize("method, path, body, number", [
    ("PUT", "/v1/members/M1", '{' + _M1 + ', "points": NaN}', "'NaN' is not a finite number"),
    ("PUT", "/v1/members/M1", '{' + _M1 + ', "lucky": Infinity}', "'Infinity' is not a finite number"),
    ("PUT", "/v1/members/M1", '{' + _M1 + ', "lucky": 1e400}', "'1e400' is too large"),
    ("PUT", "/v1/members/M1", '{' + _M1 + ', "lucky": 99999999999999999999}', "'99999999999999999999' is too large"),
    ("PUT", "/v1/members/M1", '{' + _M1 + ', "points": ' + "9" * 5000 + '}',
     "'" + "9" * 40 + "... (5,000 characters)' is too large"),
    ("POST", "/v1/members/batch", '{"members": [{' + _M1 + ', "total_spend": -Infinity}]}',
     "'-Infinity' is not a finite number"),
    ("POST", "/v1/events", '{"member_id": "M1", "type": "visit", "occurred_at": "2026-11-01T00:00:00Z", '
                           '"shelf": 1e999}', "'1e999' is too large"),
    ("POST", "/v1/segment/track", '{' + _TRACK + ', "properties": {"revenue": NaN}}', "'NaN' is not a finite number"),
    ("POST", "/v1/segment/identify", '{"type": "identify", "userId": "M1", "traits": {"email": "m1@example.com", '
                                     '"x": -123456789012345678901234}}', "is too large"),
])
def test_numbers_no_database_stores_are_422_saying_which(client, api_runtime, method, path, body, number):
    r = client(method, path, content=body.encode(), headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    message = r.json()["error"]["message"]  # the response itself is valid JSON (no bare NaN)
    assert message.startswith("the body cannot be stored: ") and number in message, message
    assert message.endswith("numbers must be finite (no NaN or Infinity) and whole numbers at most "
                            "9,223,372,036,854,775,807 either side of 0, as JSON and the databases require")
    assert _count(api_runtime.engine(), members_table) == 0


def test_a_huge_topics_object_is_one_short_error(client, api_runtime):
    """A `topics` object far larger than config.yaml's topics is one error, not one per key; a few
    unknown topics are named in one error, the rest counted."""
    room = api_runtime.settings.api.max_body_bytes // 2
    many = {f"t{n}": False for n in range(room // 14)}
    r = client("PUT", "/v1/members/M1", json={"email": "a@example.com", "topics": many})
    assert r.status_code == 422 and len(r.content) < 2_000, len(r.content)
    assert [(e["field"], e["message"]) for e in r.json()["error"]["errors"]] == [
        ("topics", f"an object of {len(many):,} topics; config.yaml has 0 (topics in config.yaml: none)")]
    r = client("PUT", "/v1/members/M1", json={"email": "a@example.com", "topics": {f"x{n}": True for n in range(7)}})
    assert [(e["field"], e["message"]) for e in r.json()["error"]["errors"]] == [
        ("topics", "unknown topics 'x0', 'x1', 'x2', 'x3', 'x4' and 2 more (topics in config.yaml: none)")]


@pytest.mark.parametrize("method, path, body", [
    ("PUT", "/v1/members/M1", {"email": "m1@example.com", "joined_at": "9999-12-31T23:59:59-14:00"}),
    ("PUT", "/v1/members/M1", {"email": "m1@example.com", "last_purchase_at": "0001-01-01T00:00:00+14:00"}),
    ("PUT", "/v1/members/M1", {"email": "m1@example.com", "joined_at": "1899-12-31"}),
    ("POST", "/v1/events", {"member_id": "M1", "email": "m1@example.com", "type": "visit",
                            "occurred_at": "9999-06-01T00:00:00Z"}),
    ("POST", "/v1/segment/track", {"type": "track", "userId": "M1", "event": "Visit",
                                   "timestamp": "2201-01-01T00:00:00Z"}),
])
def test_times_outside_the_years_are_item_errors(client, api_runtime, method, path, body):
    """A time past what dates hold in UTC is a 422 naming the field, never a 500."""
    r = client(method, path, json=body)
    assert r.status_code == 422, r.text
    [error] = r.json()["error"]["errors"]
    assert "is outside the years 1900 to 2200" in error["message"], error
    assert _count(api_runtime.engine(), members_table) == 0


def test_get_member_at_outside_the_years_is_422(client):
    assert client("PUT", "/v1/members/M1", json={"email": "m1@example.com"}).status_code == 200
    r = client("GET", "/v1/members/M1", params={"at": "9999-12-31T23:59:59-12:00"})
    assert r.status_code == 422 and r.json()["error"]["message"] == (
        "'9999-12-31T23:59:59-12:00' is outside the years 1900 to 2200"), r.text
    r = client("GET", "/v1/members/M1?at=2026-11-23T09:00:00+07:00")  # '+' unescaped: a space
    assert r.status_code == 422 and r.json()["error"]["message"].endswith(
        "(a '+' in a query string is a space: write it %2B)"), r.text


def test_a_balance_or_spend_past_what_the_columns_hold_is_an_item_error(client, api_runtime):
    """Points add up to at most 2,147,483,647 and a total spend stays below 10^16 (what the
    columns hold on PostgreSQL): the event that would pass them is refused, nothing applied."""
    assert client("PUT", "/v1/members/M1", json={"email": "m1@example.com", "points": 2**31 - 10}).status_code == 200
    at = "2026-11-01T00:00:00Z"
    r = client("POST", "/v1/events", json=[
        {"event_id": "e1", "member_id": "M1", "type": "points_earned", "points": 5, "occurred_at": at},
        {"event_id": "e2", "member_id": "M1", "type": "points_earned", "points": 5, "occurred_at": at}])
    assert r.status_code == 422, r.text
    assert [(e["index"], e["field"], e["message"]) for e in r.json()["error"]["errors"]] == [
        (1, "points", "adds 5 points to the 2,147,483,643 of member 'M1': a balance is at most 2,147,483,647 points")]
    r = client("POST", "/v1/events", json={"event_id": "e3", "member_id": "M1", "type": "purchase",
                                          "amount": "9999999999999999", "occurred_at": at})
    assert r.status_code == 422 and r.json()["error"]["errors"][0]["field"] == "amount", r.text
    assert client("PUT", "/v1/members/M2", json={"email": "m2@example.com"}).status_code == 200
    big = {"member_id": "M2", "type": "purchase", "amount": "9000000000000000", "points": 1, "occurred_at": at}
    r = client("POST", "/v1/events", json=[{**big, "event_id": "e4"}, {**big, "event_id": "e5"}])
    assert r.status_code == 422, r.text
    assert [(e["index"], e["field"], e["message"]) for e in r.json()["error"]["errors"]] == [
        (1, "amount", "takes the total spend of member 'M2' to 18,000,000,000,000,000.00: a total spend is "
                      "below 10^16")]
    assert _member(api_runtime.engine(), "M1")["points"] == 2**31 - 10
    assert _member(api_runtime.engine(), "M2")["total_spend"] == 0
    assert _count(api_runtime.engine(), events_table) == 0


@pytest.mark.parametrize("path, body", [
    ("/v1/members/M1", b'{"email": "m1@example.com", "email": "other@example.com"}'),
    ("/v1/events", b'[{"member_id": "M1", "type": "visit", "occurred_at": "2026-11-01T00:00:00Z", '
                   b'"properties": {"store": "A", "store": "B"}}]'),
])
def test_a_key_given_twice_is_422_not_the_last_value(client, api_runtime, path, body):
    """Which of two values for one key the sender meant cannot be told: nothing is applied."""
    r = client("PUT" if "members" in path else "POST", path, content=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["message"] in (
        "the body is ambiguous: the key 'email' appears twice in one object; give each key once",
        "the body is ambiguous: the key 'store' appears twice in one object; give each key once")
    assert _count(api_runtime.engine(), members_table) == 0


def test_an_event_id_sent_again_is_a_retry_only_with_the_same_event(client, api_runtime):
    client("PUT", "/v1/members/M1", json={"email": "a@example.com"})
    client("PUT", "/v1/members/M2", json={"email": "b@example.com"})
    event = {"event_id": "e-1", "member_id": "M1", "type": "purchase", "amount": 2_000_000,
             "occurred_at": "2026-11-20T10:00:00+07:00"}
    assert client("POST", "/v1/events", json=event).status_code == 200
    # the same event, the time written in another zone and the amount with cents: a retry
    same = {**event, "amount": "2000000.00", "occurred_at": "2026-11-20T03:00:00Z", "note": "retried"}
    r = client("POST", "/v1/events", json=same)
    assert r.status_code == 200, r.text
    assert r.json()["events"] == {"inserted": 0, "already_applied": 1}

    r = client("POST", "/v1/events", json={**event, "member_id": "M2", "amount": 1_500_000})
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert error["message"].startswith("the event's event_id is recorded for another event (member_id, amount "
                                       "differ); nothing was applied")
    assert [(e["index"], e["field"], e["found"]) for e in error["errors"]] == [(0, "member_id", "M2"),
                                                                               (0, "amount", 1_500_000)]
    assert error["errors"][1]["message"] == ("event_id 'e-1' is recorded with amount 2000000.00, not 1500000.00: "
                                             "a retry repeats the recorded event; another event needs another "
                                             "event_id")
    assert error["errors"][0]["allowed"] == "'M1', as recorded for event_id 'e-1'"
    for change, field in (({"type": "refund"}, "type"), ({"occurred_at": "2026-11-20T10:00:01+07:00"}, "occurred_at"),
                          ({"points": 5}, "points")):
        r = client("POST", "/v1/events", json={**event, **change})
        assert r.status_code == 409 and [e["field"] for e in r.json()["error"]["errors"]] == [field], r.text

    # in a batch: one error entry per field, in the 422's list; ?partial=true applies the others
    batch = [{**event, "event_id": "e-2"}, {**event, "amount": 1, "type": "refund"}]
    r = client("POST", "/v1/events", json=batch)
    assert r.status_code == 422, r.text
    assert [(e["index"], e["field"]) for e in r.json()["error"]["errors"]] == [(1, "type"), (1, "amount")]
    assert "reuse a recorded event_id for another event" in r.json()["error"]["message"]
    r = client("POST", "/v1/events?partial=true", json=batch)
    assert r.status_code == 200, r.text
    assert r.json()["events"] == {"inserted": 1, "already_applied": 0}
    assert [(e["index"], e["field"]) for e in r.json()["rejected"]] == [(1, "type"), (1, "amount")]
    # with another problem in the batch, both are listed
    r = client("POST", "/v1/events", json=[{**event, "event_id": "e-3", "amount": -1}, {**event, "amount": 1}])
    assert [(e["index"], e["field"]) for e in r.json()["error"]["errors"]] == [(0, "amount"), (1, "amount")]
    engine = api_runtime.engine()
    assert _member(engine, "M1")["purchase_count"] == 2 and _member(engine, "M2")["purchase_count"] == 0
    assert _count(engine, events_table) == 2


def test_points_of_a_reused_event_id_are_compared_as_sent(client):
    client("PUT", "/v1/members/M1", json={"email": "a@example.com", "points": 500})
    redeemed = {"event_id": "r-1", "member_id": "M1", "type": "points_redeemed", "points": 200,
                "occurred_at": "2026-11-20T10:00:00Z"}
    assert client("POST", "/v1/events", json=redeemed).status_code == 200
    assert client("POST", "/v1/events", json=redeemed).json()["events"]["already_applied"] == 1
    r = client("POST", "/v1/events", json={**redeemed, "points": 300})
    assert r.status_code == 409
    [error] = r.json()["error"]["errors"]
    assert (error["field"], error["found"], error["allowed"]) == ("points", 300, "200, as recorded for event_id 'r-1'")


def test_a_segment_message_id_sent_again_is_a_retry_only_with_the_same_message(client, api_runtime):
    client("PUT", "/v1/members/U1", json={"email": "u@example.com"})
    track = {"userId": "U1", "event": "Item Purchased", "messageId": "msg-7", "properties": {"revenue": 12.5},
             "timestamp": "2026-11-20T10:00:00Z"}
    assert client("POST", "/v1/segment/track", json=track).status_code == 200
    assert client("POST", "/v1/segment/track", json=track).json()["events"]["already_applied"] == 1
    r = client("POST", "/v1/segment/track", json={**track, "properties": {"revenue": 13}})
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert "messageId is recorded for another event (amount differs)" in error["message"]
    assert error["errors"][0]["message"].startswith("messageId 'msg-7' is recorded with amount 12.50, not 13.00")
    r = client("POST", "/v1/segment/batch", json={"batch": [{**track, "type": "track", "userId": "U2"}]})
    assert r.status_code == 422 and [e["field"] for e in r.json()["error"]["errors"]] == ["member_id"]
    # a message without a timestamp happened when it arrived: its retry arrives later, and is a retry
    untimed = {"userId": "U1", "event": "Item Purchased", "messageId": "msg-8", "properties": {"revenue": 1}}
    assert client("POST", "/v1/segment/track", json=untimed).status_code == 200
    r = client("POST", "/v1/segment/track", json=untimed)
    assert r.status_code == 200 and r.json()["events"]["already_applied"] == 1
    assert _member(api_runtime.engine(), "U1")["purchase_count"] == 2


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x",
                                          "application/xml", ""])
def test_a_body_that_is_not_said_to_be_json_is_415(client, api_runtime, content_type):
    body = b'{"email": "a@example.com"}'
    r = client("PUT", "/v1/members/M1", content=body, headers={"Content-Type": content_type})
    assert r.status_code == 415, r.text
    message = r.json()["error"]["message"]
    assert message.startswith("the body must be JSON sent with `Content-Type: application/json`")
    if content_type == "application/x-www-form-urlencoded":
        assert message.endswith("is 'application/x-www-form-urlencoded' (what `curl -d` sends unless given "
                                "-H 'Content-Type: application/json')")
    assert _member(api_runtime.engine(), "M1") is None
    for path in ("/v1/events", "/v1/members/batch", "/v1/segment/track", "/v1/segment/identify", "/v1/segment/batch"):
        assert client("POST", path, content=body, headers={"Content-Type": content_type}).status_code == 415


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "Application/JSON;charset=UTF-8", "application/vnd.api+json", None])
def test_json_content_types_and_none_are_read_as_json(client, content_type):
    headers = {} if content_type is None else {"Content-Type": content_type}
    r = client("PUT", "/v1/members/M1", content=b'{"email": "a@example.com"}', headers=headers)
    assert r.status_code == 200, r.text


def test_a_birthday_out_of_bounds_is_422_in_the_importers_words(client):
    r = client("PUT", "/v1/members/M1", json={"email": "a@example.com", "birthday": "0001-01-01"})
    assert r.status_code == 422
    [error] = r.json()["error"]["errors"]
    assert (error["field"], error["found"]) == ("birthday", "0001-01-01")
    assert error["message"] == "0001-01-01 is before 1900-01-01: leave the cell blank when the birthday is not known"
    r = client("PUT", "/v1/members/M1", json={"email": "a@example.com", "birthday": "2026-11-25"})
    assert r.status_code == 422
    assert r.json()["error"]["errors"][0]["message"] == "2026-11-25 is in the future (the import is on 2026-11-23)"
    assert client("PUT", "/v1/members/M1", json={"email": "a@example.com", "birthday": "2026-11-23"}).status_code == 200

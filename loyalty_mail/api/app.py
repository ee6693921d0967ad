"""The HTTP API: members and events in, a member's state out. Every route is in ROUTES.

Bodies are read here (never past api.max_body_bytes) and parsed as JSON Lines rows are
(readers.load_json: a number no database stores is a 422); the importers validate them (ingest.py). Every error is JSON, `{"error": {"status", "message",
"errors"?}}`, with no traceback: 400 malformed JSON, 401 no valid key, 403 a key without the
scope, 404, 409 an event id recorded with another event, 413 too large, 415 a body that says it
is not JSON, 422 bad items (one entry per problem: index, field, found, allowed,
message), 503 the database is busy or down. Anything else is a bug: 500, logged with its
traceback on the server.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial as partial_fn
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import db, suppression
from ..config import Settings
from ..errors import LoyaltyMailError, NotFound, shown
from ..flows import build_planner
from ..flows.planner import FlowExplanation
from ..importing.fields import YEARS
from ..importing.readers import PROBLEMS, DuplicateKey, NumberRefused, SourceRow, load_json
from ..members import member_row
from ..segments import context_for, member_segments
from ..importing.events import OneEvent
from . import ingest, keys, retries, segment_spec
from .docs_page import add_docs
from .schemas import BODY_ERROR_RESPONSES, ERROR_RESPONSES, EVENT_ERROR_RESPONSES, EventIn, MemberIn, SegmentMessage, body_schema
from .writer import GroupWriter, Transaction
from ..service_tuning import tuned_for_serving

log = logging.getLogger("loyalty_mail.api")
Clock = Callable[[], datetime]


class ApiError(Exception):
    def __init__(self, status: int, message: str, errors: list[dict[str, Any]] | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.errors, self.headers = status, message, errors, headers


class AsciiJSON(JSONResponse):
    """JSON with every non-ASCII character escaped: a lone surrogate from a client echoes safely."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, default=str, separators=(",", ":")).encode("ascii")


def _error(status: int, message: str, errors: list[dict[str, Any]] | None = None,
           headers: dict[str, str] | None = None) -> AsciiJSON:
    body: dict[str, Any] = {"status": status, "message": message}
    if errors is not None:
        body["errors"] = errors
    return AsciiJSON({"error": body}, status_code=status, headers=headers)


class BodyLimit:
    """413 for a request whose Content-Length is over the limit, before a byte of it is read."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            length = dict(scope["headers"]).get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > self.limit):
                response = _error(413, f"the body is over {self.limit:,} bytes (api.max_body_bytes); "
                                  "split the batch") if length.isdigit() else _error(400, "bad Content-Length")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


@dataclass
class Api:
    settings: Settings
    engine: sa.Engine
    clock: Clock

    def __post_init__(self) -> None:
        self.planner = build_planner(self.settings, self.engine.dialect.name)
        self.writer = GroupWriter(self.engine)
        self.one_event = OneEvent(self.settings)
        # digest -> holder of the keys found valid so far; only the routes that check the key
        # again inside their write (`apply`) take a key from here without asking the database
        self.keys_seen: dict[str, keys.KeyHolder] = {}

    # -- request plumbing ------------------------------------------------------------------

    async def body(self, request: Request) -> Any:
        _check_json_type(request.headers.get("content-type"))
        limit = self.settings.api.max_body_bytes
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"the body is over {limit:,} bytes (api.max_body_bytes); split the batch")
            chunks.append(chunk)
        raw = b"".join(chunks)
        try:
            return load_json(raw, unique_keys=True)
        except NumberRefused as exc:
            raise ApiError(422, f"the body cannot be stored: {exc}") from None
        except DuplicateKey as exc:
            raise ApiError(422, f"the body is ambiguous: {exc}") from None
        except UnicodeDecodeError:
            raise ApiError(400, "the body is not UTF-8 text") from None
        except json.JSONDecodeError as exc:
            raise ApiError(400, f"the body is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
        except RecursionError:
            raise ApiError(400, "the body is not valid JSON (nested too deeply)") from None

    async def apply(self, request: Request, partial: bool, *, id_name: str = "event_id",
                    arrival_timed: frozenset[int] = frozenset(), **rows: list[SourceRow]) -> dict[str, Any]:
        """Apply the rows through the writer, in the same transaction as a last look at the
        request's key: a key revoked since it was let in (see `authorized`) writes nothing. An
        event whose id is recorded for another event is that item's error (409 for a request of
        one event; `id_name` is what the client calls the id; the items at `arrival_timed` took the
        time they arrived for the time they happened, which a retry cannot repeat)."""
        now = self.clock()
        key: str = request.state.api_key

        digest = keys.digest(key)

        def work(transaction: Transaction) -> ingest.Outcome:
            if transaction.read_once(("api key", digest), partial_fn(keys.holder, key=key)) is None:
                self.keys_seen.pop(digest, None)
                raise _bad_key()
            conn = transaction.connection
            return retries.applied_once(
                partial_fn(ingest.apply_on, conn, self.settings, partial=partial, now=now, one_event=self.one_event,
                           **rows),
                conn, self.one_event.validate, rows.get("events", []), partial=partial, id_name=id_name,
                untimed=arrival_timed)

        try:
            outcome = await self.writer.run(work)
        except retries.EventIdReused as exc:
            fields = ", ".join(dict.fromkeys(e.field for e in exc.errors))
            if sum(len(items) for items in rows.values()) == 1:
                differ = "differ" if "," in fields else "differs"
                raise ApiError(409, f"the event's {id_name} is recorded for another event ({fields} {differ}); "
                               f"nothing was applied. A retry repeats the recorded event; another event needs "
                               f"another {id_name}", [e.as_dict() for e in exc.errors]) from None
            bad = len({e.index for e in exc.errors})
            raise ApiError(422, f"{bad} item(s) reuse a recorded {id_name} for another event; nothing was "
                           "applied. Fix them, or send ?partial=true to apply the valid ones",
                           [e.as_dict() for e in exc.errors]) from None
        except ingest.ItemsRejected as exc:
            bad = len({e.index for e in exc.errors})
            raise ApiError(422, f"{bad} item(s) are invalid; nothing was applied. Fix them, or send "
                           "?partial=true to apply the valid ones", [e.as_dict() for e in exc.errors]) from None
        return outcome.as_dict()

    def authorized(self, scope: str, *, checked_in_write: bool = False) -> Any:
        """The dependency that lets a request in by its key. A route whose handler writes through
        `apply` (`checked_in_write`) takes a key found valid before without a query here: the
        write looks again, in its own transaction, so that a revoked key still writes nothing (it
        is then 401 there, after the body is read)."""
        async def check(request: Request, _bearer: Any = Depends(_BEARER)) -> keys.KeyHolder:
            key = _presented_key(request.headers.get("authorization", ""))
            if not key:
                raise ApiError(401, "no API key: send `Authorization: Bearer KEY` (`loyalty-mail api-keys "
                               "create NAME` makes one)", headers={"WWW-Authenticate": "Bearer"})
            digest = keys.digest(key)
            holder = self.keys_seen.get(digest) if checked_in_write else None
            if holder is None:
                holder = await run_in_threadpool(self._holder, key)
                if holder is None:
                    raise _bad_key()
                self.keys_seen[digest] = holder
            if not holder.allows(scope):
                raise ApiError(403, f"the key '{holder.name}' has scope {holder.scope}; this needs "
                               f"{scope} (or admin)")
            request.state.api_key = key
            return holder
        return Depends(check)

    def _holder(self, key: str) -> keys.KeyHolder | None:
        with self.engine.connect() as conn:
            return keys.holder(conn, key)

    # -- routes ----------------------------------------------------------------------------

    async def put_member(self, member_id: str, request: Request, partial: bool = False) -> Any:
        item = await self.body(request)
        if isinstance(item, dict) and PROBLEMS not in item:
            given = item.get("member_id")
            if given is not None and str(given).strip() != member_id.strip():
                raise ApiError(422, "the body's member_id is not the one in the path", [
                    ingest.ItemError(0, "member_id", given, f"'{member_id}' or nothing",
                                     "differs from the member id in the path").as_dict()])
            item = {**item, "member_id": member_id}  # checked with the body: a NUL in the path is its problem too
        return await self.apply(request, partial, members=[ingest.source_row(0, item)])

    async def members_batch(self, request: Request, partial: bool = False) -> Any:
        body = await self.body(request)
        items = _items(body, "members")
        return await self.apply(request, partial, members=[ingest.source_row(i, item) for i, item in enumerate(items)])

    async def post_events(self, request: Request, partial: bool = False) -> Any:
        body = await self.body(request)
        items = body if isinstance(body, list) else [body]
        _check_count(items)
        return await self.apply(request, partial, events=[ingest.source_row(i, item) for i, item in enumerate(items)])

    async def get_member(self, member_id: str, at: str | None = None) -> Any:
        now = self.clock()
        if at is not None:
            plus = " (a '+' in a query string is a space: write it %2B)" if " " in at.strip() else ""
            try:
                now = datetime.fromisoformat(at)
            except ValueError:
                raise ApiError(422, f"{shown(at)} is not an ISO 8601 time (e.g. 2026-11-23T09:00:00+07:00)"
                               + plus) from None
            if now.tzinfo is None:
                raise ApiError(422, f"{shown(at)} has no UTC offset (e.g. 2026-11-23T09:00:00+07:00)")
            if not YEARS[0] <= now.year <= YEARS[1]:
                raise ApiError(422, f"{shown(at)} is outside the years {YEARS[0]} to {YEARS[1]}")
        return await run_in_threadpool(self._member_state, member_id, now)

    def _member_state(self, member_id: str, now: datetime) -> dict[str, Any]:
        with self.engine.connect() as conn:
            answer = self.planner.explain(conn, member_id, now)
            ref = member_row(conn, member_id)["id"]
            ctx = context_for(self.settings, self.planner.segments, now, self.engine.dialect.name)
            segments = member_segments(conn, self.planner.segments, ctx, ref)
        member = answer.member
        return {"member": member, "tier": member["tier"], "points": member["points"], "segments": segments,
                "at": now.isoformat(), "flows": [_flow(flow) for flow in answer.flows]}

    async def unsubscribe(self, member_id: str) -> Any:
        return await run_in_threadpool(self._unsubscribe, member_id, self.clock())

    def _unsubscribe(self, member_id: str, now: datetime) -> dict[str, Any]:
        with db.writer(self.engine).begin() as conn:
            email = member_row(conn, member_id)["email"]
            newly = suppression.unsubscribe(conn, [email], now, detail="api", source="api") > 0
        return {"member_id": member_id, "subscribed": False, "newly_suppressed": newly}

    async def segment_identify(self, request: Request, partial: bool = False) -> Any:
        return await self._segment(request, [await self.body(request)], partial, only="identify")

    async def segment_track(self, request: Request, partial: bool = False) -> Any:
        return await self._segment(request, [await self.body(request)], partial, only="track")

    async def segment_batch(self, request: Request, partial: bool = False) -> Any:
        return await self._segment(request, _items(await self.body(request), "batch"), partial)

    async def _segment(self, request: Request, messages: list[Any], partial: bool, only: str | None = None) -> Any:
        members: list[SourceRow] = []
        events: list[SourceRow] = []
        ignored = 0
        untimed: set[int] = set()
        now = self.clock()
        mappings = self.settings.ingest.segment.events
        for index, message in enumerate(messages):
            index, checked = ingest.source_row(index, message)
            if PROBLEMS in checked:
                (members if only == "identify" else events).append((index, checked))
                continue
            kind = only or checked.get("type")
            if kind == "identify":
                members.append((index, segment_spec.identify_row(checked)))
            elif kind == "track":
                events.append((index, segment_spec.track_row(checked, mappings, now)))
                if not segment_spec.timed(checked):
                    untimed.add(index)
            elif kind in segment_spec.IGNORED_TYPES:
                ignored += 1
            else:
                events.append((index, {"type": kind,
                                       PROBLEMS: [("type", f"unknown message type {shown(kind)} (identify, track, "
                                                           "page, screen, group, alias)")]}))
        result = await self.apply(request, partial, id_name="messageId", arrival_timed=frozenset(untimed),
                                  members=members, events=events)
        result["ignored"] = ignored
        return result

    async def health(self) -> Any:
        return {"ok": True}


_BEARER = HTTPBearer(auto_error=False, description="An API key from `loyalty-mail api-keys create`")


def _bad_key() -> ApiError:
    return ApiError(401, "unknown or revoked API key", headers={"WWW-Authenticate": "Bearer"})


def _presented_key(header: str) -> str | None:
    """The key in `Bearer KEY`, or in `Basic base64(KEY:)` (how Segment sends a write key)."""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() == "bearer":
        return value.strip() or None
    if scheme.lower() == "basic":
        try:
            user, _, _ = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return user or None
    return None


def _check_json_type(content_type: str | None) -> None:
    """415 for a body whose Content-Type names something else than JSON (`application/json` or
    `application/*+json`, any parameters). No Content-Type at all is read as JSON: such a request
    makes no claim about its body, and one that is not JSON gets the parser's 400."""
    if content_type is None:
        return
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/json" or (media.startswith("application/") and media.endswith("+json")):
        return
    said = shown(content_type.strip()) if content_type.strip() else "nothing (an empty Content-Type)"
    hint = (" (what `curl -d` sends unless given -H 'Content-Type: application/json')"
            if media == "application/x-www-form-urlencoded" else "")
    raise ApiError(415, f"the body must be JSON sent with `Content-Type: application/json`; this request's "
                        f"Content-Type is {said}{hint}")


def _items(body: Any, key: str) -> list[Any]:
    if not isinstance(body, dict) or not isinstance(body.get(key), list):
        raise ApiError(422, f"the body must be a JSON object with a \"{key}\" array", [
            ingest.ItemError(0, key, None, f"an array of at most {ingest.MAX_ITEMS:,} objects",
                             "is missing or not an array").as_dict()])
    items: list[Any] = body[key]
    _check_count(items)
    return items


def _check_count(items: list[Any]) -> None:
    if len(items) > ingest.MAX_ITEMS:
        raise ApiError(422, f"{len(items):,} items in one request; at most {ingest.MAX_ITEMS:,} are allowed: "
                       "split the batch")
    if not items:
        raise ApiError(422, "the batch is empty")


def _flow(flow: FlowExplanation) -> dict[str, Any]:
    return {
        "flow": flow.flow, "trigger": flow.trigger, "template": flow.template,
        "due": [{"occurrence": s.occurrence.key, "reason": s.reason, "scheduled_for": s.scheduled_for,
                 "deferred": s.deferred} for s in flow.due],
        "skipped": [{"occurrence": s.occurrence.key, "reason": s.reason} for s in flow.skipped],
        "recorded": [{"occurrence": r.occurrence_key, "state": r.state, "scheduled_for": r.scheduled_for,
                      "reason": r.reason} for r in flow.recorded],
        "already": flow.already, "reason": flow.reason,
    }


def create_app(settings: Settings, engine: sa.Engine, clock: Clock) -> FastAPI:
    """The API for one program and database."""
    api = Api(settings, engine, clock)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        with tuned_for_serving():
            yield
        await run_in_threadpool(api.writer.close)  # what was queued is written and answered

    app = FastAPI(title="loyalty-mail API", version="1", docs_url=None, openapi_url="/openapi.json",
                  redoc_url=None, default_response_class=AsciiJSON, lifespan=lifespan)
    add_docs(app, "/openapi.json", app.title)
    app.state.writer = api.writer
    member, event, message = (m.model_json_schema() for m in (MemberIn, EventIn, SegmentMessage))
    routes: list[tuple[str, str, Callable[..., Awaitable[Any]], str | None, dict[str, Any] | None]] = [
        # method, path, handler, scope, documented body
        # `:path`: an id with a `/` in it (which imports accept) is sent as %2F and still reached
        ("PUT", "/v1/members/{member_id:path}", api.put_member, "ingest", body_schema(member)),
        ("POST", "/v1/members/batch", api.members_batch, "ingest", body_schema(member, batch_key="members")),
        ("POST", "/v1/members/{member_id:path}/unsubscribe", api.unsubscribe, "ingest", None),
        ("GET", "/v1/members/{member_id:path}", api.get_member, "read", None),
        ("POST", "/v1/events", api.post_events, "ingest", body_schema(event, one_or_many=True)),
        ("POST", "/v1/segment/identify", api.segment_identify, "ingest", body_schema(message)),
        ("POST", "/v1/segment/track", api.segment_track, "ingest", body_schema(message)),
        ("POST", "/v1/segment/batch", api.segment_batch, "ingest", body_schema(message, batch_key="batch")),
        ("GET", "/health", api.health, None, None),
    ]
    # the handlers that write through Api.apply, which looks at the key again in the write
    through_apply = {api.put_member, api.members_batch, api.post_events, api.segment_identify, api.segment_track,
                     api.segment_batch}
    one_event = {api.post_events, api.segment_track}  # may answer 409 (see Api.apply)
    for method, path, handler, scope, body in routes:
        checked_in_write = handler in through_apply
        responses = {**ERROR_RESPONSES, **(BODY_ERROR_RESPONSES if body else {}),
                     **(EVENT_ERROR_RESPONSES if handler in one_event else {})} if scope else None
        app.add_api_route(path, handler, methods=[method], openapi_extra=body, responses=responses,
                          dependencies=[api.authorized(scope, checked_in_write=checked_in_write)] if scope else [],
                          summary=(handler.__doc__ or handler.__name__.replace("_", " ")).strip())
    _handle_errors(app)
    app.add_middleware(BodyLimit, limit=settings.api.max_body_bytes)
    return app


def _handle_errors(app: FastAPI) -> None:
    async def api_error(_request: Request, exc: Exception) -> AsciiJSON:
        assert isinstance(exc, ApiError)
        return _error(exc.status, exc.message, exc.errors, exc.headers)

    async def invalid_request(_request: Request, exc: Exception) -> AsciiJSON:
        assert isinstance(exc, RequestValidationError)
        errors = [{"index": None, "field": ".".join(str(p) for p in e.get("loc", ())[1:]),
                   "found": e.get("input") if isinstance(e.get("input"), (str, int, float, bool)) else None,
                   "allowed": e.get("msg", ""), "message": e.get("msg", "")} for e in exc.errors()]
        return _error(422, "the request's parameters are invalid", errors)

    async def http_error(_request: Request, exc: Exception) -> AsciiJSON:
        assert isinstance(exc, StarletteHTTPException)
        return _error(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    async def not_found(_request: Request, exc: Exception) -> AsciiJSON:
        return _error(404, str(exc))

    async def user_error(_request: Request, exc: Exception) -> AsciiJSON:
        return _error(422, str(exc))

    async def database_down(_request: Request, exc: Exception) -> AsciiJSON:
        log.error("database unavailable: %s", type(exc).__name__)
        return _error(503, "the database is unavailable or busy; retry later", headers={"Retry-After": "5"})

    async def bug(_request: Request, exc: Exception) -> AsciiJSON:
        log.error("internal error", exc_info=exc)
        return _error(500, "internal error (a bug in loyalty-mail; the server log has the details)")

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(NotFound, not_found)
    app.add_exception_handler(LoyaltyMailError, user_error)
    app.add_exception_handler(sa.exc.OperationalError, database_down)
    app.add_exception_handler(Exception, bug)

"""The studio's HTTP routes, all in ROUTES; pages are rendered on the server from templates/.

Every page subscribes to /events (server-sent events): when a program file changes, the page
fetches itself again and swaps its `data-live` part. Nothing here writes a program file; the
only POST sends one test message.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode
from zoneinfo import ZoneInfo

import jinja2
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Route

from .. import outbox
from ..errors import LoyaltyMailError, Problem
from ..instants import local_text
from ..members import find_members, member_profile
from ..reports import FIRST_DAY, LAST_DAY, configured_journeys
from ..reports import page as report_page
from ..transports import transport_for
from ..trial_send import check_locale, check_recipient, sample_member_for, send_test
from . import emails, flows, segments
from .program import ProgramState, Workspace
from .renders import RenderPending, Renders
from .security import Access, TokenGuard

log = logging.getLogger("loyalty_mail.studio")
TEMPLATES = Path(__file__).with_name("templates")
STATIC = Path(__file__).with_name("static")
HEARTBEAT_SECONDS = 15.0
MAX_FORM_BYTES = 16_384
MAX_SEARCH = 200  # characters of a member search
KEPT_OUTCOMES = 20
CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' https: http: data:; "
       "frame-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'self'")
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'"


class Studio:
    """The routes' shared parts: the workspace, the access token, the page templates."""

    def __init__(self, workspace: Workspace, access: Access, renders: Renders | None = None) -> None:
        self.workspace, self.access = workspace, access
        self.renders = renders or Renders()  # renders run there, outside the lock, bounded in time
        self.sent: dict[str, tuple[bool, str, str]] = {}  # test sends' outcomes: ok, message, address
        self.lock = threading.RLock()  # one request at a time reads the program state and the database
        self.pages = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                                        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        self.pages.filters["number"] = lambda n: f"{n:,}" if isinstance(n, int) else n
        self.pages.filters["on_clock"] = local_text   # `2026-11-24 08:00 +07`, as `explain` shows instants

    def page(self, name: str, state: ProgramState, code: int = 200, **values: Any) -> HTMLResponse:
        """A page showing `state`: the version it names is the one its data came from, so that the
        live reload catches any save made while it was being built."""
        body = self.pages.get_template(name).render(csrf=self.access.csrf_token, at=self.workspace.at,
                                                    now=self.workspace.now(), version=state.version,
                                                    program=state.settings.program.name if state.settings else "",
                                                    config_problems=state.problems, database=self.workspace.database,
                                                    no_members=not self.workspace.has_members(), **values)
        return HTMLResponse(body, status_code=code, headers=_page_headers())

    # -- emails ------------------------------------------------------------------------------

    def emails_index(self, request: Request) -> Response:
        with self.lock:
            state = self.workspace.state()
            entries, problems = emails.email_list(state)
            if entries and not problems:
                first = entries[0]
                return RedirectResponse(f"/emails/{first.email}/{first.locale}", status_code=303)
            return self.page("emails.html", state, entries=entries, problems=problems, preview=None, query="",
                             found=[], member_id="", current=None)

    def email_page(self, request: Request) -> Response:
        email, locale = request.path_params["email"], request.path_params["locale"]
        member_id = request.query_params.get("member", "").strip()
        query = request.query_params.get("q", "").strip()
        with self.lock:
            state = self.workspace.state()
            entries, problems = emails.email_list(state)
            if not problems and (email, locale) not in {(e.email, e.locale) for e in entries}:
                return self.page("error.html", state, code=404, title="No such email", section="Emails",
                                 problems=[Problem(None, f"no email '{email}' in locale '{locale}'")])
            found: list[dict[str, Any]] = []
            if len(query) > MAX_SEARCH:
                raise LoyaltyMailError(f"the search has {len(query):,} characters: at most {MAX_SEARCH} "
                                       "(an id or the beginning of an email address)")
            if query:
                with self.workspace.engine().connect() as connection:
                    found = find_members(connection, query, limit=10)
        shown = self._preview(state, email, locale, member_id)
        with self.lock:
            sent = self.sent.get(request.query_params.get("sent", ""))
            return self.page("emails.html", state, entries=entries, problems=problems, preview=shown, query=query,
                             found=found, member_id=member_id, current=(email, locale),
                             sent=sent[:2] if sent else None, to=sent[2] if sent else "")

    def _preview(self, state: ProgramState, email: str, locale: str, member_id: str) -> emails.EmailPreview:
        """The preview, rendered on the render thread; if it takes too long, that is its problem."""
        now = self.workspace.now()
        try:
            return self.renders.run(("preview", state.version, email, locale, member_id), lambda: emails.preview(
                state, self.workspace.engine(), email, locale, member_id or None, now))
        except RenderPending as exc:
            return emails.EmailPreview(email, locale, problems=[Problem(None, str(exc))])

    # -- segments ----------------------------------------------------------------------------

    def segments_index(self, request: Request) -> Response:
        with self.lock:
            state = self.workspace.state()
            if state.settings is None:
                return self.page("segments.html", state, rows=[], problems=state.problems, view=None)
            rows, problems = segments.segment_counts(self.workspace, state)
            return self.page("segments.html", state, rows=rows, problems=problems, view=None)

    def segment_page(self, request: Request) -> Response:
        name = request.path_params["name"]
        with self.lock:
            state = self.workspace.state()
            if state.settings is None:
                return self.page("segments.html", state, rows=[], problems=state.problems, view=None)
            catalog, problems = state.segments()
            rows = [(segment, None) for _, segment in sorted(catalog.segments.items())]  # counts: on /segments
            view = segments.segment_view(self.workspace, state, name)
            known = name in catalog.segments or any(p.location is not None for p in view.problems)
            return self.page("segments.html", state, 200 if known else 404, rows=rows, problems=problems, view=view)

    # -- flows -------------------------------------------------------------------------------

    def flows_page(self, request: Request) -> Response:
        query = request.query_params.get("member", "").strip()
        with self.lock:
            state = self.workspace.state()
            if state.settings is None:
                return self.page("flows.html", state, view=None)
            return self.page("flows.html", state, view=flows.flows_view(self.workspace, state, query))

    # -- outbox and reports ------------------------------------------------------------------

    def outbox_page(self, request: Request) -> Response:
        with self.lock, self.workspace.engine().connect() as connection:
            state = self.workspace.state()
            status = outbox.status(connection, self.workspace.now(), recent=20)
        return self.page("outbox.html", state, status=status)

    def _period(self, request: Request, state: ProgramState) -> tuple[date, date, ZoneInfo, Any]:
        if state.settings is None:
            raise LoyaltyMailError("config.yaml does not load: " + "; ".join(map(str, state.problems)))
        zone = ZoneInfo(state.settings.program.default_timezone)
        today = self.workspace.now().astimezone(zone).date()
        until = _day(request.query_params.get("until"), "until") or today
        since = _day(request.query_params.get("since"), "since") or until - timedelta(days=29)
        if since > until:
            raise LoyaltyMailError("the first day (since) is after the last day (until)")
        return since, until, zone, state.settings

    def reports_page(self, request: Request) -> Response:
        with self.lock:
            state = self.workspace.state()
            try:
                since, until, _, _ = self._period(request, state)
            except LoyaltyMailError as exc:  # the form stays, with what was typed, to correct it
                return self.page("reports.html", state, code=400, since=request.query_params.get("since", ""),
                                 until=request.query_params.get("until", ""), problem=str(exc))
        return self.page("reports.html", state, since=since.isoformat(), until=until.isoformat(), problem=None)

    def report_document(self, request: Request) -> Response:
        with self.lock:
            since, until, zone, settings = self._period(request, self.workspace.state())
            with self.workspace.engine().connect() as connection:
                data = report_page.collect(
                    connection, program=settings.program.name, currency=settings.program.currency, since=since,
                    until=until, start=datetime.combine(since, time(), tzinfo=zone),
                    end=datetime.combine(until + timedelta(days=1), time(), tzinfo=zone),
                    window=settings.reports.attribution_window, clv_years=float(settings.segments.clv_years),
                    generated_at=self.workspace.now(), tier_order=[level.name for level in settings.tiers.levels],
                    journeys=configured_journeys(settings))
            return HTMLResponse(report_page.render_page(data),
                                headers={"content-security-policy": REPORT_CSP, "cache-control": "no-store"})

    # -- send test ---------------------------------------------------------------------------

    async def send_test_post(self, request: Request) -> Response:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                return PlainTextResponse("the form is too large", status_code=413)
        form = dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))
        values = {key: form.get(key, "").strip() for key in ("csrf", "email", "locale", "to", "member")}
        if not self.access.csrf_ok(values["csrf"]):
            return PlainTextResponse("the form's CSRF token is missing or wrong: reload the page", status_code=403)
        return await asyncio.to_thread(self._send_test, values)

    def _send_test(self, values: dict[str, str]) -> Response:
        email, locale, to, member_id = values["email"], values["locale"], values["to"], values["member"]
        with self.lock:
            state = self.workspace.state()
        try:
            check_recipient(to)
            check_locale(state.renderer(), locale)
            now = self.workspace.now()
            sent = self.renders.run(("send", email, locale, to, member_id, now, object()),
                                    lambda: self._send(state, email, locale, to, member_id, now))
        except LoyaltyMailError as exc:
            sent = (False, str(exc))
        program = state.settings.program if state.settings is not None else None
        if program is not None and locale not in program.locales:
            locale = program.default_locale  # the page of a locale the program has
        return self._show_sent(email, locale, member_id, (*sent, to))

    def _show_sent(self, email: str, locale: str, member_id: str, sent: tuple[bool, str, str]) -> Response:
        """Post, redirect, get: back to the email's page, which shows the outcome (kept for the
        last few sends, so a reload or a live refresh shows it again and never sends again)."""
        key = secrets.token_urlsafe(9)
        with self.lock:
            self.sent[key] = sent
            while len(self.sent) > KEPT_OUTCOMES:
                self.sent.pop(next(iter(self.sent)))
        query = urlencode({**({"member": member_id} if member_id else {}), "sent": key})
        return RedirectResponse(f"/emails/{quote(email, safe='')}/{quote(locale, safe='')}?{query}", status_code=303)

    def _send(self, state: ProgramState, email: str, locale: str, to: str, member_id: str,
              now: datetime) -> tuple[bool, str]:
        renderer = state.renderer()
        if member_id:
            with self.workspace.engine().connect() as connection:
                member = member_profile(connection, member_id, recent=0).member
        else:
            member = sample_member_for(renderer, email, locale, now)
        assert state.settings is not None  # renderer() raised otherwise
        transport = transport_for(state.settings)
        try:
            message, result = send_test(renderer, transport, email, member, to, locale=locale, now=now)
        finally:
            transport.close()
        return True, (f"Sent '{message.subject}' to {to} through {transport.name}, marked as a test"
                      + (f" ({result.detail})" if result.detail else "") + ".")

    # -- live reload -------------------------------------------------------------------------

    async def events(self, request: Request) -> Response:
        watcher = self.workspace.watcher
        start = request.query_params.get("version", "")
        version = int(start) if start.isascii() and start.isdigit() and len(start) <= 18 else watcher.version

        async def stream() -> AsyncIterator[str]:
            nonlocal version
            yield "retry: 500\n\n"
            if version != watcher.version:
                version = watcher.version
                yield f"event: change\ndata: {version}\n\n"
            while not await request.is_disconnected():
                seen = await watcher.changed(version, HEARTBEAT_SECONDS)
                if seen != version:
                    version = seen
                    yield f"event: change\ndata: {version}\n\n"
                else:
                    yield ": still here\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"cache-control": "no-store", "x-accel-buffering": "no"})

    def script(self, request: Request) -> Response:
        return Response((STATIC / "studio.js").read_bytes(), media_type="text/javascript",
                        headers={"cache-control": "no-store"})

    def style(self, request: Request) -> Response:
        return Response((STATIC / "studio.css").read_bytes(), media_type="text/css",
                        headers={"cache-control": "no-store"})

    def routes(self) -> list[BaseRoute]:
        def sync(handler: Callable[[Request], Response]) -> Callable[[Request], Any]:
            async def endpoint(request: Request) -> Response:
                return await asyncio.to_thread(handler, request)
            return endpoint

        return [
            Route("/", lambda request: RedirectResponse("/emails", status_code=303)),
            Route("/emails", sync(self.emails_index)),
            Route("/emails/{email}/{locale}", sync(self.email_page)),
            Route("/segments", sync(self.segments_index)),
            Route("/segments/{name}", sync(self.segment_page)),
            Route("/flows", sync(self.flows_page)),
            Route("/outbox", sync(self.outbox_page)),
            Route("/reports", sync(self.reports_page)),
            Route("/reports/page", sync(self.report_document)),
            Route("/send-test", self.send_test_post, methods=["POST"]),
            Route("/events", self.events),
            Route("/static/studio.js", self.script),
            Route("/static/studio.css", self.style),
        ]


def create_app(workspace: Workspace, access: Access, *, hosts: tuple[str, ...] | None,
               renders: Renders | None = None) -> Any:
    """The studio as an ASGI app, behind the token guard (hosts: the Host names it answers to, None: any;
    renders: how long a page waits for a render, by default RENDER_SECONDS)."""
    studio = Studio(workspace, access, renders)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        workspace.watcher.start()
        try:
            yield
        finally:
            studio.renders.closing.set()  # a page waiting for a render answers now
            await workspace.watcher.stop()

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.router.routes.extend(studio.routes())

    @app.exception_handler(LoyaltyMailError)
    async def user_error(request: Request, exc: LoyaltyMailError) -> Response:
        section = request.url.path.strip("/").split("/")[0].capitalize()  # its tab stays highlighted
        return await asyncio.to_thread(lambda: studio.page(
            "error.html", workspace.state(), 400, title="That did not work", section=section,
            problems=list(getattr(exc, "problems", None) or [Problem(None, str(exc))])))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        return PlainTextResponse(str(exc.detail), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def bug(_request: Request, exc: Exception) -> Response:
        log.error("studio: internal error", exc_info=exc)
        return HTMLResponse(BUG_PAGE, status_code=500, headers=_page_headers())

    return TokenGuard(app, access, hosts)


BUG_PAGE = ("<!doctype html><meta charset=utf-8><title>Internal error</title><h1>Internal error</h1>"
            "<p>This is a bug in loyalty-mail studio; the terminal shows what happened. Please report it. "
            '<a href="/emails">Back to the studio</a></p>')


def _page_headers() -> dict[str, str]:
    return {"content-security-policy": CSP, "cache-control": "no-store", "x-content-type-options": "nosniff",
            "referrer-policy": "no-referrer"}


def _day(value: str | None, name: str) -> date | None:
    if not value:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise LoyaltyMailError(f"{name}: '{value}' is not a date (YYYY-MM-DD)") from None
    if not FIRST_DAY <= day <= LAST_DAY:
        raise LoyaltyMailError(f"{name}: {day} is out of range (a day from {FIRST_DAY} to {LAST_DAY})")
    return day

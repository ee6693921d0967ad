"""The tracking service: one route table for opens, clicks, unsubscribes, SendGrid's Event
Webhook and health. Public endpoints: every token is verified, bad input is a 4xx, never a 500,
and a click only ever redirects to the URL inside a token we signed.

    GET  /o/{token}.gif        open pixel (1x1 GIF, no-cache), once the hit is committed (not for HEAD)
    GET  /c/{token}            click: 302 to the signed URL, once the hit is committed (not for HEAD)
    GET  /u/{token}            unsubscribe page (vi/en): leave the email's topic (or all email), with
                               a link to the preferences
    POST /u/{token}            unsubscribe now: RFC 8058 `List-Unsubscribe=One-Click` (urlencoded or
                               multipart/form-data) leaves the email's topic (all email when it has
                               none); the page's button (signed form)
    GET  /p/{token}            the preference centre: topics on and off, pause, unsubscribe from all
    POST /p/{token}            save it (signed form token; then 303 back to the page)
    GET  /k/{token}            double opt-in: a page with a button to confirm the address
    POST /k/{token}            confirm it (signed form token)
    GET  /v/{token}            the email in the browser: rendered again from the ledger (its template,
                               flow and occurrence, the member as stored), signed links, no open pixel
    POST /webhooks/sendgrid    verified, de-duplicated provider events; 200 once committed, with any
                               events kept aside (and why)
    GET  /health               liveness and the hit writer's state; 503 when writing is stuck
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import asynccontextmanager
from functools import partial
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from ..config import Settings
from . import forms, store
from ..consent import PAUSE_DAYS
from ..errors import LoyaltyMailError
from ..rendering import Renderer
from ..signing import BadToken, Kind, TokenClaims, TokenSigner
from ..service_tuning import tuned_for_serving
from .pages import NO_CACHE, Page
from . import pages
from .webhooks import SendGridWebhook, WebhookRejected

log = logging.getLogger("loyalty_mail.tracking")
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
FORM_AGE = timedelta(days=1)  # how long a page's form may be posted after it was shown
def create_app(settings: Settings, engine: sa.Engine, clock: Callable[[], datetime]) -> Starlette:
    tracking = settings.tracking
    if not tracking.secret:
        raise ValueError("tracking.secret is not set (export LOYALTY_MAIL_SECRET)")
    signer = TokenSigner(tracking.secret)
    webhook = (SendGridWebhook(tracking.sendgrid_webhook_key, tracking.webhook_tolerance)
               if tracking.sendgrid_webhook_key else None)
    program = settings.program.name
    default_locale = settings.program.default_locale
    topic_defaults = {topic.name: topic.default for topic in settings.topics}
    own_origin = "/".join(tracking.base_url.split("/")[:3])
    write_timeout = tracking.write_timeout.total_seconds()
    waiting: dict[Future[None], asyncio.Future[None]] = {}  # a commit group -> what its requests await
    state: dict[str, Any] = {}
    rendering = threading.Lock()

    @asynccontextmanager
    async def lifespan(app: Starlette):  # noqa: ANN202
        state["writer"] = store.HitWriter(engine, tracking.bot_click_seconds, tracking.write_timeout)
        with tuned_for_serving():
            log.info("tracking service ready")
            yield
        await run_in_threadpool(state["writer"].close)
        log.info("tracking service stopped; %d hits written", state["writer"].written)

    async def record(hit: store.Hit) -> None:
        """Wait until the hit is committed (group commit), or for `tracking.write_timeout`: past
        that the reader is answered anyway, the hit stays queued and /health reports the writer
        stuck."""
        group = state["writer"].add(hit)
        done = waiting.get(group)
        if done is None:  # the first hit of its group: one wake-up of the loop per commit
            done = waiting[group] = asyncio.get_running_loop().create_future()
            group.add_done_callback(partial(_wake, done.get_loop(), done, waiting, group))
        finished, _ = await asyncio.wait({done}, timeout=write_timeout)
        if not finished:
            log.warning("a %s hit was answered before it was written: the database is slow or away",
                        hit.kind)

    def client(request: Request) -> tuple[str | None, str | None]:
        agent = request.headers.get("user-agent")
        return (agent[:500] if agent else None), (request.client.host if request.client else None)

    async def open_pixel(request: Request) -> Response:
        try:
            claims = signer.verify(request.path_params["token"], "open")
        except BadToken:
            return PlainTextResponse("not found", status_code=404)
        if request.method != "HEAD":  # a HEAD is a link checker or a proxy, not a reader
            agent, ip = client(request)
            await record(store.Hit("open", claims.send_id, clock(), user_agent=agent, ip=ip))
        return Response(PIXEL, media_type="image/gif", headers=NO_CACHE)

    async def click(request: Request) -> Response:
        try:
            claims = signer.verify(request.path_params["token"], "click")
        except BadToken:
            return PlainTextResponse("not found", status_code=404)
        if not claims.url or not claims.url.lower().startswith(("http://", "https://")):
            return PlainTextResponse("not found", status_code=404)
        if request.method != "HEAD":
            agent, ip = client(request)
            await record(store.Hit("click", claims.send_id, clock(), url=claims.url, link=claims.link,
                                   user_agent=agent, ip=ip))
        return RedirectResponse(claims.url, status_code=302, headers=NO_CACHE)

    async def recipient_of(request: Request, *kinds: Kind) -> tuple[str, dict[str, Any]] | None:
        """The send id of the path's token (of one of `kinds`) and who the send went to, or None."""
        for kind in kinds:
            try:
                send_id = signer.verify(request.path_params["token"], kind).send_id
            except BadToken:
                continue
            who = await run_in_threadpool(store.recipient, engine, send_id)
            return (send_id, who) if who else None
        return None

    def topic_label(who: dict[str, Any]) -> str | None:
        """The label of the topic of the send `who` received, in the member's language."""
        locale = who["locale"]
        topic = settings.topic(settings.send_topic(who["flow"], who["occurrence"]))
        return topic.label_for(locale or default_locale, default_locale) if topic else None

    def read_form(request: Request, body: bytes | None) -> dict[str, list[str]] | None:
        """The fields of the posted body, or None when it is larger than allowed; BadForm when it
        cannot be read (too many fields)."""
        return None if body is None else forms.parse_form(request.headers.get("content-type"), body)

    def from_our_page(request: Request, form: dict[str, list[str]] | None, send_id: str) -> bool:
        """Whether the form was posted from one of our pages: same origin, signed form token."""
        origin = request.headers.get("origin")
        if form is None or origin and origin not in (own_origin, f"{request.url.scheme}://{request.url.netloc}"):
            return False
        try:
            signer.verify_form((form.get("form") or [""])[0], send_id, clock(), FORM_AGE)
        except BadToken:
            return False
        return True

    async def unsubscribe_page(request: Request) -> Response:
        found = await recipient_of(request, "unsubscribe")
        if found is None:
            return Page(None, program).message("unsubscribe", "unknown", 404)
        send_id, who = found
        page = Page(who["locale"], program, who["email"])
        if not who["subscribed"]:
            return page.message("unsubscribe", "done")
        preferences_url = f"/p/{signer.sign(TokenClaims('preferences', send_id))}"
        return pages.unsubscribe_page(page, request.url.path, signer.sign_form(send_id, clock()),
                                      topic_label(who), preferences_url)

    async def unsubscribe_now(request: Request) -> Response:
        """RFC 8058 one-click, `List-Unsubscribe=One-Click` urlencoded or as a multipart/form-data
        field (the email's topic, or all email when it has none), or the page's button."""
        found = await recipient_of(request, "unsubscribe")
        if found is None:
            return Page(None, program).message("unsubscribe", "unknown", 404)
        send_id, who = found
        page = Page(who["locale"], program, who["email"])
        topic = settings.send_topic(who["flow"], who["occurrence"])
        try:
            form = read_form(request, await _limited_body(request, 10_000))
        except forms.BadForm as exc:
            return page.message("unsubscribe", exc.key, 400)
        if form is None or not from_our_page(request, form, send_id):
            if form is None or "One-Click" not in form.get("List-Unsubscribe", []):
                return page.message("unsubscribe", "expired", 403)
            await run_in_threadpool(store.unsubscribe, engine, send_id, clock(), "one-click",
                                    topic, topic_defaults)
            return PlainTextResponse("unsubscribed", headers=NO_CACHE)
        leave_topic = topic is not None and (form.get("leave") or [""])[0] == "topic"
        await run_in_threadpool(store.unsubscribe, engine, send_id, clock(), "link",
                                topic if leave_topic else None, topic_defaults)
        if leave_topic:
            return page.message("unsubscribe", "left", topic=topic_label(who) or "")
        return page.message("unsubscribe", "done")

    async def preferences_page(request: Request) -> Response:
        found = await recipient_of(request, "preferences", "unsubscribe")
        if found is None:
            return Page(None, program).message("preferences", "unknown", 404)
        send_id, who = found
        page = Page(who["locale"], program, who["email"])
        if not who["subscribed"]:
            return page.message("preferences", "done")
        now = clock()
        chosen = await run_in_threadpool(store.preferences, engine, who["member_ref"], topic_defaults)
        assert chosen is not None
        saved = request.query_params.get("saved") == "1"
        return pages.preferences_page(page, request.url.path, signer.sign_form(send_id, now),
                                      settings.topics, chosen.topics,
                                      chosen.paused_until if chosen.paused(now) else None,
                                      default_locale, note="saved" if saved else None)

    async def preferences_save(request: Request) -> Response:
        found = await recipient_of(request, "preferences", "unsubscribe")
        if found is None:
            return Page(None, program).message("preferences", "unknown", 404)
        send_id, who = found
        page = Page(who["locale"], program, who["email"])
        try:
            form = read_form(request, await _limited_body(request, 10_000))
        except forms.BadForm as exc:
            return page.message("preferences", exc.key, 400)
        if form is None or not from_our_page(request, form, send_id):
            return page.message("preferences", "expired", 403)
        action = (form.get("do") or ["save"])[0]
        pause = (form.get("pause") or ["keep"])[0]
        if action not in ("save", "unsubscribe_all") or pause not in ("keep", "resume", *map(str, PAUSE_DAYS)):
            return page.message("preferences", "bad_choice", 400)
        if not who["subscribed"]:  # unsubscribed from all meanwhile: there is nothing to choose
            return page.message("preferences", "done")
        if action == "unsubscribe_all":
            await run_in_threadpool(store.unsubscribe, engine, send_id, clock(), "link")
            return page.message("preferences", "done")
        wanted = set(form.get("topic", []))
        chosen = {name: name in wanted for name in topic_defaults}
        await run_in_threadpool(store.save_preferences, engine, who["member_ref"], chosen, pause,
                                topic_defaults, clock())
        return RedirectResponse(f"{request.url.path}?saved=1", status_code=303, headers=NO_CACHE)

    async def confirm_page(request: Request) -> Response:
        found = await recipient_of(request, "confirm")
        if found is None:
            return Page(None, program).message("confirm", "unknown", 404)
        send_id, who = found
        page = Page(who["locale"], program, who["email"])
        if who["unconfirmed_since"] is None:
            return page.message("confirm", "confirmed")
        return pages.confirm_page(page, request.url.path, signer.sign_form(send_id, clock()))

    async def confirm_now(request: Request) -> Response:
        found = await recipient_of(request, "confirm")
        if found is None:
            return Page(None, program).message("confirm", "unknown", 404)
        send_id, who = found
        page = Page(who["locale"], program, who["email"])
        try:
            form = read_form(request, await _limited_body(request, 10_000))
        except forms.BadForm as exc:
            return page.message("confirm", exc.key, 400)
        if not from_our_page(request, form, send_id):
            return page.message("confirm", "expired", 403)
        await run_in_threadpool(store.confirm, engine, who["member_ref"], clock())
        return page.message("confirm", "confirmed")

    async def view_in_browser(request: Request) -> Response:
        """Not an open: the page has the email's signed links but no pixel, and records nothing."""
        try:
            send_id = signer.verify(request.path_params["token"], "view").send_id
        except BadToken:
            return Page(None, program).message("preferences", "unknown", 404)
        found = await run_in_threadpool(store.sent_email, engine, send_id)
        if found is None:
            return Page(None, program).message("preferences", "unknown", 404)
        try:
            html_body = await run_in_threadpool(render_again, send_id, *found)
        except LoyaltyMailError as exc:
            log.warning("send %s could not be shown in the browser: %s", send_id, exc)
            return Page(found[1]["locale"], program).message("preferences", "unknown", 404)
        return HTMLResponse(html_body, headers={**NO_CACHE, "X-Robots-Tag": "noindex"})

    def render_again(send_id: str, send: dict[str, Any], member: dict[str, Any]) -> str:
        with rendering:  # one render at a time: a renderer's limits are per render
            if "renderer" not in state:
                state["renderer"] = Renderer.for_program(settings, signer=signer)
            email = state["renderer"].render(
                send["template"], member, now=send["sent_at"] or send["scheduled_for"], send_id=send_id,
                flow={"name": send["flow"]}, occurrence=send["occurrence"], open_pixel=False)
        return email.html

    async def sendgrid_events(request: Request) -> Response:
        if webhook is None:
            return JSONResponse({"error": "the SendGrid webhook is not configured"}, status_code=404)
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return JSONResponse({"error": "expected application/json"}, status_code=415)
        body = await _limited_body(request, tracking.max_body_bytes)
        if body is None:
            return JSONResponse({"error": f"body larger than {tracking.max_body_bytes} bytes"}, status_code=413)
        try:
            events = webhook.parse({k.lower(): v for k, v in request.headers.items()}, body, clock())
        except WebhookRejected as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        done = await run_in_threadpool(store.record_events, engine, events, clock())
        if done.rejected:
            log.warning("webhook: %d of %d events kept aside: %s", len(done.rejected), len(events),
                        done.rejected[0].reason)
        return JSONResponse({"received": len(events), "new": done.new,
                             "suppressed": done.suppressed, "rejected": len(done.rejected),
                             "rejections": [{"index": r.index, "reason": r.reason} for r in done.rejected[:20]]})

    async def health(request: Request) -> Response:
        writer = state["writer"].status(time.monotonic())
        body = {"status": "stuck" if writer.stuck else "ok", "writer": dataclasses.asdict(writer)}
        return JSONResponse(body, status_code=503 if writer.stuck else 200, headers=NO_CACHE)

    routes = [
        Route("/o/{token}.gif", open_pixel, methods=["GET"]),
        Route("/c/{token}", click, methods=["GET"]),
        Route("/u/{token}", unsubscribe_page, methods=["GET"]),
        Route("/u/{token}", unsubscribe_now, methods=["POST"]),
        Route("/p/{token}", preferences_page, methods=["GET"]),
        Route("/p/{token}", preferences_save, methods=["POST"]),
        Route("/k/{token}", confirm_page, methods=["GET"]),
        Route("/k/{token}", confirm_now, methods=["POST"]),
        Route("/v/{token}", view_in_browser, methods=["GET"]),
        Route("/webhooks/sendgrid", sendgrid_events, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def _wake(loop: asyncio.AbstractEventLoop, done: asyncio.Future[None],
          waiting: dict[Future[None], asyncio.Future[None]], group: Future[None], _: Future[None]) -> None:
    """Called on the writer's thread when a group is committed: resolve its awaitable on the loop."""
    def resolve() -> None:
        waiting.pop(group, None)
        if not done.done():
            done.set_result(None)
    try:
        loop.call_soon_threadsafe(resolve)
    except RuntimeError:  # the loop is closed (the service stopped): nobody is waiting any more
        pass


async def _limited_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None when it is larger than `limit` (read no further than that)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)

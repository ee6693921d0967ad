"""The tracking service: one route table for opens, clicks, unsubscribes, SendGrid's Event
Webhook and health. Public endpoints: every token is verified, bad input is a 4xx, never a 500,
and a click only ever redirects to the URL inside a token we signed.

    GET  /o/{token}.gif        open pixel (1x1 GIF, no-cache), once the hit is committed (not for HEAD)
    GET  /c/{token}            click: 302 to the signed URL, once the hit is committed (not for HEAD)
    GET  /u/{token}            unsubscribe confirmation page (vi/en), with a button
    POST /u/{token}            unsubscribe now (RFC 8058 `List-Unsubscribe=One-Click`, or the button)
    GET  /p/{token}            preferences: the same page (there is one list to leave)
    POST /webhooks/sendgrid    verified, de-duplicated provider events; 200 once committed, with any
                               events kept aside (and why)
    GET  /health               liveness and the hit writer's state; 503 when writing is stuck
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import html
import logging
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import asynccontextmanager
from functools import partial
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from ..config import Settings
from . import store
from ..signing import BadToken, TokenSigner
from .webhooks import SendGridWebhook, WebhookRejected

log = logging.getLogger("loyalty_mail.tracking")
GIL_SWITCH_SECONDS = 0.0005
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_CACHE = {"Cache-Control": "no-store, no-cache, must-revalidate, max-age=0", "Pragma": "no-cache",
            "Expires": "0"}
PAGES = {
    "en": {"title": "Unsubscribe", "ask": "Stop receiving marketing email from {program} at {email}?",
           "button": "Unsubscribe", "done": "You are unsubscribed. {program} will not send you marketing "
           "email at {email} any more.", "unknown": "This link is not valid."},
    "vi": {"title": "Hủy đăng ký", "ask": "Ngừng nhận email tiếp thị từ {program} tại {email}?",
           "button": "Hủy đăng ký", "done": "Bạn đã hủy đăng ký. {program} sẽ không gửi email tiếp thị "
           "đến {email} nữa.", "unknown": "Liên kết này không hợp lệ."},
}


def _page(locale: str | None, key: str, program: str, email: str = "", form: str | None = None,
          status: int = 200) -> HTMLResponse:
    texts = PAGES.get((locale or "").split("_")[0], PAGES["en"])
    message = html.escape(texts[key].format(program=program, email=email))
    button = (f'<form method="post" action="{html.escape(form)}"><button type="submit" '
              f'style="padding:12px 24px;font-size:16px">{html.escape(texts["button"])}</button></form>'
              if form else "")
    body = (f'<!DOCTYPE html><html lang="{html.escape(locale or "en")}"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><title>{html.escape(texts["title"])}'
            f'</title></head><body style="font-family:Arial,sans-serif;max-width:480px;margin:48px auto;'
            f'padding:0 16px"><h1>{html.escape(texts["title"])}</h1><p>{message}</p>{button}</body></html>')
    return HTMLResponse(body, status_code=status, headers=NO_CACHE)


def create_app(settings: Settings, engine: sa.Engine, clock: Callable[[], datetime]) -> Starlette:
    tracking = settings.tracking
    if not tracking.secret:
        raise ValueError("tracking.secret is not set (export LOYALTY_MAIL_SECRET)")
    signer = TokenSigner(tracking.secret)
    webhook = (SendGridWebhook(tracking.sendgrid_webhook_key, tracking.webhook_tolerance)
               if tracking.sendgrid_webhook_key else None)
    program = settings.program.name
    write_timeout = tracking.write_timeout.total_seconds()
    waiting: dict[Future[None], asyncio.Future[None]] = {}  # a commit group -> what its requests await
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette):  # noqa: ANN202
        # The loop and the writer thread share the GIL, and the writer gives it up on every SQLite
        # step: at the default 5 ms switch interval a busy loop holds each hand-back for up to 5 ms,
        # several times a commit, and every request waits for its commit.
        switch = sys.getswitchinterval()
        sys.setswitchinterval(min(switch, GIL_SWITCH_SECONDS))
        state["writer"] = store.HitWriter(engine, tracking.bot_click_seconds, tracking.write_timeout)
        log.info("tracking service ready")
        yield
        await run_in_threadpool(state["writer"].close)
        sys.setswitchinterval(switch)
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

    def unsubscribe_claims(request: Request) -> Any:
        token = request.path_params["token"]
        try:
            return signer.verify(token, "unsubscribe")
        except BadToken:
            try:
                return signer.verify(token, "preferences")
            except BadToken:
                return None

    async def unsubscribe_page(request: Request) -> Response:
        claims = unsubscribe_claims(request)
        member = claims and await run_in_threadpool(store.member_for_send, engine, claims.send_id)
        if not member:
            return _page(None, "unknown", program, status=404)
        if not member["subscribed"]:
            return _page(member["locale"], "done", program, member["email"])
        return _page(member["locale"], "ask", program, member["email"], form=request.url.path)

    async def unsubscribe_now(request: Request) -> Response:
        claims = unsubscribe_claims(request)
        if claims is None:
            return _page(None, "unknown", program, status=404)
        body = await _limited_body(request, 10_000)
        one_click = body is not None and b"List-Unsubscribe=One-Click" in body
        member = await run_in_threadpool(store.unsubscribe, engine, claims.send_id, clock(),
                                         "one-click" if one_click else "page")
        if member is None:
            return _page(None, "unknown", program, status=404)
        if one_click:
            return PlainTextResponse("unsubscribed", headers=NO_CACHE)
        return _page(member["locale"], "done", program, member["email"])

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
        Route("/p/{token}", unsubscribe_page, methods=["GET"]),
        Route("/p/{token}", unsubscribe_now, methods=["POST"]),
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

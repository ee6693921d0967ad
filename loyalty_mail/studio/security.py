"""Who may use the studio: whoever holds the token printed at start-up, from this machine.

The token arrives once in the URL (`/?token=...`, as Jupyter does); the studio answers with an
HttpOnly, SameSite=Strict cookie and a redirect to the same page without it. Every other request
must carry the cookie, else 403: other local users do not know the token, and other web sites
cannot send the cookie. On a loopback address the Host header must name it (DNS rebinding), and a
form that changes something (a POST) must carry the CSRF token derived from the session token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qsl, quote, urlencode

from starlette.types import ASGIApp, Receive, Scope, Send

TOKEN_PARAMETER = "token"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def allowed_hosts(bind: str) -> tuple[str, ...] | None:
    """The Host names a studio listening on `bind` answers to; None: any.

    On a loopback address, only the loopback names: a web page whose name resolves to 127.0.0.1
    (DNS rebinding) is refused. On any other address (0.0.0.0 included) the studio is meant to be
    reached by whatever name or address leads to the machine, so any Host is accepted; the token
    still guards every request, and such a page cannot know it nor send the studio's cookie."""
    if bind in LOOPBACK:
        return tuple(dict.fromkeys((f"[{bind}]" if ":" in bind else bind, *LOCAL_HOSTS)))
    return None


@dataclass(frozen=True)
class Access:
    """The session token, and what is derived from it."""

    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    @property
    def cookie_name(self) -> str:
        """Named after the token, so two studios on one machine (cookies ignore ports) coexist."""
        return "loyalty_mail_studio_" + hashlib.sha256(self.token.encode()).hexdigest()[:12]

    @property
    def csrf_token(self) -> str:
        return hmac.new(self.token.encode(), b"csrf", hashlib.sha256).hexdigest()

    def holds(self, value: str | None) -> bool:
        return value is not None and hmac.compare_digest(value.encode(), self.token.encode())

    def csrf_ok(self, value: str | None) -> bool:
        return value is not None and hmac.compare_digest(value.encode(), self.csrf_token.encode())


class TokenGuard:
    """ASGI middleware: the token (query once, then cookie) or 403; the Host must be allowed.
    Only HTTP requests (and the server's lifespan events) pass."""

    def __init__(self, app: ASGIApp, access: Access, hosts: tuple[str, ...] | None) -> None:
        self.app, self.access, self.hosts = app, access, hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # the server's start and stop, not a request
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":  # the studio has none: refused before it is accepted
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            raise RuntimeError(f"the studio serves HTTP only, not {scope['type']!r}")
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        name = (host.rsplit(":", 1)[0] if not host.endswith("]") else host).lower()
        if self.hosts is not None and name not in self.hosts:
            await _plain(send, 403, f"the studio answers on its own address only, not '{host}'")
            return
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        given = [value for key, value in query if key == TOKEN_PARAMETER]
        if given:
            if not self.access.holds(given[0]):
                await _plain(send, 403, "wrong token: use the URL `loyalty-mail studio` printed")
                return
            rest = urlencode([(k, v) for k, v in query if k != TOKEN_PARAMETER])
            location = same_site_path(scope["path"]) + (f"?{rest}" if rest else "")
            cookie = (f"{self.access.cookie_name}={self.access.token}; HttpOnly; SameSite=Strict; Path=/")
            await send({"type": "http.response.start", "status": 303,
                        "headers": [(b"location", location.encode("latin-1")),
                                    (b"set-cookie", cookie.encode("latin-1")), (b"cache-control", b"no-store")]})
            await send({"type": "http.response.body", "body": b""})
            return
        jar = SimpleCookie()
        try:
            jar.load(headers.get("cookie", ""))
        except CookieError:  # a malformed Cookie header is only a missing token
            jar = SimpleCookie()
        morsel = jar.get(self.access.cookie_name)
        if not self.access.holds(morsel.value if morsel else None):
            await _plain(send, 403, "this studio needs its token: open the URL `loyalty-mail studio` printed")
            return
        await self.app(scope, receive, send)


def same_site_path(path: str) -> str:
    """`path` as a Location on this site: percent-encoded (no control character, only ASCII; a
    backslash too), and starting with a single "/" ("//host/" would send the browser to another site)."""
    return "/" + quote(path, safe="/-._~!$&'()*+,;=:@").lstrip("/")


async def _plain(send: Send, status: int, text: str) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
    await send({"type": "http.response.body", "body": (text + "\n").encode()})

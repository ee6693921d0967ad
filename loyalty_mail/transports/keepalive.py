"""The official SendGrid client's HTTP layer (python_http_client) over kept-alive connections.

The stock `python_http_client.Client` builds a urllib opener for every request (0.47 ms of CPU on
the benchmark machine, a third of what a send cost us) and opens a new connection for each: in
production a TCP and TLS handshake with api.sendgrid.com per message. `KeepAliveClient` keeps the
rest of the library as it is (URL building, the API key and user-agent headers SendGridAPIClient
sets, `Response`, the `HTTPError` classes and their mapping from status codes) and sends each
request over one connection per thread, reused for as long as the server keeps it open. A
connection the server has closed while idle is noticed before a request is written to it (one
closed at that very moment fails like any dropped connection: the transport retries it later).
Behind an HTTP(S) proxy set in the environment it takes the stock path, which honours the proxy.
"""

from __future__ import annotations

import http.client
import io
import json
import select
import threading
import urllib.error
import urllib.request
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from python_http_client.client import Client, Response
from python_http_client.exceptions import handle_error


class _Answer:
    """What `python_http_client.Response` reads from a urllib response: code, body, headers."""

    def __init__(self, status: int, body: bytes, headers: http.client.HTTPMessage) -> None:
        self._status, self._body, self._headers = status, body, headers

    def getcode(self) -> int:
        return self._status

    def read(self) -> bytes:
        return self._body

    def info(self) -> http.client.HTTPMessage:
        return self._headers


def _closed_by_peer(connection: http.client.HTTPConnection) -> bool:
    """An idle kept-alive socket that is readable has been closed by the server (or holds bytes
    nobody asked for): either way it must not carry the next request."""
    if connection.sock is None:
        return False
    readable, _, _ = select.select([connection.sock], [], [], 0)
    return bool(readable)


@lru_cache(maxsize=16)
def _proxied(scheme: str, hostname: str) -> bool:
    return scheme in urllib.request.getproxies() and not urllib.request.proxy_bypass(hostname)


class Connections:
    """One connection per thread and origin; `close_all` ends every one of them."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[http.client.HTTPConnection] = []

    def _for(self, scheme: str, netloc: str, timeout: float | None) -> http.client.HTTPConnection:
        mine: dict[tuple[str, str], http.client.HTTPConnection]
        mine = self._local.__dict__.setdefault("by_origin", {})
        connection = mine.get((scheme, netloc))
        if connection is None:
            kind = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
            connection = kind(netloc, timeout=timeout)  # HTTPS verifies the certificate by default
            mine[(scheme, netloc)] = connection
            with self._lock:
                self._all.append(connection)
        elif _closed_by_peer(connection):
            connection.close()  # the next request opens a fresh one
        return connection

    def send(self, method: str, url: str, headers: dict[str, str], data: bytes | None,
             timeout: float | None) -> _Answer:
        parts = urlsplit(url)
        connection = self._for(parts.scheme, parts.netloc, timeout)
        target = f"{parts.path or '/'}?{parts.query}" if parts.query else (parts.path or "/")
        try:
            connection.request(method, target, body=data, headers=headers)
            response = connection.getresponse()
            body = response.read()
        except BaseException:
            connection.close()  # its state is unknown: the next request starts afresh
            raise
        if response.status >= 400:  # the stock client's urllib raises here, mapped the same way
            error = urllib.error.HTTPError(url, response.status, response.reason, response.headers,
                                           io.BytesIO(body))
            raise handle_error(error)
        return _Answer(response.status, body, response.headers)

    def close_all(self) -> None:
        with self._lock:
            for connection in self._all:
                connection.close()
            self._all.clear()


class KeepAliveClient(Client):
    """`python_http_client.Client` whose requests share kept-alive connections (see the module)."""

    def __init__(self, host: str, request_headers: dict[str, str] | None = None, version: int | None = None,
                 url_path: list[str] | None = None, append_slash: bool = False, timeout: float | None = None,
                 connections: Connections | None = None) -> None:
        # The stubs say an int timeout; the client hands it to urlopen, which takes seconds as a float.
        super().__init__(host, request_headers=request_headers, version=version, url_path=url_path,
                         append_slash=append_slash, timeout=timeout)  # type: ignore[arg-type]
        # Set through __dict__: Client.__getattr__ turns any missing attribute into a URL segment.
        self.__dict__["connections"] = connections or Connections()

    @classmethod
    def replacing(cls, client: Client) -> KeepAliveClient:
        """The same client (host, headers, version, timeout), keeping its connections alive."""
        # _version and _url_path are set by Client.__init__ but left out of its stubs.
        return cls(client.host, request_headers=dict(client.request_headers),
                   version=client._version,  # type: ignore[arg-type]
                   url_path=list(client._url_path),  # type: ignore[call-overload]
                   append_slash=client.append_slash, timeout=client.timeout)

    def _build_client(self, name: str | None = None) -> KeepAliveClient:
        url_path = self._url_path + [name] if name else self._url_path
        return KeepAliveClient(self.host, request_headers=self.request_headers, version=self._version,
                               url_path=url_path, append_slash=self.append_slash, timeout=self.timeout,
                               connections=self.connections)

    def __getattr__(self, name: str) -> Any:
        host = urlsplit(self.host)
        if name not in self.methods or _proxied(host.scheme, host.hostname or ""):
            return super().__getattr__(name)
        method = name.upper()

        def http_request(request_body: Any = None, query_params: dict[str, Any] | None = None,
                         request_headers: dict[str, str] | None = None, timeout: float | None = None,
                         **_: Any) -> Response:
            # As the stock http_request does, minus the opener: the body is JSON unless the
            # client was told another content type.
            if request_headers:
                self._update_headers(request_headers)
            if request_body is None:
                data = None
            elif self.request_headers.get("Content-Type", "application/json") != "application/json":
                data = request_body.encode("utf-8")
            else:
                self.request_headers.setdefault("Content-Type", "application/json")
                data = json.dumps(request_body).encode("utf-8")
            return Response(self.connections.send(method, self._build_url(query_params), self.request_headers,
                                                  data, timeout or self.timeout))

        return http_request

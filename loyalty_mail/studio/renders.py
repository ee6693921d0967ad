"""Renders for the pages, each on its own daemon thread, waited for a bounded time.

A template can take long to render (until `rendering.timeout`, or longer inside one large filter
call). A page waits `seconds` for its render and then says the render is still running, so it
never holds a request, another page or the shutdown: the thread is a daemon, the waits end when
the studio stops. One render runs at a time (a renderer's limits hold one render's clock); a
second request for the same render joins the one running, and at most `limit` wait in all.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from concurrent.futures import wait as wait_for
from typing import TypeVar

from ..errors import LoyaltyMailError

T = TypeVar("T")
RENDER_SECONDS = 10.0
MAX_PENDING = 4


class RenderPending(LoyaltyMailError):
    """The render did not finish in time (it goes on; the page reloads when it is done or a file changes)."""


class Renders:
    """Runs page renders off the request threads; see the module docstring."""

    def __init__(self, seconds: float = RENDER_SECONDS, limit: int = MAX_PENDING) -> None:
        self.seconds, self.limit = seconds, limit
        self.closing = threading.Event()
        self._lock = threading.Lock()
        self._one_at_a_time = threading.Lock()
        self._pending: dict[Hashable, Future[object]] = {}

    def run(self, key: Hashable, work: Callable[[], T]) -> T:
        """`work()`, or RenderPending after `seconds` (or as soon as the studio stops)."""
        with self._lock:
            future = self._pending.get(key)
            if future is None:
                if len(self._pending) >= self.limit:
                    raise RenderPending(f"{len(self._pending)} renders are still running (a template that takes "
                                        "very long?): fix the template or wait, and the page reloads")
                future = Future()
                self._pending[key] = future
                threading.Thread(target=self._work, args=(key, future, work), name="studio-render",
                                 daemon=True).start()
        deadline = time.monotonic() + self.seconds
        while not future.done():
            left = deadline - time.monotonic()
            if self.closing.is_set():
                raise RenderPending("the studio is stopping")
            if left <= 0:
                raise RenderPending(f"the render is still running after {self.seconds:g} s (a template that takes "
                                    "very long?): the page shows it when a file changes")
            wait_for([future], timeout=min(left, 0.1))
        return future.result()  # type: ignore[return-value]

    def _work(self, key: Hashable, future: Future[object], work: Callable[[], object]) -> None:
        try:
            with self._one_at_a_time:
                future.set_result(work())
        except BaseException as exc:  # handed to the request that waits for it
            future.set_exception(exc)
        finally:
            with self._lock:
                self._pending.pop(key, None)

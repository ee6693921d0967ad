"""A deadline for code that has no place to look at a clock: CSS inlined on a rendered email.

Jinja asks `RenderLimits` at every loop and call; the per-email inliner (`replay`), premailer
(`check`'s reference) and cssutils under them loop over rules and elements with no hook to ask. Tracing every call (`sys.settrace`) to look at
the clock made inlining 3-6x slower. Instead one watchdog thread per process waits for the earliest
deadline and, when a guarded block is still running past it, raises `Overtime` in that thread
(CPython's `PyThreadState_SetAsyncExc`), which the interpreter delivers at its next bytecode. Work
inside one C call (lxml parsing a document) stops when it returns to Python; its input is bounded
by `rendering.max_bytes`. `Overtime` is a BaseException, so a library's `except Exception` does not
swallow it; `deadline` withdraws an exception not yet delivered when the block ends, so it never
surfaces after the block. The thread is woken only for a deadline earlier than the one it waits
for: one email after another, it wakes once per timeout, not once per email.
"""

from __future__ import annotations

import ctypes
import itertools
import math
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc  # (thread id, exception or NULL)
_tokens = itertools.count()


class Overtime(BaseException):
    """Raised inside a block guarded by `deadline` that ran past it."""


class _Watchdog:
    def __init__(self) -> None:
        self.pid = os.getpid()
        self.changed = threading.Condition()
        self.armed: dict[int, tuple[float, int]] = {}   # thread id -> (deadline, token)
        self.fired: set[int] = set()                    # tokens whose thread was sent Overtime
        self.wakes = math.inf                           # when the thread next looks, unless woken
        threading.Thread(target=self._run, name="render-watchdog", daemon=True).start()

    def _run(self) -> None:
        with self.changed:
            while True:
                now = time.monotonic()
                for thread, (at, token) in self.armed.items():
                    if at <= now and token not in self.fired:
                        self.fired.add(token)
                        _set_async_exc(ctypes.c_ulong(thread), ctypes.py_object(Overtime))
                waiting = [at for at, token in self.armed.values() if token not in self.fired]
                self.wakes = min(waiting) if waiting else math.inf
                self.changed.wait(self.wakes - now if waiting else None)


_process: dict[str, _Watchdog] = {}   # one thread per process (a forked dispatcher starts its own)
_starting = threading.Lock()


def _watchdog() -> _Watchdog:
    dog = _process.get("dog")
    if dog is None or dog.pid != os.getpid():
        with _starting:
            dog = _process.get("dog")
            if dog is None or dog.pid != os.getpid():
                dog = _process["dog"] = _Watchdog()
    return dog


@contextmanager
def deadline(at: float) -> Iterator[None]:
    """Raise `Overtime` in the block when it is still running at `at` (time.monotonic())."""
    dog, thread, token = _watchdog(), threading.get_ident(), next(_tokens)
    with dog.changed:
        if thread in dog.armed:
            raise RuntimeError("deadline() blocks do not nest")
        dog.armed[thread] = (at, token)
        if at < dog.wakes:  # later than the thread's next look: it sees this one then
            dog.changed.notify()
    try:
        yield
    finally:
        while True:
            try:
                with dog.changed:
                    if dog.armed.get(thread, (0, None))[1] == token:
                        del dog.armed[thread]
                    fired = token in dog.fired
                    dog.fired.discard(token)
                if fired:
                    _set_async_exc(ctypes.c_ulong(thread), None)  # withdrawn if not yet delivered
                break
            except Overtime:  # delivered while disarming: the block has ended, so it is dropped
                continue

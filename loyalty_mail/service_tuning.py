"""Process settings for a long-running HTTP service whose event loop shares the GIL with a writer thread."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager

GIL_SWITCH_SECONDS = 0.0005


@contextmanager
def tuned_for_serving() -> Iterator[None]:
    """Freeze the startup heap and shorten the GIL switch interval while the service runs.

    - What is alive at start (modules, engine, routes) lives as long as the service: out of the
      cycle collector's sight, a full collection walks only what requests left behind, not the whole
      startup heap (which stopped the event loop for 140-510 ms at a time).
    - The loop and the writer thread share the GIL, and the writer gives it up on every statement:
      at the default 5 ms switch interval a busy loop holds each hand-back for up to 5 ms, several
      times a commit, and every request waits for its commit.
    """
    gc.collect()
    gc.freeze()
    switch = sys.getswitchinterval()
    sys.setswitchinterval(min(switch, GIL_SWITCH_SECONDS))
    try:
        yield
    finally:
        sys.setswitchinterval(switch)
        gc.unfreeze()

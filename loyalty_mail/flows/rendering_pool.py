"""Render a batch of sends, in this process or across worker processes.

Rendering is CPU-bound Python; with `sending.render_workers: N` (N > 1) a batch is rendered by N
forked processes, each holding its own compiled templates, so a large send uses every core. The
results (RenderedEmail objects, or the template error) come back in order.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from typing import Any

from ..errors import TemplateError
from ..rendering import Renderer, RenderedEmail

Job = tuple[str, dict[str, Any], str, str, dict[str, Any]]  # template, member, send id, flow, occurrence
_worker_renderer: Renderer | None = None


def _render(renderer: Renderer, job: Job, now: datetime) -> RenderedEmail | TemplateError:
    template, member, send_id, flow, occurrence = job
    try:
        return renderer.render(template, member, now=now, send_id=send_id, flow={"name": flow},
                               occurrence=occurrence)
    except TemplateError as exc:
        return exc


def _init(settings: Any, secret: str | None) -> None:
    global _worker_renderer
    from ..tracking.tokens import TokenSigner
    _worker_renderer = Renderer.for_program(settings, signer=TokenSigner(secret) if secret else None)


def _render_chunk(jobs: list[Job], now: datetime) -> list[RenderedEmail | TemplateError]:
    assert _worker_renderer is not None
    return [_render(_worker_renderer, job, now) for job in jobs]


class RenderPool:
    """`render(jobs, now)` -> one RenderedEmail or TemplateError per job, in order."""

    def __init__(self, renderer: Renderer, workers: int) -> None:
        self.renderer = renderer
        self._pool: ProcessPoolExecutor | None = None
        if workers > 1:
            secret = renderer.settings.tracking.secret if renderer.signer is not None else None
            self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"),
                                             initializer=_init, initargs=(renderer.settings, secret))
            self._workers = workers

    def render(self, jobs: Sequence[Job], now: datetime) -> list[RenderedEmail | TemplateError]:
        if self._pool is None or len(jobs) < 2:
            return [_render(self.renderer, job, now) for job in jobs]
        size = -(-len(jobs) // self._workers)
        chunks = [list(jobs[i:i + size]) for i in range(0, len(jobs), size)]
        return [result for part in self._pool.map(_render_chunk, chunks, [now] * len(chunks)) for result in part]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

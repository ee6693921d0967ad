"""The program as the studio sees it: rebuilt from disk after every edit, never written.

`Workspace.state()` returns the settings, compiled templates and segments of the files as they
are now; a file that does not load becomes a list of problems (file:line) shown in its place.
The database engine is built once; the instant is --at, or the clock at each request.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa

from ..config import CONFIG_FILE, Settings
from ..db import display_url
from ..errors import ConfigError, LoyaltyMailError, Problem
from ..members import any_members
from ..rendering import TEMPLATES_DIR, Renderer
from ..runtime import Runtime
from ..segments import SEGMENTS_DIR, Context, SegmentCatalog, context_for
from ..segments.spec import load_segments
from ..tiers import TierLadder
from ..signing import TokenSigner
from .watch import ProgramWatcher


@dataclass
class ProgramState:
    """One version of the program files, loaded (or the problems that stopped it)."""

    version: int
    settings: Settings | None
    problems: list[Problem] = field(default_factory=list)
    _renderer: Renderer | None = None
    _segments: tuple[SegmentCatalog, list[Problem]] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def renderer(self) -> Renderer:
        if self.settings is None:
            raise ConfigError(self.problems)
        with self._lock:  # the pages and the render thread share it: compiled once
            return self._compiled()

    def _compiled(self) -> Renderer:
        assert self.settings is not None
        if self._renderer is None:
            secret = self.settings.tracking.secret
            self._renderer = Renderer.for_program(self.settings, signer=TokenSigner(secret) if secret else None)
        return self._renderer

    def segments(self) -> tuple[SegmentCatalog, list[Problem]]:
        """The valid segments, and the problems of the others."""
        if self.settings is None:
            raise ConfigError(self.problems)
        if self._segments is None:
            self._segments = load_segments(self.settings.project_dir / SEGMENTS_DIR,
                                           TierLadder.from_settings(self.settings.tiers),
                                           display_root=self.settings.project_dir)
        return self._segments


class Workspace:
    """The studio's view of one program directory and its database."""

    def __init__(self, runtime: Runtime, *, at: datetime | None = None,
                 loader: Callable[[Path], Settings] | None = None) -> None:
        self.runtime = runtime
        self.at = at
        self.watcher = ProgramWatcher(runtime.project_dir)
        self._load = loader or (lambda directory: Runtime.load(directory, database_url=runtime.database_url).settings)
        self._state = ProgramState(0, runtime.settings)
        self._files = self.watcher.seen
        self._lock = threading.Lock()

    @property
    def project_dir(self) -> Path:
        return self.runtime.project_dir

    def now(self) -> datetime:
        return self.at if self.at is not None else self.runtime.now()

    def engine(self) -> sa.Engine:
        return self.runtime.engine()

    @property
    def database(self) -> str:
        """The database in use, as a URL without its password."""
        return display_url(self.runtime.database_url)

    def has_members(self) -> bool:
        """Whether the database holds any member (True when it cannot be asked: the pages say why)."""
        try:
            with self.engine().connect() as connection:
                return any_members(connection)
        except (LoyaltyMailError, sa.exc.SQLAlchemyError):
            return True

    def state(self) -> ProgramState:
        """The program as its files are now (looked at once more, so a save is never missed).
        What the edit did not touch is kept: a template's save keeps the settings and segments,
        a segment's keeps the settings and compiled templates."""
        with self._lock:
            return self._current()

    def _current(self) -> ProgramState:
        version, files = self.watcher.current()
        if version == self._state.version:
            return self._state
        changed = {path for path, *_ in set(files) ^ set(self._files)}
        old, self._files = self._state, files
        if old.settings is None or CONFIG_FILE in changed:
            try:
                self._state = ProgramState(version, self._load(self.project_dir))
            except ConfigError as exc:
                self._state = ProgramState(version, None, exc.problems)
            return self._state
        templates = any(path.startswith(f"{TEMPLATES_DIR}/") for path in changed)
        segments = any(path.startswith(f"{SEGMENTS_DIR}/") for path in changed)
        self._state = ProgramState(version, old.settings, _renderer=None if templates else old._renderer,
                                   _segments=None if segments else old._segments)
        return self._state

    def segment_context(self, settings: Settings, catalog: SegmentCatalog) -> Context:
        return context_for(settings, catalog, self.now(), self.engine().dialect.name)

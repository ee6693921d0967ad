"""Noticing edits: a cheap poll of the program files' sizes and modification times.

config.yaml, segments/ and templates/ hold at most a few hundred small files: reading their
`stat` every quarter of a second costs well under a millisecond, needs no thread and no platform
file-watching API, and sees an edit within the poll interval.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

from ..config import CONFIG_FILE
from ..segments import SEGMENTS_DIR
from ..rendering import TEMPLATES_DIR

POLL_SECONDS = 0.25
MAX_FILES = 5000  # a folder larger than this is not a program's: stop listing, keep the bound


def snapshot(project_dir: Path) -> tuple[tuple[str, int, int], ...]:
    """(path, size, mtime in ns) of config.yaml and every file under segments/ and templates/."""
    found: list[tuple[str, int, int]] = []
    config = project_dir / CONFIG_FILE
    pending = [project_dir / SEGMENTS_DIR, project_dir / TEMPLATES_DIR]
    try:
        stat = config.stat()
        found.append((CONFIG_FILE, stat.st_size, stat.st_mtime_ns))
    except OSError:
        pass
    while pending and len(found) < MAX_FILES:
        try:
            entries = list(os.scandir(pending.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(Path(entry.path))
                else:
                    stat = entry.stat(follow_symlinks=False)
                    found.append((Path(entry.path).relative_to(project_dir).as_posix(), stat.st_size,
                                  stat.st_mtime_ns))
            except OSError:
                continue
    return tuple(sorted(found))


class ProgramWatcher:
    """Counts edits to the program's files; `changed(version)` waits for the next one."""

    def __init__(self, project_dir: Path, poll: float = POLL_SECONDS) -> None:
        self.project_dir, self.poll = project_dir, poll
        self.version = 0
        self.seen = snapshot(project_dir)
        self._lock = threading.Lock()
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    def current(self) -> tuple[int, tuple[tuple[str, int, int], ...]]:
        """Look once; the version and the files it stands for."""
        version = self.check()
        with self._lock:
            return version, self.seen

    def check(self) -> int:
        """Look once (from the event loop or any thread); a difference from the last look is a
        new version, and wakes whoever waits in `changed`."""
        with self._lock:
            now = snapshot(self.project_dir)
            changed = now != self.seen
            if changed:
                self.seen = now
                self.version += 1
            version = self.version
        if changed and self._loop is not None:
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is self._loop:
                self._notify()
            else:
                self._loop.call_soon_threadsafe(self._notify)
        return version

    def _notify(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = None

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.poll)
            self.check()

    def start(self) -> None:
        """Poll in the running event loop until `stop`."""
        if self._task is None:
            self._loop = asyncio.get_running_loop()
            self._task = self._loop.create_task(self.run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def changed(self, version: int, timeout: float) -> int:
        """The version after `version`, or the same one after `timeout` seconds without an edit."""
        if self.version != version:
            return self.version
        if self._event is None:
            self._event = asyncio.Event()
        event = self._event
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        return self.version

"""A file that appears only with the work it belongs to: written beside its place and synced to
disk, then moved into place by `publish()` once that work is done, or discarded."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO


class PendingFile:
    """`path`, written now (`writing()`) and put in place later (`publish()`), or never (`discard()`)."""

    def __init__(self, path: Path):
        self.path = path
        self._temp: Path | None = None

    @contextmanager
    def writing(self) -> Iterator[TextIO]:
        """A UTF-8 text file beside `path`, synced to disk when the block ends. Raises OSError."""
        fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        self._temp = Path(name)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())

    def publish(self) -> None:
        """Move the written file into place (atomically, on the same file system) and sync that."""
        if self._temp is None:
            return
        os.replace(self._temp, self.path)
        self._temp = None
        folder = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)

    def discard(self) -> None:
        """Remove the written file, if it was not published."""
        if self._temp is not None:
            self._temp.unlink(missing_ok=True)
            self._temp = None

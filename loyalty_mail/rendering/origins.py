"""Text that remembers where each of its characters was written: the file and the offset there.

Flattening cuts template files into pieces and joins them into one source; a reason to fall back
found at an offset of that source must name the file, line and column it came from. `Traced`
slices and joins like a string and keeps, for each run of characters, its file and offset.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class _Run:
    start: int     # where the run starts in the text
    file: str
    at: int        # where its first character was written in `file`
    fixed: bool    # every character of the run stands for `at` (text flattening adds)


@dataclass(frozen=True)
class Traced:
    text: str
    runs: tuple[_Run, ...] = ()

    @classmethod
    def of(cls, text: str, file: str, at: int = 0, *, added: bool = False) -> Traced:
        """`text` as written in `file` from offset `at`; `added`: text written for a construct
        there (every character is traced to `at`)."""
        return cls(text, (_Run(0, file, at, added),) if text else ())

    def __len__(self) -> int:
        return len(self.text)

    def __str__(self) -> str:
        return self.text

    def __getitem__(self, cut: slice) -> Traced:
        start, stop, _ = cut.indices(len(self.text))
        stop = max(start, stop)
        runs: list[_Run] = []
        for index, run in enumerate(self.runs):
            end = self.runs[index + 1].start if index + 1 < len(self.runs) else len(self.text)
            first, last = max(start, run.start), min(stop, end)
            if first < last:
                runs.append(_Run(first - start, run.file, run.at if run.fixed else run.at + first - run.start,
                                 run.fixed))
        return Traced(self.text[start:stop], tuple(runs))

    def __add__(self, other: Traced) -> Traced:
        return join((self, other))

    def origin(self, offset: int) -> tuple[str, int] | None:
        """The file and offset where the character at `offset` was written."""
        if not self.runs or not 0 <= offset < len(self.text):
            return None
        run = self.runs[bisect_right([r.start for r in self.runs], offset) - 1]
        return run.file, run.at if run.fixed else run.at + offset - run.start


def join(parts: Iterable[Traced]) -> Traced:
    texts: list[str] = []
    runs: list[_Run] = []
    length = 0
    for part in parts:
        texts.append(part.text)
        runs += [_Run(run.start + length, run.file, run.at, run.fixed) for run in part.runs]
        length += len(part.text)
    return Traced("".join(texts), tuple(runs))

"""A program file as it was at git HEAD, read with `git show` (never written, never checked out)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

GIT_SECONDS = 5
MAX_BYTES = 1_000_000


@dataclass(frozen=True)
class HeadVersion:
    """The text at HEAD, or why there is none: `not_git`, `new_file`, `error`."""

    text: str | None
    status: str
    message: str = ""


def head_version(project_dir: Path, relative: str) -> HeadVersion:
    """`relative` (a path inside the program directory) as committed at HEAD."""
    try:
        prefix = _git(project_dir, "rev-parse", "--show-prefix")
    except FileNotFoundError:
        return HeadVersion(None, "not_git", "git is not installed: no version to compare with")
    except subprocess.TimeoutExpired:
        return HeadVersion(None, "error", "git did not answer in time")
    if prefix.returncode != 0:
        return HeadVersion(None, "not_git", "the program is not in a git repository: no version to compare with "
                                            "(`git init` and a commit make one)")
    spec = f"HEAD:{prefix.stdout.decode().strip()}{relative}"
    try:
        shown = _git(project_dir, "show", spec)
    except subprocess.TimeoutExpired:
        return HeadVersion(None, "error", "git did not answer in time")
    if shown.returncode == 0:
        if len(shown.stdout) > MAX_BYTES:
            return HeadVersion(None, "error", f"{relative} at HEAD is larger than {MAX_BYTES:,} bytes")
        return HeadVersion(shown.stdout.decode("utf-8", errors="replace"), "committed")
    error = shown.stderr.decode("utf-8", errors="replace")
    if "invalid object name" in error.lower() or "bad revision" in error.lower():
        return HeadVersion(None, "new_file", "the repository has no commit yet: every member is new")
    if "does not exist" in error or "exists on disk, but not in" in error:
        return HeadVersion(None, "new_file", f"{relative} is a new file (not in HEAD)")
    return HeadVersion(None, "error", f"git show {spec}: {error.strip().splitlines()[-1] if error.strip() else 'failed'}")


def _git(directory: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", "-C", str(directory), *args], capture_output=True, timeout=GIT_SECONDS,
                          env={"GIT_TERMINAL_PROMPT": "0", "PATH": _path(), "LC_ALL": "C"}, check=False)


def _path() -> str:
    import os

    return os.environ.get("PATH", "/usr/bin:/bin")

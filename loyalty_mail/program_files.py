"""Reading a program's own files (config, segments, templates): regular files inside the program only.

A symbolic link, a directory, a device or a path that leads outside the program directory is an
error that names the file: a link in `templates/_partials/` must not put an environment file into
an email. Every read is bounded in size.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import ConfigError, Location, Problem

MAX_FILE_BYTES = 1_000_000
BOM = "\ufeff"


def read_program_text(path: Path, root: Path, display: str, *, max_bytes: int = MAX_FILE_BYTES,
                      error: type[ConfigError] = ConfigError) -> str:
    """The UTF-8 text of `path`, a regular file under `root` reached through no symbolic link.

    A byte order mark at the start (some Windows editors write one) is left out, so that front
    matter is found and columns are the file's own; Windows line ends (CRLF), and a CR alone, are
    read as the newlines Jinja and YAML make of them, so the HTML parser and the template agree on
    offsets.

    Raises `error` (ConfigError or a subclass) naming `display` for anything else: a missing file,
    a link, a directory or other non-regular file, a file over `max_bytes`, text that is not UTF-8.
    """
    def fail(message: str, line: int = 1) -> ConfigError:
        return error(Problem(Location(display, line), message))

    try:
        relative = path.absolute().relative_to(root.absolute())
    except ValueError:
        raise fail(f"is outside the program directory {root}; program files must be inside it") from None
    if any(part in ("", ".", "..") for part in relative.parts):
        raise fail("the path leads outside the program directory")
    current = root.absolute()
    mode = os.lstat(current).st_mode if current.exists() else 0
    for part in relative.parts:
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            raise fail("file not found") from None
        if stat.S_ISLNK(mode):
            which = "is" if current == root.absolute() / relative else \
                f"is in '{current.relative_to(root.absolute())}', which is"
            raise fail(f"{which} a symbolic link (to {os.readlink(current)}); program files must be "
                       "regular files inside the program directory: copy the file instead of linking it")
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise fail(f"is {kind}; expected a regular file")
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        descriptor = os.open(current, flags)
    except OSError as exc:
        raise fail(f"cannot be read ({exc.strerror})") from None
    with os.fdopen(descriptor, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise fail("is not a regular file; expected a regular file")
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise fail(f"is larger than {max_bytes:,} bytes, the limit for program files")
    try:
        text = data.decode("utf-8").removeprefix(BOM)  # an editor's byte order mark is not text
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise fail(f"not UTF-8 text ({exc.reason} at byte {exc.start})", line) from None
    # Jinja and YAML read a Windows line end (CRLF) as one newline, and a CR alone (old Mac files,
    # or CR CR LF from converting line ends twice) as another
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text

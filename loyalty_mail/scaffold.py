"""`loyalty-mail init`: lay out a new program from the example one that ships with loyalty-mail."""

from __future__ import annotations

import shutil
from pathlib import Path

from .config import CONFIG_FILE
from .errors import LoyaltyMailError

PROGRAM_PARTS = (CONFIG_FILE, "segments", "templates")


def example_program_dir() -> Path:
    """The example program: packaged in a wheel, or the repository's top level in a checkout."""
    packaged = Path(__file__).parent / "_example"
    if (packaged / CONFIG_FILE).exists():
        return packaged
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / CONFIG_FILE).exists() and (checkout / "segments").is_dir():
        return checkout
    raise LoyaltyMailError("the example program is missing from this installation; reinstall loyalty-mail")


def init_program(target: Path, *, force: bool = False) -> list[Path]:
    """Copy config.yaml, segments/ and templates/ into `target`; returns what was written.

    Refuses to overwrite existing files unless `force`.
    """
    source = example_program_dir()
    existing = [target / part for part in PROGRAM_PARTS if (target / part).exists()]
    if existing and not force:
        names = ", ".join(str(p) for p in existing)
        raise LoyaltyMailError(f"{names} already exist(s); use --force to overwrite")
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for part in PROGRAM_PARTS:
        origin, destination = source / part, target / part
        if origin.is_dir():
            shutil.copytree(origin, destination, dirs_exist_ok=True)
        else:
            shutil.copy2(origin, destination)
        written.append(destination)
    return written

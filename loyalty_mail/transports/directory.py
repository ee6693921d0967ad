"""A transport that writes each message to `<directory>/<send id>.eml` (atomically)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..message import RenderedEmail
from .base import DeliveryResult


class DirectoryTransport:
    name = "directory"

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def send(self, batch: Sequence[RenderedEmail]) -> list[DeliveryResult]:
        self.directory.mkdir(parents=True, exist_ok=True)
        results = []
        for email in batch:
            target = self.directory / f"{email.send_id}.eml"
            partial = target.with_suffix(".eml.partial")
            partial.write_bytes(email.to_bytes())
            os.replace(partial, target)
            results.append(DeliveryResult(email.send_id, "sent", str(target)))
        return results

    def close(self) -> None:
        pass

"""The transport protocol: deliver a batch of rendered emails, say what happened to each."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from ..rendering import RenderedEmail


@dataclass(frozen=True)
class DeliveryResult:
    send_id: str
    outcome: Literal["sent", "failed", "retry"]
    detail: str | None = None


class Transport(Protocol):
    name: str

    def send(self, batch: Sequence[RenderedEmail]) -> list[DeliveryResult]: ...

    def close(self) -> None: ...

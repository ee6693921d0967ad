"""The transport protocol: deliver a batch of rendered emails, say what happened to each.

Outcomes: `sent` (the provider accepted it), `failed` (permanent: the provider's reason), or
`retry` (transient: timeouts, connection errors, HTTP 429/5xx, SMTP 4xx; `retry_after` seconds
when the provider said). A transport never raises for one message's trouble.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from ..message import RenderedEmail


@dataclass(frozen=True)
class DeliveryResult:
    send_id: str
    outcome: Literal["sent", "failed", "retry"]
    detail: str | None = None
    retry_after: float | None = None
    provider_id: str | None = None


class Transport(Protocol):
    name: str

    def send(self, batch: Sequence[RenderedEmail]) -> list[DeliveryResult]: ...

    def close(self) -> None: ...

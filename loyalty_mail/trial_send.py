"""Test sends: one real message of any email to any address, through the configured transport.

A test send carries no tracked links, is marked as a test (see `Renderer.render(test=True)`), is
never recorded in the ledger and never counts in reports. Shared by `send-test` and the studio.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from .errors import LoyaltyMailError
from .message import RenderedEmail
from .rendering import Renderer
from .rendering.checks import sample_members, sample_occurrences
from .transports.base import DeliveryResult, Transport


def sample_member_for(renderer: Renderer, template: str, locale: str | None, now: datetime) -> dict[str, Any]:
    """The sample member a test send (or a preview) personalises for, in the variant's locale."""
    return sample_members(renderer, renderer.variant(template, locale).locale, now)[0]


def send_test(renderer: Renderer, transport: Transport, template: str, member: Mapping[str, Any], to: str, *,
              locale: str | None, now: datetime) -> tuple[RenderedEmail, DeliveryResult]:
    """Render `template` for `member`, addressed to `to`, and send it; LoyaltyMailError when the
    transport did not accept it. Returns the message sent and the transport's answer."""
    email = renderer.render(template, {**member, "email": to}, now=now, send_id=f"test{uuid.uuid4().hex[:28]}",
                            test=True, locale=locale, flow={"name": "test"},
                            occurrence=sample_occurrences(renderer)[1])
    [result] = transport.send([email])
    if result.outcome != "sent":
        raise LoyaltyMailError(f"the {transport.name} transport did not send it ({result.outcome}): {result.detail}")
    return email, result

"""Test sends: one real message of any email to any address, through the configured transport.

A test send carries no tracked links, is marked as a test (see `Renderer.render(test=True)`), is
never recorded in the ledger and never counts in reports. Shared by `send-test` and the studio.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from email.utils import parseaddr
from typing import Any

from .errors import LoyaltyMailError, shown
from .importing.fields import EMAIL_ADDRESS
from .message import RenderedEmail
from .rendering import Renderer
from .rendering.checks import sample_members, sample_occurrence
from .transports.base import DeliveryResult, Transport


def sample_member_for(renderer: Renderer, template: str, locale: str | None, now: datetime) -> dict[str, Any]:
    """The sample member a test send (or a preview) personalises for, in the variant's locale."""
    return sample_members(renderer, renderer.variant(template, locale).locale, now)[0]


def check_recipient(to: str) -> str:
    """`to` if it is one plain email address (as a member's address must be: no name, no second
    address, no control character); LoyaltyMailError otherwise."""
    if len(to) > 254 or parseaddr(to)[1] != to or not EMAIL_ADDRESS.fullmatch(to):
        raise LoyaltyMailError(f"{shown(to)} is not an email address (one address, such as me@example.com)")
    return to


def check_locale(renderer: Renderer, locale: str | None) -> None:
    """LoyaltyMailError unless `locale` is None (the email's default) or one of program.locales."""
    locales = renderer.settings.program.locales
    if locale is not None and locale not in locales:
        raise LoyaltyMailError(f"locale {shown(locale)} is not one of the program's locales ({', '.join(locales)})")


def send_test(renderer: Renderer, transport: Transport, template: str, member: Mapping[str, Any], to: str, *,
              locale: str | None, now: datetime) -> tuple[RenderedEmail, DeliveryResult]:
    """Render `template` for `member`, addressed to `to`, and send it; LoyaltyMailError when the
    transport did not accept it (or `to` or `locale` is not valid). Returns the message sent and
    the transport's answer."""
    check_recipient(to)
    check_locale(renderer, locale)
    email = renderer.render(template, {**member, "email": to}, now=now, send_id=f"test{uuid.uuid4().hex[:28]}",
                            test=True, locale=locale, flow={"name": "test"},
                            occurrence=sample_occurrence(renderer, template))
    [result] = transport.send([email])
    if result.outcome != "sent":
        raise LoyaltyMailError(f"the {transport.name} transport did not send it ({result.outcome}): {result.detail}")
    return email, result

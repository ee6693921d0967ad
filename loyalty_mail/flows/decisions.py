"""What the planner decides for one occurrence: a send (when, why, which A/B variant) or a skip
(why, and what to record). The planner and the journey walker both make them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from .occurrences import Occurrence

if TYPE_CHECKING:
    from ..config import VariantSettings


@dataclass(slots=True)
class PlannedSend:
    occurrence: Occurrence
    scheduled_for: datetime
    segment: str | None
    reason: str
    deferred: str | None = None  # "quiet hours until 08:00 local"
    variant: VariantSettings | None = None  # the A/B variant this member gets


@dataclass(slots=True)
class Skip:
    occurrence: Occurrence
    reason: str
    record_as: str | None  # ledger state to record, or None to decide again next time

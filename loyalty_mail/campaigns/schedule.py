"""Scheduled campaigns: what `campaigns schedule` stored, and cancelling (all campaign_schedules writes).

Scheduling stores the validated file (and its digest); the planner sends that stored copy, so
an edit to the file after scheduling changes nothing until the campaign is scheduled again
(`campaigns status` says when the file and the scheduled copy differ). Cancelling stops what
has not been sent yet: no member is planned any more, and sends already planned for later are
marked cancelled by the ledger.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from pydantic import ValidationError

from ..errors import LoyaltyMailError
from ..models import campaign_schedules_table
from .spec import Campaign

@dataclass(frozen=True)
class Scheduled:
    """One row of campaign_schedules, with its campaign as stored."""

    campaign: Campaign
    state: str               # scheduled | cancelled
    digest: str
    scheduled_at: datetime
    cancelled_at: datetime | None


def digest(campaign: Campaign) -> str:
    return hashlib.sha256(json.dumps(campaign.stored(), sort_keys=True).encode()).hexdigest()


def schedule(engine: sa.Engine, campaign: Campaign, now: datetime) -> str:
    """Store `campaign` as scheduled at `now` (again, when it was: the new copy replaces the old).
    A cancelled campaign stays cancelled. Returns what happened, for the user."""
    c = campaign_schedules_table
    values = {"state": "scheduled", "definition": campaign.stored(), "digest": digest(campaign),
              "scheduled_at": now, "cancelled_at": None}
    with engine.begin() as conn:
        row = conn.execute(sa.select(c.c.state, c.c.digest).where(c.c.name == campaign.name)
                           .with_for_update()).first()
        if row is None:
            conn.execute(c.insert().values(name=campaign.name, **values))
            return "scheduled"
        if row.state == "cancelled":
            raise LoyaltyMailError(f"campaign '{campaign.name}' was cancelled; a cancelled campaign is not "
                                   "scheduled again (copy the file under a new name to send it)")
        if row.digest == values["digest"]:
            return "already scheduled, unchanged"
        conn.execute(c.update().where(c.c.name == campaign.name).values(**values))
        return "scheduled again with the file's changes"


def cancel(engine: sa.Engine, name: str, now: datetime) -> bool:
    """Mark a scheduled campaign cancelled at `now`; False when it was not scheduled."""
    c = campaign_schedules_table
    with engine.begin() as conn:
        return bool(conn.execute(c.update().where(c.c.name == name, c.c.state == "scheduled")
                                 .values(state="cancelled", cancelled_at=now)).rowcount)


def scheduled(conn: sa.Connection, at: datetime, *, cancelled: bool = False,
              problems: list[str] | None = None) -> list[Scheduled]:
    """Campaigns scheduled by `at` and not cancelled by then (with `cancelled`, every one). A
    stored copy that is no longer a valid campaign (stored before a check was added) is left
    out with a logged warning, added to `problems` when given."""
    c = campaign_schedules_table
    query = sa.select(c).where(c.c.scheduled_at <= at).order_by(c.c.name)
    if not cancelled:
        query = query.where(sa.or_(c.c.cancelled_at.is_(None), c.c.cancelled_at > at))
    found = []
    for r in conn.execute(query):
        try:
            campaign = Campaign.from_stored(r.name, dict(r.definition))
        except ValidationError as exc:
            wrong = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}"
                              for e in exc.errors())
            message = (f"campaign '{r.name}' is skipped: its scheduled copy is not valid ({wrong}); "
                       f"fix the file and schedule it again, or cancel it")
            if problems is not None:
                problems.append(message)
            continue
        found.append(Scheduled(campaign, r.state, r.digest, r.scheduled_at, r.cancelled_at))
    return found

"""Simulated member behaviour for the demo: who joins, what members buy, how they answer email.

Everything written here is labelled as simulated: signups and purchases carry `simulated: true`
in their event properties (and purchase ids start `sim-`), tracking events have source
`simulated`. It goes through the ordinary paths (the event import applies points and tiers;
unsubscribes go through the tracking store), so flows react to it as they would to real members.

The rates are illustrative, chosen so the demo report has differences worth reading: responses
differ by flow (RESPONSES), by tier (higher tiers answer more) and by NPS (promoters more,
detractors less). Emails cause extra purchases (clicks convert, opens a little), held-out members
only buy on their own, so hold-out lift is real in the simulated data.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from .. import db, suppression
from ..config import Settings
from ..importing import import_rows
from ..models import members_table, sends_table, tracking_events_table
from ..tiers import TierLadder
from ..tracking.store import unsubscribe
from .generator import DemoProgram

SOURCE = "simulated"
USER_AGENT = "loyalty-mail demo (simulated)"


@dataclass(frozen=True)
class Response:
    """How members answer one flow's email (before the member's own appetite)."""

    open: float         # a delivered email is opened
    click: float        # an opened email is clicked
    unsubscribe: float  # a delivered email leads to an unsubscribe
    convert: float      # a click leads to a purchase within the attribution window (an open: a third of it)


RESPONSES = {
    "welcome": Response(open=0.58, click=0.32, unsubscribe=0.002, convert=0.30),
    "tier_upgrade": Response(open=0.52, click=0.30, unsubscribe=0.002, convert=0.28),
    "milestones": Response(open=0.44, click=0.24, unsubscribe=0.004, convert=0.24),
    "winback": Response(open=0.24, click=0.22, unsubscribe=0.02, convert=0.60),
}
OTHER = Response(open=0.35, click=0.20, unsubscribe=0.005, convert=0.20)
BOUNCE = 0.006            # of sends: a hard bounce
MACHINE_OPEN = 0.12       # of sends: a mail client prefetches the pixel (Apple Mail Privacy Protection)
BOT_CLICK = 0.02          # of sends: a link scanner follows the links
SIGNUPS_PER_MEMBER_DAY = 0.0015
LAPSED_DAYS = 90
LAPSED_FACTOR = 0.35      # lapsed members buy at this share of their usual rate


@dataclass
class Activity:
    """What simulated members did: joined, bought on their own, bought after an email."""

    signups: int = 0
    purchases: int = 0
    converted: int = 0

    def add(self, other: Activity) -> None:
        self.signups += other.signups
        self.purchases += other.purchases
        self.converted += other.converted


class Simulation:
    """Simulated days for one program: call `live` for each interval, then `respond` to what was sent."""

    def __init__(self, engine: sa.Engine, settings: Settings, program: DemoProgram, *, seed: int,
                 next_number: int, window: timedelta) -> None:
        self.engine, self.settings, self.program = engine, settings, program
        self.rng = random.Random(seed * 7919 + 17)
        self.next_number = next_number
        self.window = window
        self.order = {name: index for index, name in enumerate(TierLadder.from_settings(settings.tiers).names)}
        self.pending: list[tuple[datetime, str]] = []  # purchases that emails caused, due later
        self.purchases = 0
        self.totals = Activity()
        self._snapshot: Sequence[Any] = []
        self._snapshot_at: datetime | None = None

    def live(self, since: datetime, until: datetime) -> Activity:
        """Signups and purchases in (since, until], imported through the ordinary import path."""
        rng, hours = self.rng, (until - since).total_seconds() / 3600
        activity = Activity()
        newcomers, events = [], []
        expected = SIGNUPS_PER_MEMBER_DAY * self.next_number * hours / 24
        for _ in range(int(expected) + (rng.random() < expected - int(expected))):
            member, signup = self.program.newcomer(rng, self.next_number, self._moment(since, until))
            self.next_number += 1
            newcomers.append(member)
            events.append({**signup, "simulated": True})
        activity.signups = len(newcomers)
        for member_id, count, joined, last in self._members(until):
            if rng.random() < self._daily_rate(count, joined, last, until) * hours / 24:
                events.append(self._purchase(member_id, self._moment(since, until)))
        activity.purchases = len(events) - len(newcomers)
        due = [item for item in self.pending if item[0] <= until]
        self.pending = [item for item in self.pending if item[0] > until]
        events += [self._purchase(member_id, when, caused=True) for when, member_id in due]
        activity.converted = len(due)
        source = f"demo simulation {since:%Y-%m-%d %H:%M} to {until:%H:%M} UTC"
        if newcomers:
            import_rows(self.engine, self.settings, "members", enumerate(newcomers, 1), source=source, now=until)
        if events:
            import_rows(self.engine, self.settings, "events", enumerate(events, 1), source=source, now=until)
        self.totals.add(activity)
        return activity

    def respond(self, since: datetime, until: datetime) -> int:
        """Opens, clicks, bounces and unsubscribes for the emails sent in (since, until]; purchases
        the emails cause are queued for `live`. Returns how many sends were answered."""
        s, m, rng = sends_table, members_table, self.rng
        with self.engine.connect() as conn:
            sent = conn.execute(
                sa.select(s.c.send_id, s.c.flow, s.c.sent_at, m.c.member_id, m.c.email, m.c.tier, m.c.nps_score)
                .join(m, m.c.id == s.c.member_ref)
                .where(s.c.state == "sent", s.c.sent_at > since, s.c.sent_at <= until).order_by(s.c.id)).all()
        rows: list[dict[str, Any]] = []
        bounces, leaving = [], []
        for send_id, flow, sent_at, member_id, email, tier, nps in sent:
            response = RESPONSES.get(flow, OTHER)
            appetite = self._appetite(tier, nps)
            if rng.random() < BOUNCE:
                rows.append(self._event(send_id, "bounce", sent_at + timedelta(seconds=30)))
                bounces.append((email, sent_at))
                continue
            if rng.random() < MACHINE_OPEN:
                rows.append(self._event(send_id, "open", sent_at + timedelta(minutes=1), machine=True))
            if rng.random() < BOT_CLICK:
                rows.append(self._event(send_id, "click", sent_at + timedelta(seconds=5), bot=True))
            opened = rng.random() < min(0.95, response.open * appetite)
            clicked = opened and rng.random() < min(0.9, response.click * appetite)
            if opened:
                seen = sent_at + timedelta(minutes=rng.uniform(3, 300))
                rows.append(self._event(send_id, "open", seen))
                if clicked:
                    rows.append(self._event(send_id, "click", seen + timedelta(minutes=rng.uniform(0.5, 10))))
            if rng.random() < response.unsubscribe / appetite:
                leaving.append((send_id, sent_at + timedelta(minutes=rng.uniform(5, 300))))
            chance = response.convert * appetite * (1 if clicked else 1 / 3 if opened else 0)
            if rng.random() < chance:
                later = timedelta(seconds=rng.uniform(3600, self.window.total_seconds() * 0.9))
                self.pending.append((sent_at + later, member_id))
        if rows:
            with db.writer(self.engine).begin() as conn:
                conn.execute(tracking_events_table.insert(), rows)
                for email, when in bounces:
                    suppression.add(conn, email, "hard_bounce", when, detail="simulated bounce", source="bounce")
        for send_id, when in leaving:
            unsubscribe(self.engine, send_id, when, "link", event_source=SOURCE)
        return len(sent)

    def _members(self, now: datetime) -> Sequence[Any]:
        """Who can buy and their history, read again once a simulated day (rates change slowly)."""
        if self._snapshot_at is None or now - self._snapshot_at >= timedelta(days=1):
            m = members_table
            with self.engine.connect() as conn:
                # in a fixed order: the same seed gives the same purchases on any database
                self._snapshot = conn.execute(sa.select(m.c.member_id, m.c.purchase_count, m.c.joined_at,
                                                        m.c.last_purchase_at).order_by(m.c.id)).all()
            self._snapshot_at = now
        return self._snapshot

    def _daily_rate(self, count: int, joined: datetime | None, last: datetime | None, now: datetime) -> float:
        days = max((now - joined).days, 0) if joined else 365
        rate = min(max((count + 1) / (days + 60), 0.001), 0.03)
        if last is not None and (now - last).days >= LAPSED_DAYS:
            rate *= LAPSED_FACTOR
        return rate

    def _appetite(self, tier: str, nps: int | None) -> float:
        mood = 1.0 if nps is None else 1.25 if nps >= 9 else 0.75 if nps <= 6 else 1.0
        return (0.85 + 0.12 * self.order.get(tier, 0)) * mood

    def _moment(self, since: datetime, until: datetime) -> datetime:
        """A whole second in (since, until]."""
        seconds = int((until - since).total_seconds())
        return since + timedelta(seconds=1 + int(self.rng.random() * seconds) % seconds)

    def _purchase(self, member_id: str, when: datetime, caused: bool = False) -> dict[str, Any]:
        self.purchases += 1
        return {"event_id": f"sim-{self.purchases}", "member_id": member_id, "type": "purchase",
                "occurred_at": when.replace(microsecond=0).isoformat(),
                "amount": str(self.program.purchase_amount(self.rng)),
                "items": self.program.profile.items_in_order(self.rng), "simulated": True,
                **({"after_email": True} if caused else {})}

    def _event(self, send_id: str, kind: str, when: datetime, *, machine: bool = False,
               bot: bool = False) -> dict[str, Any]:
        return {"send_id": send_id, "kind": kind, "source": SOURCE, "occurred_at": when,
                "url": "https://senvang.example/offers" if kind == "click" else None, "link": 0 if kind == "click" else None,
                "user_agent": USER_AGENT, "ip": None, "machine": machine, "bot": bot, "provider_event_id": None,
                "detail": {"simulated": True}}

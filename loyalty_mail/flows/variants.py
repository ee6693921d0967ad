"""A/B variants: which variant a member gets, and the winner once a test has one.

Assignment is a pure function of (flow or step name, member id): the first 8 bytes of
SHA-256("variant", name, member id) as a number in [0, 1), compared with the cumulative weights
in the order the variants are written. The same member gets the same variant on every run, in
every process and on every machine; adding members never moves anyone. Once a winner is recorded
for the name (`variant_winners`, written here only), every member assigned from then on gets it;
what the ledger already holds is never changed. A winner belongs to the test it ended: its figures
keep the digest of the variants (`variant_set`: each one's name, template and subject), and once
the variants change it no longer applies (a new winner of the new test replaces it).

A journey's `send` step calls `choose` with its own name (e.g. `welcome_series.reminder`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from .. import db
from ..config import VariantSettings
from ..models import variant_winners_table

SCALE = 2 ** 64


def position(name: str, member_id: str) -> float:
    """Where a member falls in [0, 1) for the test `name`: stable across runs and processes."""
    digest = hashlib.sha256(f"variant\x00{name}\x00{member_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / SCALE


def assign(name: str, member_id: str, variants: Sequence[VariantSettings]) -> VariantSettings:
    """The variant of `variants` (by weight) that member `member_id` gets in the test `name`."""
    total = sum(v.weight for v in variants)
    point = position(name, member_id) * total
    running = 0
    for variant in variants:
        running += variant.weight
        if point < running:
            return variant
    return variants[-1]


def variant_set(variants: Sequence[VariantSettings]) -> str:
    """A digest of what a test compares: each variant's name, template and subject, in order."""
    shape = [[v.name, v.template, v.subject] for v in variants]
    return hashlib.sha256(json.dumps(shape).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Winner:
    """A recorded end of a test."""

    flow: str
    variant: str
    metric: str
    figures: dict[str, Any]
    decided_at: datetime

    def ends(self, variants: Sequence[VariantSettings]) -> bool:
        """Whether this winner ended the test of these variants: its variant is one of them and
        (when recorded with one) its digest is theirs."""
        recorded = self.figures.get("variant_set")
        return (any(v.name == self.variant for v in variants)
                and (recorded is None or recorded == variant_set(variants)))


def choose(name: str, member_id: str, variants: Sequence[VariantSettings],
           winners: dict[str, Winner]) -> VariantSettings | None:
    """The variant to send: the recorded winner of `name`, or the member's own by weight; None
    when there are no variants."""
    if not variants:
        return None
    winner = winners.get(name)
    if winner is not None and winner.ends(variants):
        for variant in variants:
            if variant.name == winner.variant:
                return variant
    return assign(name, member_id, variants)


def winners(conn: sa.Connection, at: datetime) -> dict[str, Winner]:
    """Every test's winner recorded by `at` (a dry run at a past instant replays that instant)."""
    w = variant_winners_table
    rows = conn.execute(sa.select(w).where(w.c.decided_at <= at))
    return {r.flow: Winner(r.flow, r.variant, r.metric, dict(r.figures or {}), r.decided_at) for r in rows}


def record_winner(engine: sa.Engine, winner: Winner) -> bool:
    """Record the end of a test; False when one was already recorded (by this or another process).
    A winner of an earlier test of the same name (another `variant_set`) is replaced."""
    with engine.begin() as conn:
        return write_winner(conn, winner)


def write_winner(conn: sa.Connection, winner: Winner) -> bool:
    """record_winner on `conn`, in its transaction (a dry run writes there and rolls back)."""
    w = variant_winners_table
    statement = db.insert_ignoring_duplicates(w, conn.dialect.name)
    before = conn.execute(sa.select(w.c.id, w.c.figures).where(w.c.flow == winner.flow)
                          .with_for_update()).first()
    if before is not None and dict(before.figures or {}).get("variant_set") != winner.figures.get("variant_set"):
        conn.execute(w.delete().where(w.c.id == before.id))
    inserted = conn.execute(statement.values(  # RETURNING: psycopg's rowcount says 1 on a conflict
        flow=winner.flow, variant=winner.variant, metric=winner.metric, figures=winner.figures,
        decided_at=winner.decided_at).returning(w.c.id)).first()
    return inserted is not None

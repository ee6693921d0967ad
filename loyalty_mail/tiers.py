"""The tier ladder from config: which tier a points (or spend) figure earns, and tier order."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from decimal import Decimal

import sqlalchemy as sa

from .config import TierLevel, TierSettings


@dataclass(frozen=True)
class TierLadder:
    """Ordered tiers, lowest first; a member holds the highest tier whose threshold they reach."""

    basis: str
    levels: tuple[TierLevel, ...]
    # With tiers.qualification the tier review moves members (tier_review.py), not the imports.
    held: bool = False

    @classmethod
    def from_settings(cls, settings: TierSettings) -> TierLadder:
        return cls(basis=settings.basis, levels=settings.levels, held=settings.qualification is not None)

    @cached_property
    def names(self) -> tuple[str, ...]:
        return tuple(level.name for level in self.levels)

    @cached_property
    def _steps(self) -> tuple[tuple[Decimal, str], ...]:
        """(threshold, name) of each level, the last first."""
        return tuple((level.threshold, level.name) for level in reversed(self.levels))

    def tier_for(self, points: int | Decimal, spend: Decimal) -> str:
        """The tier earned by this many points and this much spend (one of them is the basis): the
        last level whose threshold it reaches (a whole number and a Decimal compare exactly)."""
        value = points if self.basis == "points" else spend
        for threshold, name in self._steps:
            if value >= threshold:
                return name
        return self.levels[0].name

    def qualified_rank(self, value: Decimal) -> int:
        """The rank of the highest tier whose threshold `value` reaches."""
        return max(rank for rank, level in enumerate(self.levels) if value >= level.threshold)

    def rank(self, name: str) -> int:
        """0 for the lowest tier; raises KeyError for a name not on the ladder."""
        return self.names.index(name) if name in self.names else _unknown(name, self.names)

    def sql_tier(self, points: sa.ColumnElement, spend: sa.ColumnElement) -> sa.ColumnElement[str]:
        """A SQL expression computing the tier from points/spend columns (thresholds bound)."""
        value = points if self.basis == "points" else spend
        whens = [
            (value >= sa.bindparam(None, level.threshold, type_=sa.Numeric(18, 2)), level.name)
            for level in reversed(self.levels[1:])
        ]
        if not whens:
            return sa.literal(self.levels[0].name)
        return sa.case(*whens, else_=self.levels[0].name)


def _unknown(name: str, names: tuple[str, ...]) -> int:
    raise KeyError(f"unknown tier '{name}' (tiers: {', '.join(names)})")

"""What an edit to a segment changes: the members who enter and who leave.

Both versions compile against the same database at the same instant; a member enters when the new
rule holds and the old one does not (an unknown, SQL's NULL, counts as "does not").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from ..models import members_table
from .compiler import Context, compile_rule
from .deadline import time_limit
from .spec import Segment

EXAMPLE_COLUMNS = ("member_id", "email", "tier", "points", "last_purchase_at")


@dataclass(frozen=True)
class SegmentChange:
    """Members entering and leaving a segment between two versions of its rules, with examples;
    `count`: the members of the new version."""

    count: int
    entering: int
    leaving: int
    entering_examples: list[dict[str, Any]] = field(default_factory=list)
    leaving_examples: list[dict[str, Any]] = field(default_factory=list)


def segment_change(connection: sa.Connection, old: Segment, old_ctx: Context, new: Segment, new_ctx: Context,
                   *, examples: int = 5) -> SegmentChange:
    """Count (and show a few of) the members the edit from `old` to `new` adds and removes, and
    count the new version's members, in one pass over the members of either version."""
    old_rule = sa.func.coalesce(compile_rule(old.rule, old_ctx), sa.false())
    new_rule = sa.func.coalesce(compile_rule(new.rule, new_ctx), sa.false())
    entering = sa.and_(new_rule, sa.not_(old_rule))
    leaving = sa.and_(old_rule, sa.not_(new_rule))
    m = members_table
    counts = sa.select(sa.func.count().filter(new_rule), sa.func.count().filter(entering),
                       sa.func.count().filter(leaving)).select_from(m).where(sa.or_(old_rule, new_rule))
    columns = [m.c[name] for name in EXAMPLE_COLUMNS]
    with time_limit(connection, new_ctx.timeout, new.name):
        count, entered, left = connection.execute(counts).one()
        enter_rows = connection.execute(sa.select(*columns).where(entering).order_by(m.c.member_id)
                                        .limit(examples)).mappings().all() if entered else []
        leave_rows = connection.execute(sa.select(*columns).where(leaving).order_by(m.c.member_id)
                                        .limit(examples)).mappings().all() if left else []
    return SegmentChange(int(count), int(entered), int(left), [dict(r) for r in enter_rows],
                         [dict(r) for r in leave_rows])

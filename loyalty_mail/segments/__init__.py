"""Segments: audiences written as YAML rules, compiled to one SQL query each.

    spec.py       YAML -> typed rules (with file:line:column on every mistake)
    fields.py     the whitelist of fields and operators
    timeexpr.py   "90 days ago", "2 weeks", anniversaries
    compiler.py   rules -> SQL condition over members (pure)
    deadline.py   the time limit of one segment query (segments.timeout)
    explain.py    why one member is not in a segment: the failing rule and the member's value

The same rules evaluated in plain Python, the oracle the compiler is tested against, live in
tests/reference.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ..config import Settings
from ..errors import Problem
from ..models import members_table
from ..tiers import TierLadder
from .compiler import Context, compile_rule, segment_query
from .deadline import time_limit
from .spec import Segment, SegmentCatalog, load_segments

__all__ = ["Context", "Segment", "SegmentCatalog", "SegmentSql", "compile_rule", "context_for",
           "count_members", "list_members", "load_catalog", "member_segments", "segment_query", "segment_sql"]

SEGMENTS_DIR = "segments"
MEMBER_COLUMNS = ("member_id", "email", "first_name", "last_name", "locale", "timezone", "tier", "points",
                  "total_spend", "purchase_count", "last_purchase_at", "nps_score")


def load_catalog(settings: Settings) -> tuple[SegmentCatalog, list[Problem]]:
    """Every segment in the program's segments/ folder, and every problem found in them."""
    return load_segments(settings.project_dir / SEGMENTS_DIR, TierLadder.from_settings(settings.tiers),
                         topics=tuple(topic.name for topic in settings.topics))


def context_for(settings: Settings, catalog: SegmentCatalog, at: datetime, dialect: str) -> Context:
    program = settings.program
    return Context(at=at, ladder=TierLadder.from_settings(settings.tiers), default_locale=program.default_locale,
                   default_timezone=program.default_timezone, clv_years=settings.segments.clv_years,
                   catalog=catalog, dialect=dialect, timeout=settings.segments.timeout.total_seconds(),
                   topics=tuple((topic.name, topic.default) for topic in settings.topics),
                   qualification=settings.tiers.qualification.measure if settings.tiers.qualification else None,
                   qualification_period=settings.tiers.qualification.period if settings.tiers.qualification else None,
                   reward_costs=tuple(reward.cost for reward in settings.rewards))


def count_members(connection: sa.Connection, segment: Segment, ctx: Context) -> int:
    """How many members are in `segment`; SegmentTimeout past ctx.timeout."""
    query = sa.select(sa.func.count()).select_from(members_table).where(compile_rule(segment.rule, ctx))
    with time_limit(connection, ctx.timeout, segment.name):
        return connection.execute(query).scalar_one()


def member_segments(connection: sa.Connection, catalog: SegmentCatalog, ctx: Context, member_ref: int) -> list[str]:
    """The names of the segments one member is in at ctx.at."""
    m = members_table
    return [name for name, segment in sorted(catalog.segments.items())
            if connection.execute(sa.select(m.c.id).where(m.c.id == member_ref, compile_rule(segment.rule, ctx)))
            .first() is not None]


def list_members(connection: sa.Connection, segment: Segment, ctx: Context, *,
                 limit: int | None = None) -> list[dict[str, Any]]:
    columns = [members_table.c[name] for name in MEMBER_COLUMNS]
    query = segment_query(segment.rule, ctx, *columns).order_by(members_table.c.member_id)
    if limit is not None:
        query = query.limit(limit)
    with time_limit(connection, ctx.timeout, segment.name):
        return [dict(row) for row in connection.execute(query).mappings()]


@dataclass(frozen=True)
class SegmentSql:
    """The SQL that runs for a segment, with its bound parameters (never inlined)."""

    sql: str
    params: dict[str, Any]


def segment_sql(segment: Segment, ctx: Context, dialect: sa.Dialect) -> SegmentSql:
    compiled = segment_query(segment.rule, ctx, members_table.c.member_id).compile(
        dialect=dialect, compile_kwargs={"render_postcompile": True})
    return SegmentSql(str(compiled), dict(compiled.params))

"""The segments page: each segment's member count at the instant, its rules as understood, the
SQL it compiles to, a sample of members; and what the file's edit changes against git HEAD."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ..errors import LoyaltyMailError, Problem
from ..segments import SEGMENTS_DIR, Segment, count_members, list_members, segment_sql
from ..segments.changes import SegmentChange, segment_change
from ..segments.describe import describe
from ..segments.spec import SegmentParser
from ..tiers import TierLadder
from ..yaml_source import load_yaml_text
from .git import head_version
from .program import ProgramState, Workspace

SAMPLE_SIZE = 10


@dataclass
class Comparison:
    """The segment against its version at git HEAD."""

    status: str                      # committed, unchanged, new_file, not_git, error
    message: str = ""
    change: SegmentChange | None = None


@dataclass
class SegmentView:
    name: str
    file: str
    description: str = ""
    count: int | None = None
    rules: list[str] = field(default_factory=list)
    sql: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    sample: list[dict[str, Any]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    comparison: Comparison | None = None


def segment_counts(workspace: Workspace, state: ProgramState) -> tuple[list[tuple[Segment, int | str]], list[Problem]]:
    """Every valid segment with its member count (or why it could not be counted); the problems."""
    catalog, problems = state.segments()
    assert state.settings is not None  # segments() raised otherwise
    ctx = workspace.segment_context(state.settings, catalog)
    rows: list[tuple[Segment, int | str]] = []
    with workspace.engine().connect() as connection:
        for segment in sorted(catalog.segments.values(), key=lambda s: s.name):
            try:
                rows.append((segment, count_members(connection, segment, ctx)))
            except LoyaltyMailError as exc:
                rows.append((segment, str(exc)))
    return rows, problems


def segment_view(workspace: Workspace, state: ProgramState, name: str) -> SegmentView:
    """One segment in full, with the comparison against HEAD."""
    catalog, problems = state.segments()
    settings = state.settings
    assert settings is not None
    file = segment_file(workspace, name)
    view = SegmentView(name, file)
    view.problems = [p for p in problems if p.location is not None and Path(p.location.file).name == Path(file).name]
    if name not in catalog.segments:
        if not view.problems:
            view.problems = [Problem(None, f"no segment named '{name}' (segments: "
                                           f"{', '.join(sorted(catalog.segments)) or 'none'})")]
        return view
    segment = catalog.segments[name]
    view.description, view.rules = segment.description, describe(segment.rule)
    engine = workspace.engine()
    ctx = workspace.segment_context(settings, catalog)
    compiled = segment_sql(segment, ctx, engine.dialect)
    view.sql, view.params = compiled.sql, compiled.params
    try:
        with engine.connect() as connection:
            view.comparison = compare_with_head(workspace, state, segment, connection)
            change = view.comparison.change
            view.count = change.count if change is not None else count_members(connection, segment, ctx)
            view.sample = list_members(connection, segment, ctx, limit=SAMPLE_SIZE)
    except LoyaltyMailError as exc:
        view.problems.append(Problem(None, str(exc)))
    return view


def segment_file(workspace: Workspace, name: str) -> str:
    """The segment's file, relative to the program directory (.yaml, or .yml if that is what exists)."""
    for suffix in (".yaml", ".yml"):
        try:
            if (workspace.project_dir / SEGMENTS_DIR / f"{name}{suffix}").is_file():
                return f"{SEGMENTS_DIR}/{name}{suffix}"
        except OSError:  # a name no file can have (too long, a NUL): no such segment
            break
    return f"{SEGMENTS_DIR}/{name}.yaml"


def compare_with_head(workspace: Workspace, state: ProgramState, segment: Segment,
                      connection: sa.Connection) -> Comparison:
    """Members entering and leaving between the committed version of the file and the one on disk."""
    settings = state.settings
    assert settings is not None
    relative = segment_file(workspace, segment.name)
    head = head_version(workspace.project_dir, relative)
    if head.text is None:
        return Comparison(head.status, head.message)
    try:
        current = (workspace.project_dir / relative).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):  # removed or renamed since the segments were loaded
        return Comparison("error", f"{relative} changed while it was read (renamed or removed?): the page "
                                   "reloads with the files as they are now")
    if current == head.text:
        return Comparison("unchanged", "the file is as committed at HEAD")
    catalog, _ = state.segments()
    try:
        doc = load_yaml_text(head.text, f"HEAD:{relative}")
        parser = SegmentParser(doc, TierLadder.from_settings(settings.tiers))
        old = parser.segment(segment.name)
        if old is None or parser.problems:
            return Comparison("error", "the version at HEAD does not load: "
                                       + "; ".join(str(p) for p in parser.problems[:3]))
        ctx = workspace.segment_context(settings, catalog)
        return Comparison("committed", change=segment_change(connection, old, ctx, segment, ctx))
    except LoyaltyMailError as exc:
        return Comparison("error", f"the version at HEAD cannot be compared: {exc}")

"""Commands about segments: list, show, count, members."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from ..csv_output import csv_writer
from ..errors import ConfigError
from ..segments import (
    Context,
    SegmentCatalog,
    context_for,
    count_members,
    list_members,
    load_catalog,
    segment_sql,
)
from ..segments.describe import describe
from . import cli
from .common import CliContext, at_option, format_option, pass_cli, print_json, print_table, resolve_at, to_jsonable

if TYPE_CHECKING:
    import sqlalchemy as sa


def _catalog(obj: CliContext) -> SegmentCatalog:
    """The program's segments; any problem in any segment file stops the command."""
    catalog, problems = load_catalog(obj.runtime.settings)
    if problems:
        raise ConfigError(problems)
    return catalog


def _evaluation(obj: CliContext, catalog: SegmentCatalog, at: str | None) -> tuple[sa.Engine, Context]:
    """The database, and the context segments are evaluated in at --at (or now)."""
    runtime = obj.runtime
    engine = runtime.engine()
    return engine, context_for(runtime.settings, catalog, resolve_at(runtime, at), engine.dialect.name)


@cli.group()
def segments() -> None:
    """Audiences defined as YAML rules in segments/."""


@segments.command("list")
@click.option("--count", "with_count", is_flag=True, help="Also count each segment's members.")
@at_option
@format_option("table", "json")
@pass_cli
def segments_list(obj: CliContext, with_count: bool, at: str | None, output_format: str) -> None:
    """List the segments with their descriptions (and member counts with --count).

    \b
    Example:
      loyalty-mail segments list --count
    """
    catalog = _catalog(obj)
    rows: list[tuple[str | int, ...]]
    if with_count:
        engine, ctx = _evaluation(obj, catalog, at)
        with engine.connect() as connection:
            rows = [(s.name, s.description, count_members(connection, s, ctx))
                    for s in sorted(catalog.segments.values(), key=lambda s: s.name)]
    else:
        rows = [(s.name, s.description) for s in sorted(catalog.segments.values(), key=lambda s: s.name)]
    columns = ["segment", "description"] + (["members"] if with_count else [])
    if output_format == "json":
        print_json([dict(zip(columns, row)) for row in rows])
    else:
        print_table(None, columns, rows, numeric=["members"])


@segments.command("show")
@click.argument("name")
@at_option
@pass_cli
def segments_show(obj: CliContext, name: str, at: str | None) -> None:
    """Show a segment's rules as understood and the SQL it compiles to (with its parameters).

    \b
    Example:
      loyalty-mail segments show lapsed_vip
    """
    catalog = _catalog(obj)
    segment = catalog.get(name)
    engine, ctx = _evaluation(obj, catalog, at)
    compiled = segment_sql(segment, ctx, engine.dialect)
    click.echo(f"{segment.name}: {segment.description}")
    click.echo(f"defined in {segment.file}, evaluated at {ctx.at.isoformat()}")
    click.echo()
    click.echo("Rules:")
    for line in describe(segment.rule):
        click.echo(f"  {line}")
    click.echo()
    click.echo(f"SQL ({engine.dialect.name}):")
    click.echo(compiled.sql)
    click.echo()
    click.echo("Parameters:")
    for key, value in compiled.params.items():
        shown = to_jsonable(value)
        if isinstance(shown, list) and len(shown) > 8:
            shown = f"{shown[:3]} ... ({len(shown)} values)"
        click.echo(f"  {key} = {shown}")


@segments.command("count")
@click.argument("name")
@at_option
@pass_cli
def segments_count(obj: CliContext, name: str, at: str | None) -> None:
    """Print how many members are in a segment (a bare number, for scripts).

    \b
    Example:
      loyalty-mail segments count vip --at 2026-12-24T09:00:00
    """
    catalog = _catalog(obj)
    segment = catalog.get(name)
    engine, ctx = _evaluation(obj, catalog, at)
    with engine.connect() as connection:
        click.echo(count_members(connection, segment, ctx))


@segments.command("members")
@click.argument("name")
@at_option
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many members.")
@format_option("table", "csv", "json")
@pass_cli
def segments_members(obj: CliContext, name: str, at: str | None, limit: int | None, output_format: str) -> None:
    """List the members of a segment, ordered by member_id.

    \b
    Example:
      loyalty-mail segments members promoters --limit 20
      loyalty-mail segments members lapsed_vip --format csv > lapsed_vip.csv
    """
    catalog = _catalog(obj)
    segment = catalog.get(name)
    engine, ctx = _evaluation(obj, catalog, at)
    with engine.connect() as connection:
        rows = list_members(connection, segment, ctx, limit=limit)
    if output_format == "json":
        print_json(rows)
    elif output_format == "csv":
        writer = csv_writer(sys.stdout)
        columns = list(rows[0]) if rows else ["member_id", "email"]
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row[c] is None else to_jsonable(row[c]) for c in columns])
    else:
        shown = ["member_id", "email", "tier", "points", "locale", "last_purchase_at"]
        print_table(f"{segment.name}: {len(rows):,} member(s)" + (f" (limit {limit})" if limit else ""),
                    shown, [[row[c] for c in shown] for row in rows], numeric=["points"])

"""Commands that put data in and show it: members, events, seed."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .. import consent, suppression
from ..csv_output import csv_writer
from ..importing import ImportSummary, InputFile, import_file
from ..members import member_profile
from ..seeding import seed_program
from . import cli
from .common import (
    CliContext,
    at_option,
    byte_progress,
    count_progress,
    counted,
    format_option,
    pass_cli,
    print_json,
    print_table,
    resolve_at,
    to_jsonable,
)


def _import_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("--rejects", "rejects_path", type=click.Path(dir_okay=False, path_type=Path),
                        help="Where --skip-invalid writes the bad rows [default: beside FILE, e.g. members.rejects.csv "
                             "for members.csv].")(func)
    func = click.option("--skip-invalid", is_flag=True,
                        help="Import the good rows and write the bad ones, with reasons, to a file.")(func)
    func = click.option("--format", "file_format", type=click.Choice(["csv", "jsonl"]),
                        help="File format [default: from the extension].")(func)
    return click.argument("file", type=click.Path(dir_okay=False, path_type=Path))(func)


def _run_import(obj: CliContext, kind: str, file: Path, file_format: str | None, skip_invalid: bool,
                rejects_path: Path | None, workers: int | None = None) -> None:
    runtime = obj.runtime
    input_file = InputFile.open(file, file_format)
    started = time.perf_counter()
    with byte_progress(f"Importing {kind}", input_file.size) as advance:
        summary = import_file(runtime.engine(), runtime.settings, kind, input_file, now=runtime.now(),
                              skip_invalid=skip_invalid, rejects_path=rejects_path, on_bytes=advance,
                              workers=workers)
    _print_summary(kind, summary, time.perf_counter() - started)


def _print_summary(kind: str, s: ImportSummary, seconds: float) -> None:
    rate = f", {s.rows_read / seconds:,.0f} rows/s" if seconds > 0 and s.rows_read else ""
    if kind == "members":
        counts = f"{s.inserted:,} inserted, {s.updated:,} updated"
    else:
        counts = f"{counted(s.inserted, 'event')} added, {counted(s.updated, 'member')} updated"
        if s.skipped:
            counts += f", {s.skipped:,} already imported (skipped)"
    click.echo(f"{s.source}: {counted(s.rows_read, 'row')} read, {counts}, {s.rejected:,} rejected, "
               f"{counted(s.tier_changes, 'tier change')} ({seconds:.1f} s{rate}).")
    if s.rejects_file:
        click.echo(f"Rejected rows and their reasons: {s.rejects_file}")


@cli.group()
def members() -> None:
    """Import and look up members."""


@members.command("import")
@_import_options
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Processes that validate a big CSV (8 MB or more) going into SQLite "
                   "[default: one per core; 0 or 1: validate in this process].")
@pass_cli
def members_import(obj: CliContext, file: Path, file_format: str | None, skip_invalid: bool,
                   rejects_path: Path | None, workers: int | None) -> None:
    """Import or update members from a CSV or JSON Lines FILE (upsert by member_id).

    Columns: member_id and email (required), first_name, last_name, locale, timezone,
    joined_at, birthday, points, total_spend, purchase_count, last_purchase_at, nps_score,
    subscribed. Any other column becomes a custom attribute. Blank cells keep the stored value.
    Times without an offset are in the program's time zone.

    By default one bad row fails the whole import and nothing is written; every bad row is
    listed with its row number (the header is row 1).

    \b
    Example:
      loyalty-mail members import members.csv
      loyalty-mail members import crm-export.jsonl --skip-invalid --rejects bad.csv
    """
    _run_import(obj, "members", file, file_format, skip_invalid, rejects_path, workers)


@members.command("show")
@click.argument("member_id")
@format_option("table", "json")
@pass_cli
def members_show(obj: CliContext, member_id: str, output_format: str) -> None:
    """Show one member: fields, tier, custom attributes, recent events and tier history.

    \b
    Example:
      loyalty-mail members show LM0000042
      loyalty-mail members show LM0000042 --format json
    """
    runtime = obj.runtime
    with runtime.engine().connect() as connection:
        profile = member_profile(connection, member_id)
    if output_format == "json":
        print_json({**profile.member, "event_count": profile.event_count,
                    "recent_events": profile.recent_events, "tier_history": profile.tier_history})
        return
    member = profile.member
    fields = [(k, v) for k, v in member.items() if k != "attributes"]
    fields += [(f"attributes.{k}", v) for k, v in sorted(member["attributes"].items())]
    print_table(f"Member {member_id}", ["field", "value"], fields)
    click.echo()
    print_table(f"Recent events ({len(profile.recent_events)} of {profile.event_count:,})",
                ["occurred_at", "type", "amount", "points", "properties"],
                [(e["occurred_at"], e["type"], e["amount"], e["points"],
                  ", ".join(f"{k}={v}" for k, v in to_jsonable(e["properties"]).items()))
                 for e in profile.recent_events], numeric=["amount", "points"])
    click.echo()
    print_table("Tier history", ["changed_at", "from", "to", "why"],
                [(h["changed_at"], h["from_tier"], h["to_tier"], h["reason"]) for h in profile.tier_history])


@members.command("consent")
@click.argument("member_id")
@format_option("table", "json", "csv")
@pass_cli
def members_consent(obj: CliContext, member_id: str, output_format: str) -> None:
    """Show a member's consent: what they receive now (all email: subscribed, unsubscribed, nothing
    while the address is suppressed or email is paused, service email only while the address
    awaits confirmation; each topic; a pause) and the consent log, every change with its time,
    source and topic, oldest first.

    \b
    Example:
      loyalty-mail members consent LM0000042
      loyalty-mail members consent LM0000042 --format csv > consent-LM0000042.csv
    """
    runtime = obj.runtime
    topics = {topic.name: topic.default for topic in runtime.settings.topics}
    with runtime.engine().connect() as connection:
        ref = consent.member_ref(connection, member_id)
        now_ = consent.preferences(connection, ref, topics)
        log = consent.history(connection, ref)
        suppressed = suppression.reason_for(connection, now_.email) if now_ else None
    assert now_ is not None
    receives = now_.all_email(runtime.now(), suppressed)
    columns = ["occurred_at", "action", "topic", "source", "detail"]
    if output_format == "json":
        print_json({"member_id": member_id, "subscribed": now_.subscribed, "all_email": receives,
                    "suppressed": suppressed, "unconfirmed_since": now_.unconfirmed_since, "topics": now_.topics,
                    "paused_until": now_.paused_until if now_.paused(runtime.now()) else None, "log": log})
        return
    if output_format == "csv":
        buffer = io.StringIO()
        writer = csv_writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([to_jsonable(entry[c]) for c in columns] for entry in log)
        click.echo(buffer.getvalue(), nl=False)
        return
    state: list[tuple[str, Any]] = [("all email", receives)]
    state += [(f"topic {name}", "subscribed" if on else "unsubscribed") for name, on in now_.topics.items()]
    if now_.paused(runtime.now()):
        state.append(("paused until", now_.paused_until))
    print_table(f"Consent of {member_id} now", ["what", "state"], state)
    click.echo()
    print_table(f"Consent log ({len(log)})", columns,
                [(e["occurred_at"], e["action"], e["topic"] or "(all email)", e["source"], e["detail"] or "")
                 for e in log])


@cli.group()
def events() -> None:
    """Import what members did: signups, purchases, points earned and redeemed."""


@events.command("import")
@_import_options
@pass_cli
def events_import(obj: CliContext, file: Path, file_format: str | None, skip_invalid: bool,
                  rejects_path: Path | None) -> None:
    """Import events from a JSON Lines or CSV FILE and update members' points and tiers.

    Columns: member_id, type, occurred_at (required); amount (required for a purchase),
    currency (must be the program's), points, event_id (makes re-imports safe), items; any
    other column is kept as an event property. Purchases add to the member's purchase count,
    spend and points (amount x program.points_per_currency_unit unless points is given);
    points_redeemed subtracts points. Tier changes are recorded at the event's time.

    \b
    Example:
      loyalty-mail events import purchases.jsonl
      loyalty-mail events import pos-export.csv --skip-invalid
    """
    _run_import(obj, "events", file, file_format, skip_invalid, rejects_path)


@cli.command()
@click.option("--members", "count", type=click.IntRange(1, 10_000_000), required=True,
              help="How many members to generate.")
@click.option("--seed", type=int, default=1, show_default=True, help="Random seed (same seed, same program).")
@at_option
@pass_cli
def seed(obj: CliContext, count: int, seed: int, at: str | None) -> None:
    """Generate a realistic demo program into the configured database.

    Members get vi or en locales, time zones, birthdays, NPS scores and signup dates over the
    last two years; purchase histories follow real CDNOW purchase data (orders per customer,
    gaps and order values). The same --seed and --at give the same data.

    \b
    Example:
      loyalty-mail seed --members 5000 --seed 7
    """
    runtime = obj.runtime
    now = resolve_at(runtime, at)
    started = time.perf_counter()
    with count_progress("Seeding", count * 2) as step:
        members_summary, events_summary = seed_program(
            runtime.engine(), runtime.settings, members=count, seed=seed, now=now, on_member=step)
    click.echo(f"Seeded {members_summary.inserted:,} new and {members_summary.updated:,} existing "
               f"{'member' if members_summary.inserted + members_summary.updated == 1 else 'members'}, "
               f"{counted(events_summary.inserted, 'event')}, {counted(events_summary.tier_changes, 'tier change')} "
               f"({time.perf_counter() - started:.1f} s).")

"""Commands about email templates: list and preview."""

from __future__ import annotations

import tempfile
import textwrap
import webbrowser
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any

import click
from rich.text import Text

from ..errors import LoyaltyMailError
from ..errors import shown as quoted
from ..members import member_profile
from ..rendering import TEMPLATES_DIR, Renderer
from ..rendering.renderer import CompiledVariant
from ..rendering.checks import sample_members, sample_occurrence
from ..rendering.occurrence_values import OccurrenceValueError, occurrence_value, with_standing
from ..rendering.static_check import OCCURRENCE_FIELDS, OCCURRENCE_KINDS
from . import cli
from .common import (CliContext, at_option, format_option, pass_cli, print_json, print_table, resolve_at,
                     stdout, write_output)


@cli.group()
def templates() -> None:
    """Emails written as Jinja templates in templates/."""


@templates.command("list")
@format_option("table", "json")
@pass_cli
def templates_list(obj: CliContext, output_format: str) -> None:
    """List every email, its locales, its subject and how its CSS is inlined.

    \b
    Example:
      loyalty-mail templates list
    """
    renderer = obj.runtime.renderer()
    rows = []
    compiled_variants = []
    for email in renderer.catalog.names:
        for locale, variant in sorted(renderer.catalog.variants[email].items()):
            compiled = renderer.compiled(email, locale)
            compiled_variants.append(compiled)
            rows.append({
                "email": email, "locale": locale, "subject": variant.subject,
                "text": "own .txt" if variant.text_path else "from HTML",
                "inlining": _inlining(compiled),
            })
    if output_format == "json":
        print_json(rows)
        return
    notes: list[str] = []   # why an email is not simply compiled, each said once below the table
    table = []
    for row, compiled in zip(rows, compiled_variants, strict=True):
        inlining, note = _inlining_in_short(compiled)
        if note is not None:
            if note not in notes:
                notes.append(note)
            inlining += f" ({notes.index(note) + 1})"
        table.append([row["email"], row["locale"], " ".join(str(row["subject"]).split()), row["text"], inlining])
    print_table("Templates", ["email", "locale", "subject", "text", "inlining"], table, one_line=["subject"])
    console = stdout()
    for number, note in enumerate(notes, 1):  # wrapped to the terminal, indented under its number
        console.print(Text(textwrap.fill(note, width=max(console.width, 40), initial_indent=f"({number}) ",
                                         subsequent_indent="    ", break_on_hyphens=False)))


def _inlining(compiled: CompiledVariant) -> str:
    if compiled.fallback is not None:
        return f"per email ({compiled.fallback.location}: {compiled.fallback.reason})"
    if compiled.dynamic:
        return f"compiled; applied per email: {_rules(compiled)}"
    return "compiled"


def _inlining_in_short(compiled: CompiledVariant) -> tuple[str, str | None]:
    """How an email's CSS is inlined, in a word for the table, and the note that says why."""
    if compiled.fallback is not None:
        return "per email", f"inlined per email: {compiled.fallback.location}: {compiled.fallback.reason}"
    if compiled.dynamic:
        return "compiled", f"rules applied per email: {_rules(compiled)}"
    return "compiled", None


def _rules(compiled: CompiledVariant) -> str:
    return ", ".join(f"'{selector}' ({at})" for selector, at in compiled.dynamic)


def _occurrence(template: str, values: tuple[str, ...], renderer: Renderer) -> dict[str, object]:
    """The sample occurrence of the trigger of the flow that sends `template` with each KEY=VALUE
    set; a key that no trigger gives, an unknown kind or a value the field cannot hold is an error."""
    occurrence: dict[str, object] = sample_occurrence(renderer, template)
    fields = sorted({name for names in OCCURRENCE_FIELDS.values() for name in names} - {"could_buy"})  # computed
    given: set[str] = set()
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{quoted(item)} is not KEY=VALUE", param_hint="--set")
        if key not in fields:
            raise click.BadParameter(f"unknown occurrence field {quoted(key)} (fields: {', '.join(fields)})",
                                     param_hint="--set")
        if key == "kind" and value not in OCCURRENCE_KINDS:
            raise click.BadParameter(f"unknown kind {quoted(value)} (kinds: {', '.join(OCCURRENCE_KINDS)})",
                                     param_hint="--set")
        try:
            occurrence[key] = occurrence_value(key, value, renderer.settings)
        except OccurrenceValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--set") from None
        given.add(key)
    return with_standing(occurrence, given, renderer.settings)


def _years_warning(member: Mapping[str, Any], occurrence: Mapping[str, object], now: datetime,
                   values: tuple[str, ...]) -> str | None:
    """A warning when `--set years=N` is not how long the member has been a member at `now`."""
    if not any(item.startswith("years=") for item in values) or not isinstance(occurrence.get("years"), int):
        return None
    joined = member.get("joined_on") or member.get("joined_at")
    if isinstance(joined, datetime):
        joined = joined.date()
    if not isinstance(joined, date):
        return None
    today = now.date()
    years = today.year - joined.year - ((today.month, today.day) < (joined.month, joined.day))
    if occurrence["years"] == years:
        return None
    return (f"warning: --set years={occurrence['years']}, but {member['member_id']} joined on "
            f"{joined.isoformat()}: {years} year{'s' if years != 1 else ''} on {today.isoformat()}")


@cli.command()
@click.argument("template")
@click.option("--member", "member_id", default=None, metavar="ID", help="Loyalty id of the member.")
@click.option("--sample", is_flag=True,
              help="Render for the sample member (SAMPLE000, see the README) instead of one in the database.")
@click.option("--locale", default=None, help="Render this locale's variant (one of program.locales) "
              "instead of the member's.")
@format_option("html", "text", "eml", default="html")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to this file instead of standard output.")
@click.option("--open", "open_browser", is_flag=True, help="Open the HTML in a web browser.")
@click.option("--set", "occurrence_values", multiple=True, metavar="KEY=VALUE",
              help="Set a field of the sample occurrence (e.g. kind=anniversary, years=3, balance=12000, "
              "affordable=coffee,spa_day, next=spa_day).")
@at_option
@pass_cli
def preview(obj: CliContext, template: str, member_id: str | None, sample: bool, locale: str | None,
            output_format: str, out: Path | None, open_browser: bool, occurrence_values: tuple[str, ...],
            at: str | None) -> None:
    """Show the exact email MEMBER would get from TEMPLATE, with untracked links.

    The occurrence (what triggered the email) is a sample for the trigger of the flow that
    sends TEMPLATE: a milestone of 5,000 points, a tier upgrade from the lowest tier to the
    next, the next tier at risk (its threshold)...; a milestone of 5,000 points for an email
    no flow sends. Change it with --set (an unknown field is an error; a number of years that
    is not the member's warns). --sample renders for the sample member, without a database.

    \b
    Example:
      loyalty-mail preview welcome --member LM0000001
      loyalty-mail preview milestone --member LM0000001 --set kind=anniversary --set years=3 --open
      loyalty-mail preview tier_upgrade --member LM0000001 --format eml --out upgrade.eml
      loyalty-mail preview welcome --sample --locale en
    """
    if sample == (member_id is not None):
        raise click.UsageError("give either --member ID or --sample")
    runtime = obj.runtime
    renderer = runtime.renderer()
    locales = renderer.settings.program.locales
    if locale is not None and locale not in locales:
        raise click.BadParameter(f"unknown locale {quoted(locale)} (program.locales: {', '.join(locales)})",
                                 param_hint="--locale")
    variant = renderer.variant(template, locale)  # unknown template: say so before touching the database
    if locale is not None and variant.locale != locale:  # rendered all the same: a send does the same
        click.echo(f"{TEMPLATES_DIR}/{template}/ has no {locale}.html: members with locale {locale} get "
                   f"{variant.locale}.html", err=True)
    occurrence = _occurrence(template, occurrence_values, renderer)
    now = resolve_at(runtime, at)
    member: Mapping[str, Any]
    if sample:
        member = sample_members(renderer, locale or renderer.settings.program.default_locale, now)[0]
    else:
        with runtime.engine().connect() as connection:
            member = member_profile(connection, str(member_id), recent=0).member
    warning = _years_warning(member, occurrence, now, occurrence_values)
    if warning:
        click.echo(warning, err=True)
    rendered = renderer.render(template, member, now=now, tracked=False,
                               locale=locale, flow={"name": "preview"}, occurrence=occurrence)
    content: bytes = {
        "html": lambda: rendered.html.encode(),
        "text": lambda: f"Subject: {rendered.subject}\n\n{rendered.text}".encode(),
        "eml": rendered.to_bytes,
    }[output_format]()
    if open_browser:
        target = out if out and output_format == "html" else Path(tempfile.mkstemp(suffix=".html")[1])
        write_output(target, rendered.html.encode())
        if not webbrowser.open(target.resolve().as_uri()):
            raise LoyaltyMailError(f"no web browser found; the preview is in {target}")
    if out is not None:
        write_output(out, content)
        click.echo(f"wrote {out} ({rendered.template}, {rendered.locale}: {rendered.subject})", err=True)
    elif not open_browser:
        click.echo(content.decode("utf-8", errors="replace"), nl=False)

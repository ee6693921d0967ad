"""Commands about email templates: list and preview."""

from __future__ import annotations

import tempfile
import webbrowser
from pathlib import Path

import click

from ..errors import LoyaltyMailError
from ..members import member_profile
from ..rendering.checks import sample_occurrences
from . import cli
from .common import CliContext, at_option, format_option, pass_cli, print_json, print_table, resolve_at


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
    for email in renderer.catalog.names:
        for locale, variant in sorted(renderer.catalog.variants[email].items()):
            compiled = renderer.compiled(email, locale)
            rows.append({
                "email": email, "locale": locale, "subject": variant.subject,
                "text": "own .txt" if variant.text_path else "from HTML",
                "inlining": "compiled" if compiled.fallback is None else f"per email ({compiled.fallback})",
            })
    if output_format == "json":
        print_json(rows)
        return
    print_table("Templates", ["email", "locale", "subject", "text", "inlining"],
                [list(row.values()) for row in rows])


def _occurrence(settings_values: tuple[str, ...], renderer) -> dict[str, object]:  # noqa: ANN001
    occurrence: dict[str, object] = dict(sample_occurrences(renderer)[1])
    for item in settings_values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"'{item}' is not KEY=VALUE", param_hint="--set")
        occurrence[key] = int(value) if value.isdigit() else value
    return occurrence


@cli.command()
@click.argument("template")
@click.option("--member", "member_id", required=True, metavar="ID", help="Loyalty id of the member.")
@click.option("--locale", default=None, help="Render this locale's variant instead of the member's.")
@format_option("html", "text", "eml", default="html")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to this file instead of standard output.")
@click.option("--open", "open_browser", is_flag=True, help="Open the HTML in a web browser.")
@click.option("--set", "occurrence_values", multiple=True, metavar="KEY=VALUE",
              help="Set a field of the sample occurrence (e.g. kind=anniversary, years=3).")
@at_option
@pass_cli
def preview(obj: CliContext, template: str, member_id: str, locale: str | None, output_format: str,
            out: Path | None, open_browser: bool, occurrence_values: tuple[str, ...],
            at: str | None) -> None:
    """Show the exact email MEMBER would get from TEMPLATE, with untracked links.

    The occurrence (what triggered the email) is a sample: milestone of 5,000 points, tier
    upgrade from the lowest tier to the next; change it with --set.

    \b
    Example:
      loyalty-mail preview welcome --member LM0000001
      loyalty-mail preview milestone --member LM0000001 --set kind=anniversary --set years=3 --open
      loyalty-mail preview tier_upgrade --member LM0000001 --format eml --out upgrade.eml
    """
    runtime = obj.runtime
    renderer = runtime.renderer()
    renderer.variant(template, locale)  # unknown template: say so before touching the database
    with runtime.engine().connect() as connection:
        member = member_profile(connection, member_id, recent=0).member
    rendered = renderer.render(template, member, now=resolve_at(runtime, at), tracked=False,
                               locale=locale, flow={"name": "preview"},
                               occurrence=_occurrence(occurrence_values, renderer))
    content: bytes = {
        "html": lambda: rendered.html.encode(),
        "text": lambda: f"Subject: {rendered.subject}\n\n{rendered.text}".encode(),
        "eml": rendered.to_bytes,
    }[output_format]()
    if open_browser:
        target = out if out and output_format == "html" else Path(tempfile.mkstemp(suffix=".html")[1])
        target.write_bytes(rendered.html.encode())
        if not webbrowser.open(target.resolve().as_uri()):
            raise LoyaltyMailError(f"no web browser found; the preview is in {target}")
    if out is not None:
        out.write_bytes(content)
        click.echo(f"wrote {out} ({rendered.template}, {rendered.locale}: {rendered.subject})", err=True)
    elif not open_browser:
        click.echo(content.decode("utf-8", errors="replace"), nl=False)

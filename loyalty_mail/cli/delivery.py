"""Commands about delivery: the outbox, the suppression list, test sends."""

from __future__ import annotations


import click

from .. import outbox as outbox_view
from .. import suppression
from ..members import member_profile
from .. import trial_send
from ..trial_send import sample_member_for
from ..transports import transport_for
from . import cli
from .common import CliContext, format_option, pass_cli, print_json, print_table, run_http_service


@cli.group()
def outbox() -> None:
    """The send ledger as a queue: what is waiting, sent, failed or unknown."""


@outbox.command("status")
@format_option("table", "json")
@pass_cli
def outbox_status(obj: CliContext, output_format: str) -> None:
    """Counts per state and flow, the oldest due send, and recent failures with reasons.

    \b
    Example:
      loyalty-mail outbox status
      loyalty-mail outbox status --format json
    """
    runtime = obj.runtime
    with runtime.engine().connect() as conn:
        report = outbox_view.status(conn, runtime.now())
    if output_format == "json":
        print_json(report)
        return
    print_table("Outbox", ["flow", "state", "count"], [list(r.values()) for r in report["counts"]])
    oldest = report["oldest_due"]
    click.echo(f"due now: {report['due_now']}" + (f" (oldest due {oldest:%Y-%m-%d %H:%M} UTC)" if oldest else ""))
    if report["recent_failures"]:
        print_table("Recent failures", ["send_id", "flow", "member_id", "state", "attempts", "reason"],
                    [[r["send_id"], r["flow"], r["member_id"], r["state"], r["attempts"], r["last_error"]]
                     for r in report["recent_failures"]])


@outbox.command("retry")
@click.option("--state", type=click.Choice(outbox_view.RETRYABLE), default="failed", show_default=True,
              help="Which sends to queue again.")
@click.option("--flow", default=None, metavar="NAME", help="Only this flow.")
@pass_cli
def outbox_retry(obj: CliContext, state: str, flow: str | None) -> None:
    """Queue failed (or unknown) sends again; the next `run --once` or daemon tick sends them.

    Sends in state unknown may already have reached the member: retry them only when you know
    they did not (e.g. the provider's logs).

    \b
    Example:
      loyalty-mail outbox retry
      loyalty-mail outbox retry --state unknown --flow welcome
    """
    runtime = obj.runtime
    with runtime.engine().begin() as conn:
        count = outbox_view.retry(conn, runtime.now(), state, flow)
    click.echo(f"queued {count} {state} send(s) again")


@cli.group()
def suppress() -> None:
    """Addresses that never get email (marketing or service)."""


@suppress.command("add")
@click.argument("emails", nargs=-1, required=True)
@click.option("--reason", type=click.Choice(suppression.REASONS), default="manual", show_default=True)
@click.option("--detail", default=None, help="A note kept with the entry.")
@pass_cli
def suppress_add(obj: CliContext, emails: tuple[str, ...], reason: str, detail: str | None) -> None:
    """Suppress one or more addresses.

    \b
    Example:
      loyalty-mail suppress add lan@example.com --detail "asked by phone"
    """
    runtime = obj.runtime
    with runtime.engine().begin() as conn:
        added = sum(suppression.add(conn, e, reason, runtime.now(), detail) for e in emails)
    click.echo(f"suppressed {added} address(es); {len(emails) - added} already were")


@suppress.command("remove")
@click.argument("email")
@pass_cli
def suppress_remove(obj: CliContext, email: str) -> None:
    """Take an address off the suppression list (it does not re-subscribe the member).

    \b
    Example:
      loyalty-mail suppress remove lan@example.com
    """
    with obj.runtime.engine().begin() as conn:
        suppression.remove(conn, email)
    click.echo(f"removed {email}")


@suppress.command("list")
@click.option("--reason", type=click.Choice(suppression.REASONS), default=None)
@format_option("table", "json")
@pass_cli
def suppress_list(obj: CliContext, reason: str | None, output_format: str) -> None:
    """The suppression list, newest first.

    \b
    Example:
      loyalty-mail suppress list --reason hard_bounce
    """
    with obj.runtime.engine().connect() as conn:
        rows = suppression.listing(conn, reason)
    if output_format == "json":
        print_json(rows)
    else:
        print_table("Suppressed", ["email", "reason", "detail", "since"], [list(r.values()) for r in rows])


@cli.command("send-test")
@click.argument("template")
@click.option("--to", "to", required=True, metavar="EMAIL", help="Where to send it.")
@click.option("--member", "member_id", default=None, metavar="ID",
              help="Personalise for this member (default: a sample member).")
@click.option("--locale", default=None, help="Which locale's variant.")
@pass_cli
def send_test(obj: CliContext, template: str, to: str, member_id: str | None, locale: str | None) -> None:
    """Send one real message through the configured transport, marked as a test.

    Test sends carry no tracked links, are not recorded in the ledger and never count in reports.

    \b
    Example:
      loyalty-mail send-test welcome --to me@example.com
      loyalty-mail send-test tier_upgrade --to me@example.com --member LM0000042 --locale en
    """
    runtime = obj.runtime
    renderer = runtime.renderer()
    now = runtime.now()
    trial_send.check_recipient(to)  # a wrong address or locale: said before anything is rendered
    trial_send.check_locale(renderer, locale)
    if member_id:
        renderer.variant(template, locale)  # unknown template: say so before touching the database
        with runtime.engine().connect() as conn:
            member = member_profile(conn, member_id, recent=0).member
    else:
        member = sample_member_for(renderer, template, locale, now)
    transport = transport_for(runtime.settings)
    try:
        email, result = trial_send.send_test(renderer, transport, template, member, to, locale=locale, now=now)
    finally:
        transport.close()
    click.echo(f"sent '{email.subject}' to {to} through {transport.name}"
               + (f" ({result.detail})" if result.detail else ""))


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8025, show_default=True)
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="uvicorn worker processes.")
@pass_cli
def serve(obj: CliContext, host: str, port: int, workers: int) -> None:
    """Run the tracking service: open pixel, click redirects, unsubscribe pages and one-click
    unsubscribe, SendGrid's Event Webhook, /health.

    Put it behind your HTTPS proxy at `tracking.base_url`. SIGTERM writes every accepted hit
    (in every worker) before the process exits 0. With --workers N, N processes share the port.

    \b
    Example:
      LOYALTY_MAIL_SECRET=... loyalty-mail serve --host 0.0.0.0 --port 8025
      LOYALTY_MAIL_SECRET=... loyalty-mail serve --workers 2
    """
    from ..tracking.app import create_app

    runtime = obj.runtime
    runtime.signer()  # the secret must be set
    run_http_service(runtime, host=host, port=port, workers=workers,
                     create_app=lambda: create_app(runtime.settings, runtime.engine(), runtime.now),
                     app_from_env="loyalty_mail.runtime:tracking_app_from_env")

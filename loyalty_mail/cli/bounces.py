"""Commands about the bounce mailbox: poll it for bounces and complaints."""

from __future__ import annotations

import click

from ..errors import ConfigError
from ..tracking.bounces import poll_mailbox, summary
from . import cli
from .common import CliContext, format_option, pass_cli, print_json, print_table


@cli.group()
def bounces() -> None:
    """Bounces and feedback-loop complaints read from the bounce mailbox (IMAP)."""


@bounces.command("poll")
@click.option("--dry-run", is_flag=True,
              help="Read and match the reports, record and flag nothing (the mailbox is opened read-only).")
@format_option("table", "json")
@pass_cli
def bounces_poll(obj: CliContext, dry_run: bool, output_format: str) -> None:
    """Read the unseen messages of `sending.bounces`' mailbox once: delivery status notifications
    (RFC 3464) and feedback-loop complaints (ARF, RFC 5965) about our sends are recorded as
    tracking events, hard bounces and complaints are suppressed (soft bounces after
    `soft_bounce_limit`), and each is flagged \\Seen. Messages that are not reports, or are about
    no send of ours, are listed with the reason and set aside (keyword $LoyaltyMailIgnored, or
    \\Seen where the server keeps no keywords) so that no poll reads them again. At most 500
    messages are read a poll. The daemon does the same every tick when `sending.bounces` is set.

    \b
    Example:
      BOUNCES_IMAP_PASSWORD=... loyalty-mail bounces poll
      BOUNCES_IMAP_PASSWORD=... loyalty-mail bounces poll --dry-run --format json
    """
    runtime = obj.runtime
    settings = runtime.settings.sending.bounces
    if settings is None:
        raise ConfigError("no bounce mailbox is configured: add `sending.bounces` (imap, user, "
                          "password: ${BOUNCES_IMAP_PASSWORD}, folder) to config.yaml")
    outcomes = poll_mailbox(settings, runtime.engine(), runtime.now(), dry_run=dry_run)
    counts = summary(outcomes)
    if output_format == "json":
        print_json({"dry_run": dry_run, **counts, "messages": [o.as_row() for o in outcomes]})
        return
    if outcomes:
        print_table("Bounce mailbox" + (" (dry run: nothing recorded or flagged)" if dry_run else ""),
                    ["uid", "outcome", "kind", "status", "send_id", "email", "suppressed", "reason"],
                    [[o.uid, o.outcome, o.kind, o.status, o.send_id, o.email, "yes" if o.suppressed else "",
                      o.reason] for o in outcomes])
    click.echo(f"read {counts['read']} message(s): {counts['hard_bounces']} hard bounce(s), "
               f"{counts['soft_bounces']} soft bounce(s), {counts['complaints']} complaint(s) "
               f"{'would be ' if dry_run else ''}recorded, {counts['suppressed']} address(es) "
               f"{'would be ' if dry_run else ''}suppressed, {counts['already']} already recorded, "
               f"{counts['left_alone']} left alone")

"""Commands about coupon codes: `coupons verify`."""

from __future__ import annotations

import click

from ..coupons import CouponOwner, find_owner
from ..errors import ConfigError
from ..errors import shown as quoted
from ..signing import ascii_upper
from . import cli
from .common import CliContext, pass_cli

EXIT_NOT_GENUINE = 3


@cli.group()
def coupons() -> None:
    """Check the coupon codes that emails print with `coupon()`."""


@coupons.command("verify")
@click.argument("code")
@pass_cli
def verify(obj: CliContext, code: str) -> None:
    """Say whether CODE is a genuine coupon of this program, and whose.

    A code is genuine when one of the emails in the send ledger carries it, signed with any
    secret listed in tracking.secret (older, rotated secrets too). The case of a-z and spaces
    around the code do not matter. Exits 0 when it is genuine, 3 when it is not, 1 when the secret is not
    set or the database cannot be read.

    \b
    Example:
      loyalty-mail coupons verify HELLO-7KQ2M9XD
      loyalty-mail coupons verify back20-tpq7qlts || echo "refuse it"
    """
    runtime = obj.runtime
    secrets = runtime.settings.tracking.secret
    if not secrets:
        raise ConfigError("tracking.secret is not set: export LOYALTY_MAIL_SECRET (the secret the "
                          "emails were sent with) to verify coupon codes")
    shown = quoted(code) if not code.strip() else ascii_upper(code.strip())
    try:
        owner = find_owner(runtime.engine(), secrets, code)
    except ValueError as exc:
        click.echo(f"{shown} is not genuine: {exc}")
        raise click.exceptions.Exit(EXIT_NOT_GENUINE) from None
    if owner is None:
        click.echo(f"{shown} is not genuine: no email in the send ledger carries this code under the "
                   f"{len(secrets)} secret(s) listed in tracking.secret (a code signed with a secret no "
                   "longer listed cannot be verified)")
        raise click.exceptions.Exit(EXIT_NOT_GENUINE)
    click.echo(f"{shown} is genuine: {describe(owner)}")


def describe(owner: CouponOwner) -> str:
    """`member M1, flow welcome (occurrence welcome), email sent 2026-11-23 03:00 UTC`."""
    sent = (f"email sent {owner.sent_at:%Y-%m-%d %H:%M} UTC" if owner.state == "sent" and owner.sent_at
            else f"email {owner.state}")
    older = "; signed with an older secret still listed in tracking.secret" if owner.older_secret else ""
    return f"member {owner.member_id}, flow {owner.flow} (occurrence {owner.occurrence_key}), {sent}{older}"

"""The `loyalty-mail` command line: parse, call the library, print. No business logic here.

Exit codes: 0 success; 1 a mistake the user can fix (bad input, config, usage), with a message
and no traceback; 2 a bug in loyalty-mail (the message asks for a report; -v shows the
traceback); 3 `coupons verify`: not genuine; 4 `run --once` had sends due and delivered none of
them; 5 `serve` or `api` cannot listen on its address; 130 interrupted.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Any

import click
from ..db import describe_error
from ..errors import LoyaltyMailError
from .common import CliContext

EXIT_USER_ERROR = 1
EXIT_BUG = 2
EXIT_NOTHING_DELIVERED = 4
EXIT_INTERRUPTED = 130


class LoyaltyGroup(click.Group):
    """A click group that turns errors into the documented exit codes."""

    # click overloads main on standalone_mode; this one always handles errors and exits itself
    def main(self, args: Any = None, prog_name: str | None = None, **extra: Any) -> Any:  # type: ignore[override]
        extra.pop("standalone_mode", None)
        argv = list(sys.argv[1:] if args is None else args)
        try:
            result = super().main(args=argv, prog_name=prog_name, standalone_mode=False, **extra)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(EXIT_USER_ERROR)
        except click.Abort:
            click.echo("Aborted.", err=True)
            sys.exit(EXIT_USER_ERROR)
        except LoyaltyMailError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except Exception as exc:  # the edge: anything else is a bug, reported as one
            if any(a in ("-v", "-vv", "--verbose") for a in argv):
                traceback.print_exc()
            click.echo(
                f"Internal error: {describe_error(exc)}\n"
                "This is a bug in loyalty-mail. Please report it with the command you ran "
                "and its output with -v (which shows the traceback).",
                err=True,
            )
            sys.exit(EXIT_BUG)
        sys.exit(result if isinstance(result, int) else 0)


@click.group(cls=LoyaltyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--project", "project_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("."), show_default=True, envvar="LOYALTY_MAIL_PROJECT",
              help="Directory holding config.yaml, segments/ and templates/.")
@click.option("--database", "database_url", metavar="URL", default=None,
              help="Database URL; overrides config.yaml and LOYALTY_MAIL_DATABASE_URL.")
@click.option("-v", "--verbose", count=True, help="Say more (repeat for more still).")
@click.version_option(package_name="loyalty-mail", prog_name="loyalty-mail")
@click.pass_context
def cli(ctx: click.Context, project_dir: Path, database_url: str | None, verbose: int) -> None:
    """Email lifecycle marketing for loyalty programs.

    Segments are YAML files in segments/, emails are Jinja templates in templates/, and flows
    in config.yaml wire them together.

    \b
    Example:
      loyalty-mail init my-program && cd my-program
      loyalty-mail members import members.csv
      loyalty-mail check
    """
    ctx.obj = CliContext(project_dir=project_dir, database_url=database_url, verbose=verbose)
    ctx.call_on_close(ctx.obj.close)


def main() -> None:
    """Console-script entry point."""
    cli.main(prog_name="loyalty-mail")


from . import api, bounces, campaigns, coupons, data, delivery, flows, points, program, reports, segments, studio, templates, tiers  # noqa: E402,E501  (register the commands)

__all__ = ["cli", "main", "api", "bounces", "campaigns", "coupons", "data", "delivery", "flows", "points", "program", "reports", "segments", "studio", "templates", "tiers"]  # noqa: E501

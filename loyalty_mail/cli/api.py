"""Commands for the HTTP API: run it, and manage its keys."""

from __future__ import annotations

import click

from .. import db
from ..api import keys
from . import cli
from .common import CliContext, format_option, pass_cli, print_json, print_table, run_http_service


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8030, show_default=True)
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="uvicorn worker processes.")
@pass_cli
def api(obj: CliContext, host: str, port: int, workers: int) -> None:
    """Run the HTTP API: members and events in (native and Segment-spec), a member's state out.

    Every request needs `Authorization: Bearer KEY` (see `api-keys create`). OpenAPI is at /docs
    and /openapi.json. Put it behind your HTTPS proxy; with --workers N, N processes share the port.

    \b
    Example:
      loyalty-mail api --host 127.0.0.1 --port 8030
      loyalty-mail api --workers 2
    """
    from ..api.app import create_app

    runtime = obj.runtime
    run_http_service(runtime, host=host, port=port, workers=workers,
                     create_app=lambda: create_app(runtime.settings, runtime.engine(), runtime.now),
                     app_from_env="loyalty_mail.runtime:api_app_from_env")


@cli.group("api-keys")
def api_keys() -> None:
    """Keys for the HTTP API: create (shown once), list, revoke.

    \b
    Example:
      loyalty-mail api-keys create shop --scope ingest
      loyalty-mail api-keys list
    """


@api_keys.command("create")
@click.argument("name")
@click.option("--scope", type=click.Choice(keys.SCOPES), default="ingest", show_default=True,
              help="ingest: write members and events; read: read members; admin: both.")
@pass_cli
def create_key(obj: CliContext, name: str, scope: str) -> None:
    """Create a key and print it. It is shown this once: only its SHA-256 digest is stored.

    \b
    Example:
      loyalty-mail api-keys create shop --scope ingest
      loyalty-mail api-keys create dashboard --scope read
    """
    runtime = obj.runtime
    with db.writer(runtime.engine()).begin() as conn:
        key = keys.create(conn, name, scope, runtime.now())
    click.echo(key)
    click.echo(f"API key '{name}' ({scope}) created. Store it now: it cannot be shown again.", err=True)


@api_keys.command("list")
@format_option("table", "json")
@pass_cli
def list_keys(obj: CliContext, output_format: str) -> None:
    """List keys: name, first characters, scope, created, revoked.

    \b
    Example:
      loyalty-mail api-keys list
      loyalty-mail api-keys list --format json
    """
    with obj.runtime.engine().connect() as conn:
        rows = keys.listing(conn)
    if output_format == "json":
        print_json(rows)
        return
    print_table(None, ["name", "key", "scope", "created", "revoked"],
                [[r["name"], r["prefix"] + "...", r["scope"], r["created_at"], r["revoked_at"]] for r in rows])


@api_keys.command("revoke")
@click.argument("name")
@pass_cli
def revoke_key(obj: CliContext, name: str) -> None:
    """Revoke a key: requests with it get 401 from now on.

    \b
    Example:
      loyalty-mail api-keys revoke shop
    """
    runtime = obj.runtime
    with db.writer(runtime.engine()).begin() as conn:
        keys.revoke(conn, name, runtime.now())
    click.echo(f"API key '{name}' revoked")

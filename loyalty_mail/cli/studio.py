"""`loyalty-mail studio`: write emails and segments with a live preview against real data."""

from __future__ import annotations

import click

from . import cli
from .common import CliContext, at_option, pass_cli, resolve_at

@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on (a loopback address unless you mean to share it).")
@click.option("--port", type=click.IntRange(0, 65535), default=8030, show_default=True)
@at_option
@pass_cli
def studio(obj: CliContext, host: str, port: int, at: str | None) -> None:
    """Open a local web studio: every email rendered for a member, live as you save; segment counts
    and what an edit changes against git HEAD; flows, outbox, reports, test sends.

    It prints a URL with a random token (as Jupyter does); without the token every request is
    refused (403). It reads the program files and never writes them.

    \b
    Example:
      loyalty-mail studio
      loyalty-mail studio --port 8031 --at 2026-12-24T09:00
    """
    import logging
    import signal
    import socket

    import uvicorn

    from ..db import display_url
    from ..studio import Access, Workspace, create_app
    from ..studio.renders import Renders
    from ..studio.security import LOOPBACK, allowed_hosts

    runtime = obj.runtime
    when = resolve_at(runtime, at) if at else None
    runtime.engine()  # the schema is created or checked before the first page
    if host not in LOOPBACK:
        click.echo(f"warning: listening on {host}: anyone who can reach it and has the URL can use the studio",
                   err=True)
    access = Access()
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)  # connections wait from now on, so the printed URL works at once
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port} ({exc.strerror}); try --port") from None
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    if host in ("0.0.0.0", "::", ""):  # every address of the machine: name it by its host name
        shown = socket.gethostname()
    renders = Renders()
    app = create_app(Workspace(runtime, at=when), access, hosts=allowed_hosts(host), renders=renders)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    click.echo(f"loyalty-mail studio for {runtime.settings.program.name} "
               f"(database {display_url(runtime.database_url)}): open\n"
               f"  http://{shown}:{bound}/?token={access.token}\n(Ctrl+C stops it)", err=True)
    signal.signal(signal.SIGTERM, lambda *_: None)  # uvicorn stops gracefully, then exit 0
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2)
    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: object) -> None:
            renders.closing.set()  # a page waiting for a render answers at once, so the stop is prompt
            super().handle_exit(sig, frame)  # type: ignore[arg-type]

    Server(config).run(sockets=[sock])

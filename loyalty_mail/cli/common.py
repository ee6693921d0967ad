"""What every command shares: the context object, shared options and output helpers."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import click
from rich.cells import cell_len
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from ..errors import CannotListen, LoyaltyMailError, counted  # noqa: F401 - the commands' counted()
from ..errors import shown as quoted
from ..runtime import Runtime

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class CliContext:
    """Global options, and the runtime built from them on first use."""

    project_dir: Path
    database_url: str | None = None
    verbose: int = 0
    _runtime: Runtime | None = field(default=None, repr=False)

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            self._runtime = Runtime.load(self.project_dir, database_url=self.database_url)
        return self._runtime

    def close(self) -> None:
        if self._runtime is not None:
            self._runtime.close()


pass_cli = click.make_pass_decorator(CliContext)


def write_output(path: Path, data: bytes) -> None:
    """Write a command's output to the file `--out` names; a file that cannot be written (no such
    folder, no permission, a folder of that name) is the user's to fix, not a crash."""
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise LoyaltyMailError(f"cannot write {path}: {exc.strerror or exc} (does its folder exist, "
                               "and may it be written?)") from None


def stdout() -> Console:
    return Console(soft_wrap=True, highlight=False)


def stderr() -> Console:
    return Console(stderr=True, soft_wrap=True, highlight=False)


def format_option(*choices: str, default: str = "table") -> Callable[[F], F]:
    """`--format` for commands whose output is data."""
    return click.option("--format", "output_format", type=click.Choice(choices), default=default,
                        show_default=True, help="Output format.")


def at_option(func: F) -> F:
    """`--at ISO-TIME`: evaluate as of this instant instead of now."""
    return click.option(
        "--at", "at", metavar="ISO-TIME", default=None,
        help="Act as if it were this instant (ISO 8601; without an offset, the program's time zone).",
    )(func)


AT_YEARS = (1900, 2200)  # the years segment times and windows can reach


def resolve_at(runtime: Runtime, at: str | None) -> datetime:
    """The instant a command acts at: --at if given, else the runtime clock."""
    if at is None:
        return runtime.now()
    try:
        value = datetime.fromisoformat(at)
    except ValueError:
        raise click.BadParameter(f"{quoted(at)} is not an ISO 8601 time (e.g. 2026-11-23T09:00:00+07:00)",
                                 param_hint="--at") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=ZoneInfo(runtime.settings.program.default_timezone))
    if not AT_YEARS[0] <= value.year <= AT_YEARS[1]:
        raise click.BadParameter(f"{quoted(at)} is outside the years {AT_YEARS[0]} to {AT_YEARS[1]}",
                                 param_hint="--at")
    return value


@contextmanager
def byte_progress(label: str, total: int) -> Iterator[Callable[[int], None] | None]:
    """A progress bar over bytes read, on a terminal only; yields the advance callback."""
    if not sys.stderr.isatty():
        yield None
        return
    progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                        TimeRemainingColumn(), console=stderr(), transient=True)
    with progress:
        task = progress.add_task(label, total=total)

        def advance(n: int) -> None:
            progress.advance(task, n)
            if progress.tasks[0].completed >= total:  # read it all: now the database work
                progress.update(task, description=f"{label}: read, writing to the database")

        yield advance


class PlainProgress:
    """Progress where there is no terminal (a CI log, a pipe): one plain line on stderr each time
    another `every` percent of the steps is done, `Simulating days: 30% (108/360, 41 s)`, so a long
    run never looks hung; no control characters, nothing redrawn."""

    def __init__(self, label: str, total: int, *, every: int = 10,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.label, self.total, self.every, self.clock = label, max(total, 1), every, clock
        self.done, self.shown, self.started = 0, 0, clock()

    def __call__(self) -> None:
        self.done += 1
        percent = min(100, self.done * 100 // self.total)
        if percent >= self.shown + self.every or (self.done == self.total and percent > self.shown):
            self.shown = percent - percent % self.every if self.done < self.total else 100
            print(f"{self.label}: {percent}% ({self.done:,}/{self.total:,}, {self.clock() - self.started:.0f} s)",
                  file=sys.stderr, flush=True)


@contextmanager
def count_progress(label: str, total: int) -> Iterator[Callable[[], None]]:
    """A progress bar over a known number of steps on a terminal; elsewhere PlainProgress lines."""
    if not sys.stderr.isatty():
        yield PlainProgress(label, total)
        return
    progress = Progress(TextColumn("{task.description}"), BarColumn(),
                        TextColumn("{task.completed:,}/{task.total:,}"), TimeRemainingColumn(),
                        console=stderr(), transient=True)
    with progress:
        task = progress.add_task(label, total=total)
        yield lambda: progress.advance(task, 1)


def to_jsonable(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value


def print_json(value: Any) -> None:
    click.echo(json.dumps(to_jsonable(value), ensure_ascii=False, indent=2))


def print_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                *, numeric: Sequence[str] = (), fold: bool = False, one_line: Sequence[str] = ()) -> None:
    """A table on stdout, its cells printed as written (a `[` in them is not markup); `fold`
    wraps a cell that does not fit onto more lines instead of cutting it short with an ellipsis;
    a cell of a `one_line` column is never wrapped: what does not fit is cut with an ellipsis."""
    console = stdout()
    cells = [[_cell(v) for v in row] for row in rows]
    natural = [max([cell_len(column), *(cell_len(row[i]) for row in cells)]) for i, column in enumerate(columns)]
    others = sum(width for column, width in zip(columns, natural, strict=True) if column not in one_line)
    room = console.width - others - 3 * (len(columns) - 1)  # " │ " between columns
    shared = max(room // max(len(one_line), 1), 8)
    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for column, width in zip(columns, natural, strict=True):
        cut = column in one_line
        table.add_column(column, justify="right" if column in numeric else "left",
                         overflow="fold" if fold and not cut else "ellipsis", no_wrap=cut,
                         width=max(min(width, shared), cell_len(column)) if cut else None)
    for row in cells:
        table.add_row(*(Text(cell) for cell in row))
    console.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, Decimal):
        return f"{value:,.2f}".rstrip("0").rstrip(".") if value % 1 else f"{int(value):,}"
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M UTC")
    return str(value)


def run_http_service(runtime: Runtime, *, host: str, port: int, workers: int,
                     create_app: Callable[[], Any], app_from_env: str) -> None:
    """Run an HTTP service under uvicorn until SIGTERM or SIGINT, then return (exit 0).

    One worker serves `create_app()` in this process; N workers each build the app themselves
    through `app_from_env` ("module:function"), from the program and database named in the
    environment. An address that cannot be listened on is CannotListen (exit 5), said before
    anything starts.
    """
    import logging
    import os
    import signal

    import uvicorn

    from ..config import DATABASE_URL_ENV
    from ..runtime import PROJECT_ENV

    check_can_listen(host, port)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal to the handler that was
    # there before it started: make that a no-op so a clean stop exits 0 for process managers.
    signal.signal(signal.SIGTERM, lambda *_: None)
    options: dict[str, Any] = {"host": host, "port": port, "log_level": "info", "access_log": False,
                               "timeout_graceful_shutdown": 30}
    try:
        if workers == 1:
            uvicorn.run(create_app(), **options)
            return
        runtime.engine()  # the schema is created or checked once, here, before the workers start
        os.environ[PROJECT_ENV] = str(runtime.project_dir.resolve())
        os.environ[DATABASE_URL_ENV] = runtime.database_url
        runtime.close()
        # A worker imports the package and opens the database before it answers uvicorn's health
        # check: on a busy machine that takes longer than uvicorn's 5 s default, which kills it.
        uvicorn.run(app_from_env, factory=True, workers=workers, timeout_worker_healthcheck=60, **options)
    except SystemExit as exc:  # uvicorn exits when it cannot start (the address taken since the check)
        if exc.code not in (0, None):
            raise CannotListen(f"the service did not start on {host}:{port} (uvicorn's log above says "
                               "why)") from None
        raise


def check_can_listen(host: str, port: int) -> None:
    """Raise CannotListen, saying why and what to do, when `host:port` cannot be listened on."""
    import errno
    import socket

    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError):
        raise CannotListen(f"cannot listen on {where}: the host name does not resolve "
                           "(check --host)") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            probe.bind(address)
            probe.listen()
        except OSError as exc:
            reason = {
                errno.EADDRINUSE: "the port is in use by another process (stop it, or choose another --port)",
                errno.EACCES: "permission denied (ports below 1024 need privileges; choose a --port of "
                              "1024 or more)",
                errno.EADDRNOTAVAIL: "the address is not one of this machine's (check --host)",
            }.get(exc.errno or 0, exc.strerror or "the system refused it")
            raise CannotListen(f"cannot listen on {where}: {reason}") from None

"""Composition root: builds settings, the database engine and the clock once, for one program.

Nothing else in the package holds global state; the CLI, the daemon and tests each build a
Runtime and pass what it holds down to the library functions.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from . import db
from .config import Settings, load_settings
from .errors import ConfigError
from .flows.journey_spec import journey_problems
from .segments.spec import flow_filter_problems
from .rendering import Renderer
from .signing import TokenSigner


def utc_now() -> datetime:
    """The real clock, read only at the edge of the program."""
    return datetime.now(timezone.utc)


@dataclass
class Runtime:
    """One program (a project directory) wired to its database."""

    settings: Settings
    clock: Callable[[], datetime] = utc_now
    _engine: sa.Engine | None = field(default=None, repr=False)
    _renderer: Renderer | None = field(default=None, repr=False)

    @classmethod
    def load(cls, project_dir: Path, *, database_url: str | None = None,
             clock: Callable[[], datetime] = utc_now) -> Runtime:
        checks = (flow_filter_problems, journey_problems)
        return cls(load_settings(project_dir, database_url=database_url, checks=checks), clock=clock)

    @property
    def project_dir(self) -> Path:
        return self.settings.project_dir

    @property
    def database_url(self) -> str:
        return db.resolve_url(self.settings.database.url, self.project_dir)

    def engine(self, *, ensure_schema: bool = True) -> sa.Engine:
        """The database engine; by default the schema is created if empty and checked if not."""
        if self._engine is None:
            self._engine = db.create_db_engine(self.database_url)
            if ensure_schema:
                db.ensure_schema(self._engine)
        return self._engine

    def signer(self) -> TokenSigner:
        """The signer of tracking and unsubscribe links; sending needs the secret to be set."""
        secret = self.settings.tracking.secret
        if not secret:
            raise ConfigError("tracking.secret is not set: export LOYALTY_MAIL_SECRET (at least 16 "
                              "random characters, e.g. from `python -c \"import secrets; "
                              "print(secrets.token_urlsafe(32))\"`) before sending")
        return TokenSigner(secret)

    def renderer(self) -> Renderer:
        """The program's compiled templates (links signed when the secret is set)."""
        if self._renderer is None:
            signer = self.signer() if self.settings.tracking.secret else None
            self._renderer = Renderer.for_program(self.settings, signer=signer)
        return self._renderer

    def now(self) -> datetime:
        return self.clock()

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


PROJECT_ENV = "LOYALTY_MAIL_PROJECT"


def tracking_app_from_env() -> Any:
    """The tracking app of one `serve --workers N` process (uvicorn imports it by name,
    `factory=True`): the program in LOYALTY_MAIL_PROJECT, its database (LOYALTY_MAIL_DATABASE_URL
    overrides the config, as everywhere), the real clock."""
    from .tracking.app import create_app  # the service's dependencies load in its processes only

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    runtime = Runtime.load(Path(os.environ.get(PROJECT_ENV, ".")))
    return create_app(runtime.settings, runtime.engine(), runtime.now)


def api_app_from_env() -> Any:
    """The HTTP API of one `api --workers N` process, built like tracking_app_from_env."""
    from .api.app import create_app

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    runtime = Runtime.load(Path(os.environ.get(PROJECT_ENV, ".")))
    return create_app(runtime.settings, runtime.engine(), runtime.now)

"""config.yaml -> frozen, validated settings.

Precedence, lowest first: built-in defaults < config.yaml < environment variables < CLI flags.
Secrets are never written in the file: a value may reference `${ENV_VAR}` (or
`${ENV_VAR:-fallback}`), resolved when the file is loaded. Every problem is reported at once,
each with file, line and what is allowed.
"""

from __future__ import annotations

import os
import re
import zoneinfo
from datetime import time as dtime
from datetime import timedelta
from decimal import Decimal
from functools import cache
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

import babel
import babel.numbers
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .durations import parse_span
from .errors import ConfigError, Problem
from .secret_policy import (
    SECRET_FIELDS,
    check_signing_secret,
    is_secret_field,
    literal_secret_problem,
    load_webhook_key,
)
from .yaml_source import PathKey, YamlDocument, format_path, load_yaml_file

CONFIG_FILE = "config.yaml"
DEFAULT_DATABASE_URL = "sqlite:///loyalty_mail.db"
DATABASE_URL_ENV = "LOYALTY_MAIL_DATABASE_URL"

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


# A check of the raw document (environment references resolved) by a later stage: its problems.
DocumentCheck = Callable[[dict[str, Any], YamlDocument], "list[Problem]"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@cache
def _known_timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def is_known_timezone(name: str) -> bool:
    """True for IANA zone names such as Asia/Ho_Chi_Minh (and UTC)."""
    return name in _known_timezones()


@cache
def normalize_locale(value: str) -> str | None:
    """`vi`, `vi-VN`, `vi_VN` -> Babel's canonical identifier; None when Babel does not know it."""
    try:
        return str(babel.Locale.parse(value.replace("-", "_")))
    except (ValueError, TypeError, babel.UnknownLocaleError):
        return None


class ProgramSettings(_Strict):
    """Who the program is: name, money, language and clock defaults, earning rate."""

    name: str = "Loyalty Program"
    currency: str = "USD"
    default_locale: str = "en"
    locales: tuple[str, ...] = ()
    default_timezone: str = "UTC"
    points_per_currency_unit: Decimal = Field(default=Decimal(1), ge=0)
    sender_name: str = ""
    sender_email: str = "loyalty@example.com"
    postal_address: str = ""

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        if not babel.numbers.is_currency(value):
            raise ValueError(f"'{value}' is not an ISO 4217 currency code (e.g. VND, USD, EUR)")
        return value

    @field_validator("default_locale")
    @classmethod
    def _locale(cls, value: str) -> str:
        canonical = normalize_locale(value)
        if canonical is None:
            raise ValueError(f"unknown locale '{value}' (e.g. en, vi, en_US, vi_VN)")
        return canonical

    @field_validator("locales")
    @classmethod
    def _locales(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        out = []
        for value in values:
            canonical = normalize_locale(value)
            if canonical is None:
                raise ValueError(f"unknown locale '{value}' (e.g. en, vi, en_US, vi_VN)")
            out.append(canonical)
        return tuple(out)

    @field_validator("default_timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        if not is_known_timezone(value):
            raise ValueError(f"unknown time zone '{value}' (an IANA name such as Asia/Ho_Chi_Minh)")
        return value

    @model_validator(mode="after")
    def _default_locale_is_offered(self) -> ProgramSettings:
        if not self.locales:
            object.__setattr__(self, "locales", (self.default_locale,))
        elif self.default_locale not in self.locales:
            object.__setattr__(self, "locales", (self.default_locale, *self.locales))
        return self


class TierLevel(_Strict):
    """One rung of the tier ladder."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    threshold: Decimal = Field(ge=0)
    # What emails call the tier: one text, or one per locale: {en: Gold, vi: Vàng}.
    label: str | dict[str, str] | None = None
    # One list for every locale, or one list per locale: {en: [...], vi: [...]}.
    perks: tuple[str, ...] | dict[str, tuple[str, ...]] = ()

    def label_for(self, locale: str, default_locale: str) -> str:
        """The tier's display name in the member's language (the name, capitalised, if none)."""
        if isinstance(self.label, str):
            return self.label
        if isinstance(self.label, dict):
            for key in (locale, locale.split("_")[0], default_locale):
                if key in self.label:
                    return self.label[key]
        return self.name.replace("_", " ").capitalize()

    def perks_for(self, locale: str, default_locale: str) -> tuple[str, ...]:
        """The perks in the member's language, else the program's default, else any."""
        if not isinstance(self.perks, dict):
            return self.perks
        for key in (locale, locale.split("_")[0], default_locale):
            if key in self.perks:
                return self.perks[key]
        return next(iter(self.perks.values()), ())


class TierSettings(_Strict):
    """The ordered tier ladder and what it is measured in."""

    basis: Literal["points", "spend"] = "points"
    levels: tuple[TierLevel, ...] = (TierLevel(name="member", threshold=Decimal(0)),)

    @field_validator("levels")
    @classmethod
    def _ordered(cls, levels: tuple[TierLevel, ...]) -> tuple[TierLevel, ...]:
        if not levels:
            raise ValueError("at least one tier is needed")
        if levels[0].threshold != 0:
            raise ValueError(f"the first tier ('{levels[0].name}') must have threshold 0")
        names = [level.name for level in levels]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"tier names must be unique; repeated: {', '.join(duplicates)}")
        for lower, upper in zip(levels, levels[1:]):
            if upper.threshold <= lower.threshold:
                raise ValueError(
                    f"thresholds must increase: '{upper.name}' ({upper.threshold}) is not above "
                    f"'{lower.name}' ({lower.threshold})"
                )
        return levels


class SegmentSettings(_Strict):
    """Parameters of the segment language's derived fields, and how long one segment query may run."""

    clv_years: Decimal = Field(default=Decimal(3), gt=0, le=50)
    timeout: Span = Field(default=timedelta(minutes=1), gt=timedelta(0), le=timedelta(days=1))


class RenderingSettings(_Strict):
    """How long one email may take to render, and how large its HTML (or text) may be."""

    timeout: Span = Field(default=timedelta(seconds=2), gt=timedelta(0), le=timedelta(minutes=10))
    max_bytes: int = Field(default=1_000_000, ge=10_000, le=100_000_000)


class DatabaseSettings(_Strict):
    """Where members, events and the send ledger live."""

    url: str = DEFAULT_DATABASE_URL


def _secret_strength(value: str) -> str:
    return check_signing_secret(value) if value else value  # empty: an unset `${OLD:-}`, dropped


class TrackingSettings(_Strict):
    """Where tracking, unsubscribe and view-in-browser links point, and how they are signed."""

    base_url: str = Field(default="http://127.0.0.1:8025", pattern=r"^https?://[^\s/]+(/[^\s]*)?$")
    # Never written in the file: `${LOYALTY_MAIL_SECRET}`, or a list of them, newest first: the
    # first signs, all verify (links and coupons already sent outlive a rotation). Needed to send.
    secret: tuple[Annotated[str, AfterValidator(_secret_strength)], ...] = ()
    open_pixel: bool = True
    click_tracking: bool = True
    unsubscribe_mailto: str | None = Field(default=None, pattern=r"^mailto:[^\s@]+@[^\s@]+")
    # SendGrid Event Webhook verification key (Mail Settings > Signed Event Webhook), base64 DER.
    sendgrid_webhook_key: str | None = None
    webhook_tolerance: Span = timedelta(minutes=5)
    max_body_bytes: int = Field(default=1_000_000, ge=1000, le=50_000_000)
    bot_click_seconds: int = Field(default=10, ge=0, le=3600)
    flush_interval: Span = timedelta(seconds=1)
    write_timeout: Span = timedelta(seconds=5)

    @field_validator("secret", mode="before")
    @classmethod
    def _one_or_several(cls, value: Any) -> Any:
        if value is None or isinstance(value, (list, tuple)):
            return value or ()
        if isinstance(value, str):
            return (value,)
        raise ValueError("expected a secret (`${LOYALTY_MAIL_SECRET}`) or a list of them, newest "
                         f"first, found {type(value).__name__}")

    @field_validator("secret")
    @classmethod
    def _empty_is_unset(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(secret for secret in value if secret)  # `${OLD_SECRET:-}` when there is none

    @field_validator("sendgrid_webhook_key")
    @classmethod
    def _webhook_key(cls, value: str | None) -> str | None:
        if value:
            load_webhook_key(value)
        return value or None

    @field_validator("base_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")


_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def _clock(value: Any) -> dtime:
    match = _CLOCK.match(value) if isinstance(value, str) else None
    if not match:
        raise ValueError(f"expected a time of day as HH:MM (e.g. '21:00'), found {value!r}")
    return dtime(int(match.group(1)), int(match.group(2)))


Span = Annotated[timedelta, BeforeValidator(parse_span)]  # a month is 30 days, a year 365
ClockTime = Annotated[dtime, BeforeValidator(_clock)]


class QuietHours(_Strict):
    """A daily window, in each member's own time zone, when marketing email waits."""

    start: ClockTime = dtime(21, 0)
    end: ClockTime = dtime(8, 0)


class FrequencyCap(_Strict):
    """At most `max` marketing emails per member in any `per` (rolling)."""

    max: int = Field(default=3, ge=1, le=1000)
    per: Span = timedelta(days=7)


class SmtpSettings(_Strict):
    """An SMTP relay. The password comes from the environment: `${SMTP_PASSWORD}`."""

    host: str = "127.0.0.1"
    port: int = Field(default=587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: str | None = None
    timeout: Span = timedelta(minutes=1)


class SendGridSettings(_Strict):
    """SendGrid's v3 Mail Send API through the official client. Key from `${SENDGRID_API_KEY}`."""

    api_key: str | None = None
    host: str = Field(default="https://api.sendgrid.com", pattern=r"^https?://[^\s/]+(/[^\s]*)?$")
    click_tracking: bool = False   # loyalty-mail signs and tracks links itself
    open_tracking: bool = False
    sandbox: bool = False


class WakeSettings(_Strict):
    """Planning members as their data arrives, between ticks (see loyalty_mail/touched.py)."""

    enabled: bool = True
    poll_ms: int = Field(default=250, ge=10, le=60_000)  # SQLite: how often the queue is looked at


class SendingSettings(_Strict):
    """How and when email leaves: the transport, quiet hours, the frequency cap, the daemon tick."""

    transport: Literal["directory", "smtp", "sendgrid"] = "directory"
    directory: str = "outbox"
    smtp: SmtpSettings = SmtpSettings()
    sendgrid: SendGridSettings = SendGridSettings()
    rate_limit: Decimal = Field(default=Decimal(0), ge=0, le=100_000)   # messages/s, 0: unlimited
    concurrency: int = Field(default=4, ge=1, le=64)
    dispatchers: int = Field(default=1, ge=1, le=64)
    max_attempts: int = Field(default=5, ge=1, le=100)
    retry_base: Span = timedelta(minutes=1)
    pause_after: int = Field(default=20, ge=1, le=100_000)
    lease: Span = timedelta(minutes=10)
    quiet_hours: QuietHours | None = QuietHours()
    frequency_cap: FrequencyCap | None = FrequencyCap()
    tick: Span = timedelta(minutes=5)
    wake: WakeSettings = WakeSettings()
    lookback: Span = timedelta(days=7)
    batch_size: int = Field(default=100, ge=1, le=10_000)


class Reentry(_Strict):
    """How often a member may get a segment-entry email again."""

    max: int = Field(default=1, ge=1, le=1000)
    cooldown: Span = timedelta(days=90)


class FlowSettings(_Strict):
    """One lifecycle flow: a trigger, an optional audience, a template (or, for a journey, its
    `steps:`) and its policy."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    trigger: Literal["welcome", "milestone", "tier_upgrade", "reengagement", "event"]
    template: str = ""
    # a journey: steps (send, wait, wait_until, branch) read by flows/journey_spec.py, checked at
    # their lines when the settings are loaded; `exit_when` is a segment rule checked before each
    steps: tuple[dict[str, Any], ...] | None = None
    exit_when: dict[str, Any] | None = None
    segment: str | None = None
    enabled: bool = True
    priority: int = Field(default=50, ge=0, le=1000)
    delay: Span = timedelta(0)
    lateness: Span = timedelta(days=2)
    quiet_hours: bool = True
    holdout: Decimal = Field(default=Decimal(0), ge=0, le=100)
    frequency_cap: bool = True
    # milestone
    thresholds: tuple[int, ...] = ()
    crossings: Literal["each", "highest"] = "highest"
    anniversaries: bool = False
    # reengagement
    reentry: Reentry = Reentry()
    # event: once per event of this type that meets `where` (checked in settings_from_document)
    event: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]{0,63}$")
    where: dict[str, Any] | None = None
    # when the daemon plans this flow: a crontab line in the program's time zone (default: every tick)
    schedule: str | None = None

    @field_validator("schedule")
    @classmethod
    def _crontab(cls, value: str | None) -> str | None:
        if value is not None:
            from apscheduler.triggers.cron import CronTrigger
            try:
                CronTrigger.from_crontab(value, timezone="UTC")
            except ValueError as exc:
                raise ValueError(f"'{value}' is not a crontab schedule (minute hour day month weekday, "
                                 f"e.g. '0 10 * * *' for 10:00 every day): {exc}") from None
        return value

    @property
    def is_journey(self) -> bool:
        return self.steps is not None

    def templates(self) -> list[str]:
        """The emails this flow sends: its template, or every `send:` of its steps."""
        if self.steps is None:
            return [self.template]
        found: list[str] = []

        def visit(steps: Any) -> None:
            for step in steps if isinstance(steps, (list, tuple)) else []:
                if not isinstance(step, dict):
                    continue
                send = step.get("send")
                name = send.get("template") if isinstance(send, dict) else send
                if isinstance(name, str) and name not in found:
                    found.append(name)
                branch = step.get("branch")
                if isinstance(branch, dict):
                    visit(branch.get("then"))
                    visit(branch.get("else"))
                visit(step.get("on_timeout"))

        visit(self.steps)
        return found

    @model_validator(mode="after")
    def _trigger_needs(self) -> FlowSettings:
        if self.steps is None and not self.template:
            raise ValueError(f"flow '{self.name}': a flow needs `template:` (the email it sends), or "
                             "`steps:` (a journey)")
        if self.steps is not None and self.template:
            raise ValueError(f"flow '{self.name}': a journey names its emails in its steps "
                             "(- send: TEMPLATE); remove `template:`")
        if self.steps is not None and not self.steps:
            raise ValueError(f"flow '{self.name}': `steps:` needs at least one step")
        if self.exit_when is not None and self.steps is None:
            raise ValueError(f"flow '{self.name}': `exit_when:` belongs to journeys (flows with `steps:`)")
        if self.trigger == "reengagement" and not self.segment:
            raise ValueError(f"flow '{self.name}': a reengagement flow needs `segment:` (the segment "
                             "members enter, e.g. lapsed_90_days)")
        if self.trigger == "milestone" and not self.thresholds and not self.anniversaries:
            raise ValueError(f"flow '{self.name}': a milestone flow needs `thresholds:` (points) "
                             "and/or `anniversaries: true`")
        if self.trigger == "event" and not self.event:
            raise ValueError(f"flow '{self.name}': an event flow needs `event:` (the event type, "
                             "e.g. purchase)")
        if self.trigger != "event" and (self.event or self.where is not None):
            raise ValueError(f"flow '{self.name}': `event:` and `where:` belong to event flows "
                             "(trigger: event)")
        if list(self.thresholds) != sorted(set(self.thresholds)) or any(t <= 0 for t in self.thresholds):
            raise ValueError(f"flow '{self.name}': thresholds must be positive and increasing")
        return self


class SegmentEventMapping(_Strict):
    """How one Segment `track` event becomes one of ours: our event type, and where in the Segment
    message (a dotted path such as `properties.revenue`) its amount, points and currency are."""

    type: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    amount: str | None = None
    points: str | None = None
    currency: str | None = None


class SegmentSourceSettings(_Strict):
    """The Segment-spec endpoints: event names mapped to ours (unmapped names become snake_case types)."""

    events: dict[str, SegmentEventMapping] = {}


class IngestSettings(_Strict):
    """What the HTTP API accepts beyond the file importers' rules."""

    create_unknown_members: bool = False
    segment: SegmentSourceSettings = SegmentSourceSettings()


class ApiSettings(_Strict):
    """The HTTP API's limits."""

    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)


class ReportSettings(_Strict):
    """How reports attribute purchases to emails."""

    attribution_window: Span = timedelta(days=7)


class Settings(_Strict):
    """The whole validated configuration of one program."""

    program: ProgramSettings = ProgramSettings()
    database: DatabaseSettings = DatabaseSettings()
    tiers: TierSettings = TierSettings()
    segments: SegmentSettings = SegmentSettings()
    rendering: RenderingSettings = RenderingSettings()
    # Validated by the stages that use them (flows, delivery, tracking).
    sending: SendingSettings = SendingSettings()
    tracking: TrackingSettings = TrackingSettings()
    flows: tuple[FlowSettings, ...] = ()
    reports: ReportSettings = ReportSettings()
    ingest: IngestSettings = IngestSettings()
    api: ApiSettings = ApiSettings()

    # Not part of the file: where it came from.
    project_dir: Path = Field(default=Path("."), exclude=True)

    @field_validator("flows")
    @classmethod
    def _unique_flow_names(cls, flows: tuple[FlowSettings, ...]) -> tuple[FlowSettings, ...]:
        names = [flow.name for flow in flows]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"flow names must be unique; repeated: {', '.join(repeated)}")
        return flows


def load_settings(
    project_dir: Path,
    *,
    environ: dict[str, str] | None = None,
    database_url: str | None = None,
    checks: Sequence[DocumentCheck] = (),
) -> Settings:
    """Load `project_dir/config.yaml`, apply environment overrides and flags, validate everything.
    `checks` are later stages' own checks of parts of the document (flows' event filters, read
    by the segment language), so their problems are reported with the others, at their lines.

    A missing config.yaml is an error: run `loyalty-mail init` to create one.
    """
    environ = dict(os.environ if environ is None else environ)
    path = project_dir / CONFIG_FILE
    if not path.exists():
        raise ConfigError(
            f"no {CONFIG_FILE} in {project_dir.resolve()}. Run `loyalty-mail init {project_dir}` to "
            "create a program there, or pass --project DIR."
        )
    doc = load_yaml_file(path, display_name=_display_name(path))
    return settings_from_document(doc, project_dir, environ=environ, database_url=database_url, checks=checks)


def settings_from_document(
    doc: YamlDocument,
    project_dir: Path,
    *,
    environ: dict[str, str],
    database_url: str | None = None,
    checks: Sequence[DocumentCheck] = (),
) -> Settings:
    """Validate a loaded YAML document as settings (see load_settings)."""
    data = doc.value if doc.value is not None else {}
    if not isinstance(data, dict):
        raise ConfigError(Problem(doc.locate(()), "the top level must be a mapping of sections"))
    problems: list[Problem] = []
    problems += _literal_secrets(data, doc)
    data = _resolve_env(data, (), doc, environ, problems)
    if environ.get(DATABASE_URL_ENV):
        data = {**data, "database": {**data.get("database", {}), "url": environ[DATABASE_URL_ENV]}}
    if database_url:
        data = {**data, "database": {**data.get("database", {}), "url": database_url}}
    for check in checks:
        problems += check(data, doc)
    try:
        settings = Settings.model_validate({**data, "project_dir": project_dir})
    except ValidationError as exc:
        problems += [_problem_from(error, doc) for error in exc.errors()]
    if problems:
        problems.sort(key=lambda p: (p.location.line, p.location.column) if p.location else (0, 0))
        raise ConfigError(problems)
    return settings


def _display_name(path: Path) -> str:
    try:
        return str((path.parent.resolve() / path.name).relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _resolve_env(value: Any, path: PathKey, doc: YamlDocument, environ: dict[str, str],
                 problems: list[Problem]) -> Any:
    if isinstance(value, dict):
        return {k: _resolve_env(v, path + (k,), doc, environ, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_env(v, path + (i,), doc, environ, problems) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        name, fallback = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if fallback is not None:
            return fallback
        if is_secret_field(path):  # a secret has no fallback; `:-` with nothing leaves it unset
            older = isinstance(path[-1], int) and path[-1] > 0
            advice = f"set it, or write ${{{name}:-}} to leave {'this older secret out' if older else 'it unset'}"
        else:
            advice = f"set it, or write ${{{name}:-fallback}}"
        problems.append(Problem(
            doc.locate(path),
            f"{format_path(path)}: environment variable {name} is not set ({advice})",
        ))
        return ""

    return _ENV_REF.sub(substitute, value)


def _literal_secrets(data: dict[str, Any], doc: YamlDocument) -> list[Problem]:
    """A problem for each secret field written in the file instead of referencing the environment."""
    problems = []
    for path in SECRET_FIELDS:
        raw: Any = data
        for part in path:
            raw = raw.get(part) if isinstance(raw, dict) else None
        problem = literal_secret_problem(path, raw)
        if problem:
            problems.append(Problem(doc.locate(path), problem))
    return problems


def _problem_from(error: Any, doc: YamlDocument) -> Problem:
    """Turn one pydantic error into a Problem at the YAML position it concerns."""
    loc = tuple(part for part in error["loc"] if part != "project_dir")
    if loc and isinstance(loc[-1], int) and loc not in doc.positions and loc[:-1] in doc.positions:
        loc = loc[:-1]  # one value where a list is allowed (`secret: ${S}`): no item number
    kind = error["type"]
    if kind == "extra_forbidden":
        parent, key = loc[:-1], loc[-1]
        allowed = ", ".join(_allowed_keys(parent))
        where = format_path(parent) or "the top level"
        return Problem(doc.locate(loc, key=True), f"unknown key '{key}' in {where} (allowed: {allowed})")
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    if kind == "missing":
        return Problem(doc.locate(loc[:-1]), f"{format_path(loc)}: required key is missing")
    found = error.get("input")
    shown = kind not in ("value_error",) and not isinstance(found, dict) and not is_secret_field(loc)
    suffix = f" (found {found!r})" if shown else ""
    return Problem(doc.locate(loc), f"{format_path(loc)}: {message}{suffix}")


def _allowed_keys(path: PathKey) -> list[str]:
    """The keys a mapping at `path` of the settings may hold."""
    model: Any = Settings
    for part in path:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        model = next((a for a in (annotation, *args) if isinstance(a, type) and issubclass(a, BaseModel)),
                     None)
        if model is None:
            return []
    return [name for name in model.model_fields if name != "project_dir"]

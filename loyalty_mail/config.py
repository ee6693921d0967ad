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
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from functools import cache
from pathlib import Path
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal

import babel
import babel.numbers
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .durations import Duration, format_span, parse_duration, parse_span
from .errors import ConfigError, Problem, kind_of, shown
from .secret_policy import (
    SECRET_FIELDS,
    check_signing_secret,
    empty_items,
    is_secret_field,
    literal_secret_problem,
    load_webhook_key,
    repeated_items,
    source_of,
)
from .yaml_source import PathKey, YamlDocument, format_path, load_yaml_file

CONFIG_FILE = "config.yaml"
DEFAULT_DATABASE_URL = "sqlite:///loyalty_mail.db"
DATABASE_URL_ENV = "LOYALTY_MAIL_DATABASE_URL"

# Secrets only some commands use: an unset variable is their error when they need it (see
# BounceMailboxSettings.require_password), not every command's.
ON_USE_SECRETS: tuple[PathKey, ...] = (("sending", "bounces", "password"),)
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


def _calendar_duration(value: Any) -> Duration:
    """A duration read as calendar time (`12 months`: the same date a year later), not a fixed span."""
    if isinstance(value, Duration):
        return value
    duration = parse_duration(value)
    if duration.amount == 0:
        raise ValueError(f"expected a duration above 0 such as '12 months', found {shown(value)}")
    return duration


CalendarDuration = Annotated[Duration, PlainValidator(_calendar_duration)]


class PointsExpiry(_Strict):
    """When points expire: each earned lot `after` a time (redemptions take the oldest lots first),
    or all of them after `inactivity` (no earning or redeeming event for that long)."""

    after: CalendarDuration | None = None
    inactivity: CalendarDuration | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_policy(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            raise ValueError("expected {after: 12 months} (each earned lot expires that long after it was "
                             "earned) or {inactivity: 18 months} (all points expire after that long without "
                             f"earning or redeeming), found {value!r}")
        chosen = [key for key in ("after", "inactivity") if value.get(key) is not None]
        if len(chosen) > 1:
            raise ValueError("give either after: (each lot expires that long after it was earned) or "
                             "inactivity: (all points expire after that long without activity), not both")
        if not chosen and not set(value) - {"after", "inactivity"}:
            raise ValueError("give after: 12 months (each lot expires that long after it was earned) or "
                             "inactivity: 18 months (all points expire after that long without activity)")
        return value

    @property
    def policy(self) -> str:
        """`after` or `inactivity`."""
        return "after" if self.after is not None else "inactivity"

    @property
    def duration(self) -> Duration:
        chosen = self.after if self.after is not None else self.inactivity
        assert chosen is not None
        return chosen

    def __str__(self) -> str:
        return f"{self.policy}: {self.duration}"


class PointsSettings(_Strict):
    """How points behave over time."""

    expiry: PointsExpiry | None = None


class ProgramSettings(_Strict):
    """Who the program is: name, money, language and clock defaults, earning rate."""

    name: str = "Loyalty Program"
    currency: str = "USD"
    default_locale: str = "en"
    locales: tuple[str, ...] = ()
    default_timezone: str = "UTC"
    points_per_currency_unit: Decimal = Field(default=Decimal(1), ge=0)
    points: PointsSettings = PointsSettings()
    sender_name: str = ""
    sender_email: str = "loyalty@example.com"
    postal_address: str = ""
    # Members created from now on get marketing email only once they confirm their address (the
    # link `confirm_url` in a service email, e.g. a welcome flow with `class: service`).
    double_opt_in: bool = False

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


MAX_POINTS = 2**31 - 1  # the most points a balance holds (the points columns)
MAX_THRESHOLD = Decimal("1e16")  # no total spend reaches this (the money columns)


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
        return _localized(self.label, locale, default_locale) or self.name.replace("_", " ").capitalize()

    def perks_for(self, locale: str, default_locale: str) -> tuple[str, ...]:
        """The perks in the member's language, else the program's default, else any."""
        if not isinstance(self.perks, dict):
            return self.perks
        for key in (locale, locale.split("_")[0], default_locale):
            if key in self.perks:
                return self.perks[key]
        return next(iter(self.perks.values()), ())


def _calendar_period(value: Any) -> Duration:
    if isinstance(value, Duration):
        return value
    duration = parse_duration(value)
    if duration.unit not in ("day", "week", "month", "year") or duration.amount < 1:
        raise ValueError(f"expected whole days, weeks, months or years (e.g. '12 months'), found {shown(value)}")
    return duration


CalendarPeriod = Annotated[Duration, BeforeValidator(_calendar_period)]


class TierQualification(_Strict):
    """Tiers that must be kept: re-qualify over a rolling period, or move down at the review."""

    period: CalendarPeriod = Duration(12, "month")
    # What re-qualifies: spend (purchase amounts) or points earned (points added, never redeemed)
    # in the period; it must be what the ladder is measured in (`basis`).
    measure: Literal["spend", "points_earned"] | None = None
    grace: Span = Field(default=timedelta(days=30), ge=timedelta(0), le=timedelta(days=366))
    downgrade: Literal["one_level", "to_qualified"] = "one_level"

    @model_validator(mode="after")
    def _grace_within_the_period(self) -> TierQualification:
        if self.grace >= self.period.span():
            raise ValueError(f"grace ({format_span(self.grace)}) must be shorter than the period ({self.period}): "
                             "activity in the grace counts towards the period before it, so periods would overlap")
        return self


class TierSettings(_Strict):
    """The ordered tier ladder and what it is measured in."""

    basis: Literal["points", "spend"] = "points"
    levels: tuple[TierLevel, ...] = (TierLevel(name="member", threshold=Decimal(0)),)
    qualification: TierQualification | None = None

    @field_validator("qualification")
    @classmethod
    def _measure_follows_basis(cls, q: TierQualification | None, info: ValidationInfo) -> TierQualification | None:
        basis = info.data.get("basis", "points")
        if q is None:
            return q
        expected = "spend" if basis == "spend" else "points_earned"
        if q.measure is None:
            return q.model_copy(update={"measure": expected})
        if q.measure != expected:
            raise ValueError(f"measure '{q.measure}' does not match basis '{basis}': the thresholds are in "
                             f"{basis}, so the measure must be '{expected}'")
        return q

    @model_validator(mode="after")
    def _points_thresholds_reachable(self) -> TierSettings:
        for level in self.levels:
            if self.basis == "points" and level.threshold > MAX_POINTS:
                raise ValueError(f"the threshold of '{level.name}' ({shown(level.threshold)}) is above "
                                 f"{MAX_POINTS:,} points, the most a balance holds")
        return self

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
            if upper.threshold > MAX_THRESHOLD:
                raise ValueError(f"the threshold of '{upper.name}' ({shown(upper.threshold)}) is above "
                                 f"{int(MAX_THRESHOLD):,}: no balance or spend reaches it")
            if upper.threshold <= lower.threshold:
                raise ValueError(
                    f"thresholds must increase: '{upper.name}' ({upper.threshold}) is not above "
                    f"'{lower.name}' ({lower.threshold})"
                )
        return levels


class Reward(_Strict):
    """One reward of the catalogue: what members can redeem their points for."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    cost: int = Field(gt=0, le=1_000_000_000, strict=True)  # `cost: true` or "500" is a mistake, not 1 or 500
    label: str | dict[str, str] | None = None

    def label_for(self, locale: str, default_locale: str) -> str:
        """The reward's name in the member's language (the name, capitalised, if none)."""
        return _localized(self.label, locale, default_locale) or self.name.replace("_", " ").capitalize()


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
    write_timeout: Span = timedelta(seconds=5)

    @field_validator("secret", mode="before")
    @classmethod
    def _one_or_several(cls, value: Any) -> Any:
        if value is None or isinstance(value, (list, tuple)):
            # an item written empty is refused where the file is read (_literal_secrets), once
            return tuple("" if item is None else item for item in value or ())
        if isinstance(value, str):
            return (value,)
        raise ValueError("expected a secret (`${LOYALTY_MAIL_SECRET}`) or a list of them, newest "
                         f"first, found {kind_of(value)}")

    @field_validator("secret")
    @classmethod
    def _empty_is_unset(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        repeated = repeated_items(value)
        if repeated:
            raise ValueError(f"the items [{repeated[0]}] and [{repeated[1]}] are the same secret (not shown); "
                             "list each secret once, newest first")
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
        raise ValueError(f"expected a time of day as HH:MM (e.g. '21:00'), found {shown(value)}")
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
    return_path: str | None = Field(default=None, pattern=r"^[^@\s+]+@[^@\s]+$", max_length=200)
    verp: bool = False


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


def _tls_mode(value: Any) -> bool | Literal["starttls"]:
    if value is True or value is False or value == "starttls":
        return value
    raise ValueError(f"expected true (implicit TLS), starttls or false, found {value!r}")


class BounceMailboxSettings(_Strict):
    """The mailbox that receives bounces and feedback-loop complaints, read over IMAP (see
    loyalty_mail/tracking/bounces.py). The password comes from the environment:
    `${BOUNCES_IMAP_PASSWORD}`."""

    imap: str = Field(min_length=1, max_length=253)
    port: int | None = Field(default=None, ge=1, le=65535)   # 993 with TLS, 143 without
    user: str = Field(min_length=1)
    password: str | None = None
    folder: str = Field(default="INBOX", min_length=1)
    tls: Annotated[bool | Literal["starttls"], PlainValidator(_tls_mode)] = True  # `starttls`: upgrade a plain connection
    soft_bounce_limit: int = Field(default=3, ge=1, le=1000)
    soft_bounce_window: Span = timedelta(days=30)
    timeout: Span = timedelta(minutes=1)
    _password_problem: Problem | None = PrivateAttr(default=None)  # set by settings_from_document

    @property
    def imap_port(self) -> int:
        return self.port or (993 if self.tls is True else 143)

    def require_password(self) -> str:
        """The password; ConfigError (at its line in config.yaml) when it is unset or empty. Only
        reading the mailbox needs it: other commands load the settings without it."""
        if self.password:
            return self.password
        raise ConfigError(self._password_problem or Problem(
            None, "sending.bounces.password is not set: add `password: ${BOUNCES_IMAP_PASSWORD}` and export "
                  "BOUNCES_IMAP_PASSWORD (the bounce mailbox's password)"))


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
    bounces: BounceMailboxSettings | None = None


class Reentry(_Strict):
    """How often a member may get a segment-entry email again."""

    max: int = Field(default=1, ge=1, le=1000)
    cooldown: Span = timedelta(days=90)


class VariantSettings(_Strict):
    """One arm of an A/B test: its own template and/or subject, and its share of members."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_]{0,31}$")
    template: str | None = None
    subject: str | None = Field(default=None, min_length=1, max_length=300)
    weight: int = Field(default=1, ge=1, le=10_000)


class WinnerRule(_Strict):
    """When an A/B test ends: after `after` sends, the variant whose `metric` beats every other
    one at `confidence` goes to every new member (README "A/B variants")."""

    metric: Literal["conversion_rate", "click_rate", "open_rate"] = "conversion_rate"
    after: int = Field(default=1000, ge=2, le=100_000_000)
    confidence: float = Field(default=0.95, gt=0.5, lt=1)

    @field_validator("after", mode="before")
    @classmethod
    def _sends(cls, value: Any) -> Any:
        if isinstance(value, str):  # `after: 1000 sends`
            number = value.strip().removesuffix("sends").removesuffix("send").strip().replace(",", "")
            if number.isdigit():
                return int(number)
            raise ValueError(f"'{value}' is not a number of sends (e.g. 1000 sends)")
        return value


def check_variants(variants: tuple[VariantSettings, ...]) -> tuple[VariantSettings, ...]:
    """A flow's (or a campaign's) `variants:` as a whole: two or more, named apart, each changing
    something (a pydantic field validator)."""
    names = [v.name for v in variants]
    problems = []
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        problems.append(f"variant names must be unique; repeated: {', '.join(repeated)}")
    if variants and len(variants) < 2:
        problems.append("needs two or more variants (e.g. a and b)")
    problems += [f"variant '{v.name}' changes nothing: give it a `template:` and/or a `subject:`"
                 for v in variants if v.template is None and v.subject is None]
    if problems:
        raise ValueError("; ".join(problems))
    return variants


def _localized(value: str | dict[str, str] | None, locale: str, default_locale: str) -> str | None:
    """One text, or one per locale ({en: ..., vi: ...}): the member's, else the default's, else any."""
    if isinstance(value, dict):
        for key in (locale, locale.split("_")[0], default_locale, default_locale.split("_")[0]):
            if key in value:
                return value[key]
        return next(iter(value.values()), None)
    return value


class Topic(_Strict):
    """What a flow's emails are about (promotions, statements, ...): members turn topics on and off
    in the preference centre. `default` is what a member who never chose gets."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    label: str | dict[str, str] | None = None
    description: str | dict[str, str] | None = None
    default: bool = True

    def label_for(self, locale: str, default_locale: str) -> str:
        return _localized(self.label, locale, default_locale) or self.name.replace("_", " ").capitalize()

    def description_for(self, locale: str, default_locale: str) -> str:
        return _localized(self.description, locale, default_locale) or ""


def _topic_shorthand(value: Any) -> Any:
    """`topics: [promotions, statements]` is `topics: [{name: promotions}, {name: statements}]`."""
    if isinstance(value, list):
        return [{"name": item} if isinstance(item, str) else item for item in value]
    return value


def _one_or_many(value: Any) -> Any:
    """`before: 30 days` is `before: [30 days]`."""
    return [value] if isinstance(value, (str, int, Duration)) else value


class FlowSettings(_Strict):
    """One lifecycle flow: a trigger, an optional audience, a template (or, for a journey, its
    `steps:`) and its policy."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    trigger: Literal["welcome", "milestone", "tier_upgrade", "reengagement", "event", "points_expiring",
                     "tier_at_risk", "tier_downgrade", "birthday", "reward_available", "statement",
                     "confirmation"]
    template: str = ""
    # a journey: steps (send, wait, wait_until, branch) read by flows/journey_spec.py, checked at
    # their lines when the settings are loaded; `exit_when` is a segment rule checked before each
    steps: tuple[dict[str, Any], ...] | None = None
    exit_when: dict[str, Any] | None = None
    # marketing: frequency cap, quiet hours; service (statements, confirmations): outside the cap,
    # and `quiet_hours: false` may send at night. Both respect bounces, complaints and the topic.
    message_class: Literal["marketing", "service"] = Field(default="marketing", alias="class")
    topic: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]{0,63}$")
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
    # points_expiring: reminders this long before each date points expire (`[30 days, 7 days]`);
    # tier_at_risk: this long before the tier review (one duration; 30 days when not given)
    before: Annotated[tuple[CalendarDuration, ...], BeforeValidator(_one_or_many)] = ()
    # when the daemon plans this flow: a crontab line in the program's time zone (default: every tick)
    schedule: str | None = None
    # A/B test: each member gets one variant (loyalty_mail/flows/variants.py)
    variants: tuple[VariantSettings, ...] = ()
    winner: WinnerRule | None = None

    _variants = field_validator("variants")(check_variants)
    # birthday: this many days before the birthday (0: on the day)
    days_before: int = Field(default=0, ge=0, le=30, strict=True)

    @field_validator("schedule")
    @classmethod
    def _crontab(cls, value: str | None) -> str | None:
        if value is not None:
            from apscheduler.triggers.cron import CronTrigger
            try:
                trigger = CronTrigger.from_crontab(value, timezone="UTC")
            except ValueError as exc:
                raise ValueError(f"'{value}' is not a crontab schedule (minute hour day month weekday, "
                                 f"e.g. '0 10 * * *' for 10:00 every day): {exc}") from None
            if trigger.get_next_fire_time(None, datetime(2000, 1, 1, tzinfo=timezone.utc)) is None:
                raise ValueError(f"'{value}' never comes (a day no month has, such as 30 February); "
                                 "'0 9 last * *' is the last day of every month")
        return value

    @property
    def is_journey(self) -> bool:
        return self.steps is not None

    def templates(self) -> list[str]:
        """The emails this flow sends: its template, or every `send:` of its steps (with their
        A/B variants' templates)."""
        if self.steps is None:
            return [self.template]
        found: list[str] = []

        def visit(steps: Any) -> None:
            for step in steps if isinstance(steps, (list, tuple)) else []:
                if not isinstance(step, dict):
                    continue
                send = step.get("send")
                name = send.get("template") if isinstance(send, dict) else send
                tested = step.get("variants") if send is not None else None
                for name in [name, *(v.get("template") for v in (tested if isinstance(tested, list) else [])
                                     if isinstance(v, dict))]:
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
    def _service_is_not_capped(self) -> FlowSettings:
        if self.message_class == "service":
            if self.frequency_cap and "frequency_cap" in self.model_fields_set:
                raise ValueError(f"flow '{self.name}': a service flow is outside the frequency cap; "
                                 "remove `frequency_cap: true` or make it `class: marketing`")
            object.__setattr__(self, "frequency_cap", False)
        return self

    def review_notice(self) -> timedelta:
        """tier_at_risk: how long before the tier review the email is due (`before:`, 30 days)."""
        return self.before[0].span() if self.before else timedelta(days=30)

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
        if self.steps is not None and (self.variants or self.winner is not None):
            raise ValueError(f"flow '{self.name}': a journey tests each email on its own: put `variants:` "
                             "(and `winner:`) on the send step, e.g. - {send: welcome, variants: [...]}")
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
        if self.trigger == "statement" and not self.schedule:
            raise ValueError(f"flow '{self.name}': a statement flow needs `schedule:` (when the daemon "
                             "plans it, e.g. \"0 9 1 * *\" for the 1st at 09:00)")
        if "days_before" in self.model_fields_set and self.trigger != "birthday":
            raise ValueError(f"flow '{self.name}': `days_before:` belongs to birthday flows")
        if self.trigger == "points_expiring" and not self.before:
            raise ValueError(f"flow '{self.name}': a points_expiring flow needs `before:`, the reminders "
                             "before points expire (e.g. before: [30 days, 7 days])")
        if self.trigger not in ("points_expiring", "tier_at_risk") and self.before:
            raise ValueError(f"flow '{self.name}': `before:` belongs to points_expiring and tier_at_risk flows")
        if self.trigger == "tier_at_risk" and (len(self.before) > 1 or any(
                offset.span() > timedelta(days=366) for offset in self.before)):
            raise ValueError(f"flow '{self.name}': a tier_at_risk flow takes one `before:` of at most a "
                             "year (e.g. before: 30 days)")
        if len({offset.calendar_key() for offset in self.before}) != len(self.before):
            raise ValueError(f"flow '{self.name}': before: lists the same reminder twice")
        if list(self.thresholds) != sorted(set(self.thresholds)) or any(t <= 0 for t in self.thresholds):
            raise ValueError(f"flow '{self.name}': thresholds must be positive and increasing")
        if self.winner is not None and not self.variants:
            raise ValueError(f"flow '{self.name}': `winner:` needs `variants:` to choose from")
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
    topics: Annotated[tuple[Topic, ...], BeforeValidator(_topic_shorthand)] = ()
    flows: tuple[FlowSettings, ...] = ()
    rewards: tuple[Reward, ...] = ()
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

    @field_validator("topics")
    @classmethod
    def _unique_topic_names(cls, topics: tuple[Topic, ...]) -> tuple[Topic, ...]:
        names = [topic.name for topic in topics]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"topic names must be unique; repeated: {', '.join(repeated)}")
        return topics

    def reward_standing(self, balance: int) -> dict[str, Any]:
        """Which rewards of the catalogue a balance affords, and the cheapest one it does not yet
        (with what is missing; none when every reward is affordable)."""
        affordable = [r.name for r in self.rewards if r.cost <= balance]
        nxt = next((r for r in self.rewards if r.cost > balance), None)
        return {"affordable": affordable,
                "next": None if nxt is None else {"name": nxt.name, "cost": nxt.cost, "needed": nxt.cost - balance}}

    def reminder_problems(self) -> list[tuple[PathKey, str]]:
        """Each `before:` reminder that is not shorter than what it reminds of: a points_expiring
        flow's than the expiry (program.points.expiry), a tier_at_risk flow's than the
        qualification period. It would fall when the points were earned (or at the member's last
        activity, or when they reached the tier) or before, so it could never remind anyone in
        time. The path of the reminder and what is wrong."""
        expiry, qualification = self.program.points.expiry, self.tiers.qualification
        found: list[tuple[PathKey, str]] = []
        for index, flow in enumerate(self.flows):
            notice = flow.before[0] if flow.before else Duration(30, "day")   # review_notice()
            if flow.trigger == "tier_at_risk" and qualification is not None \
                    and notice.never_shorter_than(qualification.period):
                found.append((("flows", index, "before", 0) if flow.before else ("flows", index),
                              f"flow '{flow.name}': a reminder {notice} before the tier review is not "
                              f"shorter than tiers.qualification.period ({qualification.period}): it would fall "
                              "when the member reaches the tier or before; give one shorter than the period"))
            if flow.trigger != "points_expiring" or expiry is None:
                continue
            for number, offset in enumerate(flow.before):
                span = expiry.after or expiry.inactivity
                assert span is not None
                if offset.never_shorter_than(span):
                    policy, falls = (("after", "when the points are earned") if expiry.after else
                                     ("inactivity", "at the member's last earning or redeeming event"))
                    found.append((("flows", index, "before", number),
                                  f"flow '{flow.name}': a reminder {offset} before the expiry is not shorter than "
                                  f"program.points.expiry ({policy}: {span}): it would fall {falls} or before; "
                                  "give reminders shorter than the expiry (e.g. before: [30 days, 7 days])"))
        return found

    def statement_schedule_problems(self) -> list[tuple[PathKey, str]]:
        """Each statement flow whose `schedule:` does not run within its lateness after some
        month's statement is due (the month's start, plus `delay`, in the program's time zone):
        the daemon would plan that statement too late, so it would never go out. Checked over
        the months of 2026: the path of the schedule and what is wrong."""
        from apscheduler.triggers.cron import CronTrigger
        zone = zoneinfo.ZoneInfo(self.program.default_timezone)
        found: list[tuple[PathKey, str]] = []
        for index, flow in enumerate(self.flows):
            if flow.trigger != "statement" or not flow.schedule:
                continue
            trigger = CronTrigger.from_crontab(flow.schedule, timezone=zone)
            for month in range(1, 13):
                due = datetime(2026, month, 1, tzinfo=zone) + flow.delay
                first = trigger.get_next_fire_time(None, due)
                if first is not None and first <= due + flow.lateness:
                    continue
                covered = datetime(2025 + (month > 1), (month - 2) % 12 + 1, 1)
                runs = f"runs first on {first:%Y-%m-%d %H:%M}" if first is not None else "never runs"
                found.append((("flows", index, "schedule"),
                              f"flow '{flow.name}': schedule '{flow.schedule}' {runs} for the statement of "
                              f"{covered:%B}, more than its lateness ({format_span(flow.lateness)}) after it was "
                              f"due at {due:%Y-%m-%d %H:%M}: no statement would go out; run it within the "
                              "lateness, e.g. \"0 9 1 * *\""))
                break
        return found

    def flow_topic_problems(self) -> list[tuple[PathKey, str]]:
        """Each flow naming a topic that is not in `topics`, or none while `topics` is set: the
        path of its `topic:` (or of the flow) and what is wrong."""
        names = [topic.name for topic in self.topics]
        found: list[tuple[PathKey, str]] = []
        for index, flow in enumerate(self.flows):
            if flow.topic is not None and flow.topic not in names:
                allowed = ", ".join(names) if names else "none: add `topics:` to config.yaml"
                found.append((("flows", index, "topic"), f"flow '{flow.name}': unknown topic '{flow.topic}' "
                                                          f"(topics: {allowed})"))
            if flow.topic is None and names and flow.trigger != "confirmation":
                found.append((("flows", index), f"flow '{flow.name}' names no topic; with `topics:` set every "
                                                f"flow names one (topic: {names[0]}; topics: {', '.join(names)})"))
        return found

    def label_problems(self, reward_index: Mapping[str, int] | None = None) -> list[tuple[PathKey, str]]:
        """Each per-locale text (labels, perks, descriptions of tiers, rewards and topics) that
        names a locale the program does not offer, or lacks one it offers: the path and what is
        wrong. Without this a typo (`vn:`) is never shown, and members of the missing locale get
        another language's text. `reward_index`: each reward's position in the file (the
        catalogue is kept sorted by cost)."""
        locales = self.program.locales
        offered = ", ".join(locales)
        found: list[tuple[PathKey, str]] = []

        def check(path: PathKey, what: str, value: object) -> None:
            if not isinstance(value, dict):
                return
            keys = list(value)
            for key in keys:
                canonical = normalize_locale(key)
                if canonical is None or not any(canonical in (loc, loc.split("_")[0]) for loc in locales):
                    found.append(((*path, key), f"{what}: {shown(key)} is not one of program.locales ({offered})"))
            for loc in locales:
                if not any(normalize_locale(key) in (loc, loc.split("_")[0]) for key in keys):
                    found.append((path, f"{what}: no text for '{loc}' (program.locales: {offered})"))

        for index, level in enumerate(self.tiers.levels):
            check(("tiers", "levels", index, "label"), f"tier '{level.name}' label", level.label)
            check(("tiers", "levels", index, "perks"), f"tier '{level.name}' perks", level.perks)
        for index, reward in enumerate(self.rewards):
            index = (reward_index or {}).get(reward.name, index)
            check(("rewards", index, "label"), f"reward '{reward.name}' label", reward.label)
        for index, topic in enumerate(self.topics):
            check(("topics", index, "label"), f"topic '{topic.name}' label", topic.label)
            check(("topics", index, "description"), f"topic '{topic.name}' description", topic.description)
        return found

    def topic(self, name: str | None) -> Topic | None:
        """The topic called `name`, or None."""
        return next((t for t in self.topics if t.name == name), None)

    def flow_topic(self, flow: str) -> str | None:
        """The topic of the flow called `flow` (None: no topics, or no such flow)."""
        return next((f.topic for f in self.flows if f.name == flow), None)

    def send_topic(self, flow: str, occurrence: Mapping[str, Any] | None) -> str | None:
        """The topic of one send: the one its occurrence recorded when planned (a campaign's),
        else its flow's in config.yaml (None: no topic)."""
        recorded = (occurrence or {}).get("topic")
        return recorded if isinstance(recorded, str) else self.flow_topic(flow)

    @field_validator("rewards")
    @classmethod
    def _unique_rewards(cls, rewards: tuple[Reward, ...]) -> tuple[Reward, ...]:
        names = [reward.name for reward in rewards]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"reward names must be unique; repeated: {', '.join(repeated)}")
        return tuple(sorted(rewards, key=lambda r: (r.cost, r.name)))

    @model_validator(mode="after")
    def _flows_have_what_they_need(self) -> Settings:
        for flow in self.flows:
            if flow.trigger == "tier_at_risk" and self.tiers.qualification is None:
                raise ValueError(f"flow '{flow.name}': a tier_at_risk flow needs tiers.qualification "
                                 "(e.g. {period: 12 months, grace: 30 days})")
            if flow.trigger == "reward_available" and not self.rewards:
                raise ValueError(f"flow '{flow.name}': a reward_available flow needs a `rewards:` "
                                 "catalogue (e.g. [{name: coffee, cost: 500}])")
            if flow.trigger == "confirmation" and not self.program.double_opt_in:
                raise ValueError(f"flow '{flow.name}': a confirmation flow needs program.double_opt_in: true")
            if flow.trigger == "confirmation" and flow.message_class != "service":
                raise ValueError(f"flow '{flow.name}': a confirmation flow is service email (class: service): "
                                 "marketing is what the member has not confirmed yet")
        return self

    @field_validator("flows")
    @classmethod
    def _expiring_points_need_a_policy(cls, flows: tuple[FlowSettings, ...],
                                       info: ValidationInfo) -> tuple[FlowSettings, ...]:
        program = info.data.get("program")
        expiring = [flow.name for flow in flows if flow.trigger == "points_expiring"]
        if expiring and program is not None and program.points.expiry is None:
            raise ValueError(f"flow '{expiring[0]}': a points_expiring flow needs program.points.expiry "
                             "(e.g. expiry: {after: 12 months})")
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
    unset: dict[PathKey, Problem] = {}
    data = _resolve_env(data, (), doc, environ, problems, unset)
    if environ.get(DATABASE_URL_ENV):
        data = {**data, "database": {**data.get("database", {}), "url": environ[DATABASE_URL_ENV]}}
    if database_url:
        data = {**data, "database": {**data.get("database", {}), "url": database_url}}
    for check in checks:
        problems += check(data, doc)
    try:
        settings = Settings.model_validate({**data, "project_dir": project_dir})
        written = {str(r.get("name")): i for i, r in enumerate(data.get("rewards") or []) if isinstance(r, dict)}
        problems += [Problem(doc.locate(path), message)
                     for path, message in settings.flow_topic_problems() + settings.label_problems(written)]
        for path, message in settings.reminder_problems() + settings.statement_schedule_problems():
            if path not in doc.positions and path[:-1] in doc.positions:
                path = path[:-1]   # one reminder written without a list (`before: 400 days`)
            problems.append(Problem(doc.locate(path), f"{format_path(path)}: {message}"))
    except ValidationError as exc:
        problems += [problem_from(error, doc) for error in exc.errors()]
    if problems:
        problems.sort(key=lambda p: (p.location.line, p.location.column) if p.location else (0, 0))
        raise ConfigError(problems)
    bounces = settings.sending.bounces
    if bounces is not None and not bounces.password:
        path = ("sending", "bounces", "password")
        named = " or ".join(_variables(doc, path))
        bounces._password_problem = unset.get(path) or Problem(
            doc.locate(path) if path in doc.positions else doc.locate(path[:-1]),
            f"sending.bounces.password is empty: set {named or 'the environment variable'} (the variable "
            "config.yaml names) to the bounce mailbox's password")
    return settings


def _display_name(path: Path) -> str:
    try:
        return str((path.parent.resolve() / path.name).relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _resolve_env(value: Any, path: PathKey, doc: YamlDocument, environ: dict[str, str],
                 problems: list[Problem], unset: dict[PathKey, Problem]) -> Any:
    """`${VAR}` and `${VAR:-fallback}` replaced from `environ`; an unset variable is a problem, or,
    for ON_USE_SECRETS, kept in `unset` for the command that needs the value."""
    if isinstance(value, dict):
        return {k: _resolve_env(v, path + (k,), doc, environ, problems, unset) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_env(v, path + (i,), doc, environ, problems, unset) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        name, fallback = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if fallback is not None:
            return fallback
        if path in ON_USE_SECRETS:
            unset[path] = Problem(doc.locate(path), f"{format_path(path)}: environment variable {name} is not set "
                                                    "(export it: reading the bounce mailbox needs it)")
            return ""
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
        problems += [Problem(doc.locate(path + (i,)), f"{format_path(path + (i,))}: an empty item; remove "
                             "it, or write ${VARIABLE:-} for an older secret that may be unset")
                     for i in empty_items(raw)]
    return problems


# Keys earlier versions read and this one does not: an error like any unknown key, saying why.
RETIRED_KEYS: dict[PathKey, str] = {
    ("tracking", "flush_interval"): "opens and clicks are written as they arrive "
                                    "(tracking.write_timeout bounds how long a write may wait)",
}


def problem_from(error: Any, doc: YamlDocument, model: type[BaseModel] | None = None) -> Problem:
    """Turn one pydantic error into a Problem at the YAML position it concerns; `model` is the
    one the document was validated as (default: Settings), for the keys it allows."""
    loc = tuple(part for part in error["loc"] if part != "project_dir")
    if loc and isinstance(loc[-1], int) and loc not in doc.positions and loc[:-1] in doc.positions:
        loc = loc[:-1]  # one value where a list is allowed (`secret: ${S}`): no item number
    kind = error["type"]
    if kind == "extra_forbidden":
        parent, key = loc[:-1], loc[-1]
        if loc in RETIRED_KEYS and (model or Settings) is Settings:
            return Problem(doc.locate(loc, key=True), f"{format_path(loc)} is no longer used: "
                                                       f"{RETIRED_KEYS[loc]}; remove it")
        allowed = ", ".join(_allowed_keys(parent, model or Settings))
        where = format_path(parent) or "the top level"
        return Problem(doc.locate(loc, key=True), f"unknown key '{key}' in {where} (allowed: {allowed})")
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    if kind == "missing":
        return Problem(doc.locate(loc[:-1]), f"{format_path(loc)}: required key is missing")
    found = error.get("input")
    if kind == "model_type":  # pydantic names the class: "a valid dictionary or instance of PointsSettings"
        allowed = ", ".join(_allowed_keys(loc, model or Settings))
        message = f"expected a mapping (keys: {allowed})" if allowed else "expected a mapping"
    echo = kind not in ("value_error",) and not isinstance(found, dict) and not is_secret_field(loc)
    written = format_span(found) if isinstance(found, timedelta) else shown(found)  # a duration, parsed
    suffix = f" (found {written})" if echo else ""
    where = format_path(loc) + (source_of(_variables(doc, loc)) if is_secret_field(loc) else "")
    return Problem(doc.locate(loc), f"{where + ': ' if loc else ''}{message}{suffix}")


def _variables(doc: YamlDocument, path: PathKey) -> list[str]:
    """The environment variables the value at `path` of `doc`, as written, reads (`${NAME}`)."""
    raw: Any = doc.value
    for part in path:
        if isinstance(raw, dict):
            raw = raw.get(part)
        elif isinstance(raw, list) and isinstance(part, int) and 0 <= part < len(raw):
            raw = raw[part]
        else:
            return []
    written = [raw] if isinstance(raw, str) else [r for r in raw if isinstance(r, str)] if isinstance(raw, list) else []
    return list(dict.fromkeys(m.group(1) for text in written for m in _ENV_REF.finditer(text)))


def _allowed_keys(path: PathKey, root: type[BaseModel]) -> list[str]:
    """The keys a mapping at `path` of a `root` document may hold."""
    model: Any = root
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
    return [field.alias or name for name, field in model.model_fields.items() if not field.exclude]  # not project_dir

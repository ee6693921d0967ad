"""Campaign files: `campaigns/<name>.yaml` -> a validated Campaign, with file:line:column errors.

A campaign is one email to an audience, once: a template (optionally with A/B variants), an
audience segment (default: every member), a send time and a topic. The file is reviewed like
every other program file; `loyalty-mail campaigns schedule NAME` stores what it says at that
moment, and that stored copy is what the planner sends.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from ..config import FlowSettings, Span, VariantSettings, WinnerRule, check_variants, problem_from
from ..durations import format_span
from ..errors import ConfigError, Location, Problem
from ..yaml_source import YamlDocument, load_yaml_file

CAMPAIGNS_DIR = "campaigns"
NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
AT_FORMATS = ("%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S")
# Every member's wall clock is within these of UTC (Pacific/Kiritimati +14, Etc/GMT+12 -12).
EARLIEST_ZONE, LATEST_ZONE = timedelta(hours=14), timedelta(hours=12)
AT_YEARS = (1900, 2200)  # as `--at`: the years segment times and windows can reach
# Every member's send time, throttle included, is before this (lateness, at most 100 years, is
# added to it): the planner's dates stay far inside what Python can compute.
SEND_LIMIT = datetime(2300, 1, 1, tzinfo=timezone.utc)


def _in_years(moment: datetime, value: Any) -> datetime:
    if not AT_YEARS[0] <= moment.year <= AT_YEARS[1]:
        raise ValueError(f"'{value}' is outside the years {AT_YEARS[0]} to {AT_YEARS[1]}")
    return moment


class Throttle(BaseModel):
    """At most `max` members' emails start every `per`, in member order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max: int = Field(ge=1, le=10_000_000)
    per: Span = timedelta(hours=1)

    @field_validator("per")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be a positive duration (e.g. 1 hour)")
        return value


class Campaign(BaseModel):
    """One validated campaign file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(default="", exclude=True)  # the file's name, not a key of the file
    description: str | None = None
    template: str
    segment: str | None = None
    at: datetime | str
    local_time: bool = False
    topic: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]{0,63}$")
    throttle: Throttle | None = None
    lateness: Span = timedelta(days=1)
    priority: int = Field(default=50, ge=0, le=1000)
    quiet_hours: bool = True
    frequency_cap: bool = True
    holdout: Decimal = Field(default=Decimal(0), ge=0, le=100)
    variants: tuple[VariantSettings, ...] = ()
    winner: WinnerRule | None = None

    @field_validator("at", mode="before")
    @classmethod
    def _moment(cls, value: Any) -> Any:
        if isinstance(value, datetime):  # unquoted in YAML; without an offset it is a wall time
            return _in_years(value, value) if value.tzinfo else _in_years(value, value).isoformat()
        if not isinstance(value, str):
            raise ValueError(f"expected a date and time such as \"2026-12-05 09:00\" (found {value!r})")
        text = value.strip()
        for pattern in AT_FORMATS:
            try:
                # a wall time: zone decided later
                return _in_years(datetime.strptime(text, pattern), value).isoformat()
            except ValueError:
                pass
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"'{value}' is not a date and time (expected \"YYYY-MM-DD HH:MM\", a wall "
                             "time, or an ISO instant such as 2026-12-05T09:00+07:00)") from None
        _in_years(moment, value)
        return moment if moment.tzinfo else moment.isoformat()

    @field_validator("local_time")
    @classmethod
    def _wall_time(cls, value: bool, info: ValidationInfo) -> bool:
        if value and isinstance(info.data.get("at"), datetime):
            raise ValueError("true sends at a wall time in each member's zone: write `at:` without a UTC "
                             "offset (e.g. \"2026-12-05 09:00\")")
        return value

    @field_validator("lateness")
    @classmethod
    def _some_lateness(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be a positive duration (e.g. 1 day): a member due at the campaign's time "
                             "is sent to until then")
        return value

    _variants = field_validator("variants")(check_variants)

    @model_validator(mode="after")
    def _consistent(self) -> Campaign:
        if self.winner is not None and not self.variants:
            raise ValueError("`winner:` needs `variants:` to choose from")
        return self

    @property
    def wall_time(self) -> datetime:
        """`at` as a naive wall time (for `local_time`, or in the program's zone)."""
        return self.at if isinstance(self.at, datetime) else datetime.fromisoformat(self.at)

    def send_time(self, zone: str) -> datetime:
        """When a member whose zone is `zone` gets it (before any throttle), in UTC. Without
        `local_time`, `zone` is the program's zone (ignored when `at` has an offset)."""
        moment = self.wall_time
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=ZoneInfo(zone))  # zoneinfo resolves gaps and folds
        return moment.astimezone(timezone.utc)

    def span(self, program_zone: str) -> tuple[datetime, datetime]:
        """The earliest and latest send time any member can have, before any throttle."""
        if not self.local_time:
            moment = self.send_time(program_zone)
            return moment, moment
        wall = self.wall_time.replace(tzinfo=timezone.utc)
        return wall - EARLIEST_ZONE, wall + LATEST_ZONE

    def throttled(self, moment: datetime, rank: int) -> datetime | None:
        """`moment` delayed by the throttle for the `rank`-th member of the audience (from 0);
        None when that is not before SEND_LIMIT."""
        if self.throttle is None or rank < self.throttle.max:
            return moment
        try:
            later = moment + self.throttle.per * (rank // self.throttle.max)
        except OverflowError:
            return None
        return later if later < SEND_LIMIT else None

    def last_send(self, program_zone: str, audience: int) -> datetime | None:
        """The latest send time of any member of an audience of `audience` members, throttle
        included; None when some member's is not before SEND_LIMIT."""
        return self.throttled(self.span(program_zone)[1], max(audience - 1, 0))

    def passed(self, last: datetime | None, now: datetime) -> str | None:
        """A warning when send time `last` plus the lateness is before `now`: nobody due by
        then would get it; None otherwise."""
        if last is None or last + self.lateness >= now:
            return None
        return (f"campaign '{self.name}': its send time {last:%Y-%m-%d %H:%M} UTC plus its lateness "
                f"({format_span(self.lateness)}) has passed: nobody due by then will get it")

    def describe_at(self, program_zone: str) -> str:
        wall = self.wall_time
        if self.local_time:
            return f"{wall:%Y-%m-%d %H:%M} in each member's own time zone"
        if wall.tzinfo is None:
            return f"{wall:%Y-%m-%d %H:%M} {program_zone}"
        return wall.isoformat()

    def as_flow(self) -> FlowSettings:
        """The campaign as the planner sees a flow: the same policy fields, trigger `campaign`."""
        return FlowSettings.model_construct(
            name=self.name, trigger="campaign", template=self.template, segment=self.segment,
            priority=self.priority, lateness=self.lateness, quiet_hours=self.quiet_hours,
            holdout=self.holdout, frequency_cap=self.frequency_cap, variants=self.variants,
            winner=self.winner, enabled=True, delay=timedelta(0), topic=self.topic, message_class="marketing")

    def stored(self) -> dict[str, Any]:
        """What `campaigns schedule` keeps: the file's values as JSON (durations as the file
        writes them, so that `from_stored` reads them back)."""
        return _json(self.model_dump(exclude_none=True))

    @classmethod
    def from_stored(cls, name: str, data: dict[str, Any]) -> Campaign:
        return cls.model_validate({**data, "name": name})


def _json(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    if isinstance(value, timedelta):
        return format_span(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def parse_campaign(doc: YamlDocument, name: str) -> tuple[Campaign | None, list[Problem]]:
    """A campaign document -> the Campaign, or the problems at their lines and columns."""
    if not NAME.match(name):
        return None, [Problem(Location(doc.file, 1), f"'{name}' is not a campaign name: the file name must "
                                                    "be lower case letters, digits and _ (e.g. december_sale.yaml)")]
    data = doc.value
    if not isinstance(data, dict):
        return None, [Problem(doc.locate(()), "a campaign file is a mapping (template:, segment:, at:, ...)")]
    if "name" in data:
        return None, [Problem(doc.locate(("name",), key=True),
                              "unknown key 'name': a campaign's name is its file name")]
    try:
        return Campaign.model_validate({**data, "name": name}), []
    except ValidationError as exc:
        return None, [problem_from(error, doc, Campaign) for error in exc.errors()]


def campaign_files(project_dir: Path) -> list[Path]:
    """Every campaigns/*.yaml (and *.yml) of the program, by name."""
    directory = project_dir / CAMPAIGNS_DIR
    return sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]) if directory.is_dir() else []


def load_campaigns(project_dir: Path) -> tuple[dict[str, Campaign], list[Problem]]:
    """Every campaigns/*.yaml of the program, and every problem found in them."""
    files = campaign_files(project_dir)
    campaigns: dict[str, Campaign] = {}
    problems: list[Problem] = []
    for path in files:
        try:
            doc = load_yaml_file(path, display_name=f"{CAMPAIGNS_DIR}/{path.name}", root=project_dir)
        except ConfigError as exc:
            problems += exc.problems
            continue
        campaign, found = parse_campaign(doc, path.stem)
        problems += found
        if campaign is not None:
            if campaign.name in campaigns:
                problems.append(Problem(Location(f"{CAMPAIGNS_DIR}/{path.name}", 1),
                                        f"a second file for campaign '{campaign.name}'"))
            campaigns[campaign.name] = campaign
    return campaigns, problems


def reference_problems(campaigns: dict[str, Campaign], flows: set[str], segments: set[str],
                       templates: set[str], topics: set[str] | None = None) -> list[Problem]:
    """Names a campaign uses that the program does not have (or that a flow already uses); with
    `topics` (config.yaml `topics:`), a campaign names one of them."""
    problems = []
    for name, c in sorted(campaigns.items()):
        where = Location(f"{CAMPAIGNS_DIR}/{name}.yaml", 1)
        if name in flows:
            problems.append(Problem(where, f"campaign '{name}' has the name of a flow: rename the file"))
        if c.segment and c.segment not in segments:
            problems.append(Problem(where, f"unknown segment '{c.segment}' (segments: "
                                           f"{', '.join(sorted(segments)) or 'none'})"))
        if topics and c.topic not in topics:
            found = f"unknown topic '{c.topic}'" if c.topic else "no topic"
            problems.append(Problem(where, f"{found}: with `topics:` in config.yaml every campaign names one "
                                           f"(topics: {', '.join(sorted(topics))})"))
        for template in sorted({c.template, *(v.template for v in c.variants if v.template)}):
            if template not in templates:
                problems.append(Problem(where, f"no email template '{template}' in templates/ (emails: "
                                               f"{', '.join(sorted(templates)) or 'none'})"))
    return problems

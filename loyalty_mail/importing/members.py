"""Member import: validate rows, stage them, then upsert by member_id in one transaction.

Upsert rules: a row for a new member_id inserts; a row for a known one updates the columns the
row gives a value for and keeps the rest (a blank cell or a missing key never erases data).
`subscribed: false` unsubscribes; `subscribed: true` never re-subscribes someone who left.
Topic columns (`topic.NAME` in a file, or `topics: {NAME: true|false}` in JSON) set the member's
topics (config.yaml `topics`): false always leaves the topic; true never undoes a member's own
choice to leave it. Every change is in the consent log.
Columns that are not member fields become custom attributes, merged into the existing ones.
Points (or spend) that move a member to another tier record the change in the tier history.
A row that changes a member's time zone derives their point lots again (they expire on the
member's clock).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from datetime import date, datetime
from functools import partial
from itertools import repeat
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from ..config import Settings
from .. import consent, suppression, touched
from ..errors import ColumnRefused
from ..models import MONEY, UTCDateTime, members_table, tier_changes_table
from ..points.store import rebuild_lots
from ..tiers import TierLadder
from . import columns, fields
from .batch import (
    BATCH_ROWS,
    ImportSummary,
    Rejects,
    bind_converters,
    create_staging,
    delete_rows,
    drop_staging,
    for_driver,
    index_staging,
    indexes_rebuilt,
    insert_chunks,
    later_duplicates,
)
from .readers import PROBLEMS, CsvBatch, SourceRow
from .partitioned import StagedParts

MEMBER_COLUMNS = (
    "member_id", "email", "first_name", "last_name", "locale", "timezone", "joined_at", "birthday",
    "points", "total_spend", "purchase_count", "last_purchase_at", "nps_score", "subscribed",
)
REQUIRED = ("member_id", "email")
# Columns a file must not set: they are computed, or belong to the database.
COMPUTED = {"tier": "the tier follows from points (or spend) and the tier ladder in config.yaml",
            "id": "ids are assigned by the database", "created_at": "set by loyalty-mail",
            "updated_at": "set by loyalty-mail", "unsubscribed_at": "set when subscribed becomes false"}
ATTRIBUTE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MAX_INT = 2**31 - 1

_metadata = sa.MetaData()
STAGING = sa.Table(
    "lm_staging_members", _metadata,
    sa.Column("row_no", sa.Integer, nullable=False),
    sa.Column("member_id", sa.String(64), nullable=False),
    sa.Column("email", sa.String(254), nullable=False),
    sa.Column("first_name", sa.String(100)),
    sa.Column("last_name", sa.String(100)),
    sa.Column("locale", sa.String(16)),
    sa.Column("timezone", sa.String(64)),
    sa.Column("joined_at", UTCDateTime()),
    sa.Column("joined_on", sa.Date()),
    sa.Column("birthday", sa.Date()),
    sa.Column("points", sa.Integer()),
    sa.Column("total_spend", MONEY),
    sa.Column("purchase_count", sa.Integer()),
    sa.Column("last_purchase_at", UTCDateTime()),
    sa.Column("nps_score", sa.SmallInteger()),
    sa.Column("subscribed", sa.Boolean()),
    sa.Column("attributes", sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True), "postgresql")),
    sa.Column("topics", sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True), "postgresql")),
    prefixes=["TEMPORARY"],
)
TOPIC_PREFIX = "topic."
TOPIC_MARGIN = 10  # a `topics` object may name this many more topics than config.yaml has (all reported)
MAX_NAMED = 5      # unknown topics named in one problem; the rest are counted
STAGING_COLUMNS = [column.name for column in STAGING.columns]
MEMBER_ID, EMAIL, ATTRIBUTES, JOINED_AT, JOINED_ON, TIMEZONE, TOPICS = (
    STAGING_COLUMNS.index(c) for c in ("member_id", "email", "attributes", "joined_at", "joined_on", "timezone",
                                       "topics"))


class MemberRowValidator:
    """Turns one source row into a staging row, or into a list of (column, problem)."""

    def __init__(self, settings: Settings, now: datetime):
        zone = self.zone = ZoneInfo(settings.program.default_timezone)
        latest = fields.latest_birthday(now)
        self.topics = tuple(topic.name for topic in settings.topics)
        self.parsers: dict[str, Callable[[Any], Any]] = {
            "member_id": fields.member_id,
            "email": fields.email,
            "first_name": partial(fields.text, max_length=100),
            "last_name": partial(fields.text, max_length=100),
            "locale": fields.locale,
            "timezone": fields.timezone_name,
            "joined_at": partial(fields.instant, default_zone=zone),
            "birthday": partial(fields.birthday, latest=latest),
            "points": partial(fields.whole_number, minimum=0, maximum=MAX_INT),
            "total_spend": fields.money,
            "purchase_count": partial(fields.whole_number, minimum=0, maximum=MAX_INT),
            "last_purchase_at": partial(fields.instant, default_zone=zone),
            "nps_score": partial(fields.whole_number, minimum=0, maximum=10),
            "subscribed": fields.boolean,
        }
        self.fast_parsers: dict[str, columns.FastParser] = {
            "member_id": columns.texts(64),
            "email": columns.emails,
            "first_name": columns.texts(100),
            "last_name": columns.texts(100),
            "locale": columns.by_distinct(fields.locale),
            "timezone": columns.by_distinct(fields.timezone_name),
            "joined_at": columns.instants(zone),
            "birthday": columns.dates_between(fields.FIRST_BIRTHDAY, latest),
            "points": columns.whole_numbers(0, MAX_INT),
            "total_spend": columns.amounts,
            "purchase_count": columns.whole_numbers(0, MAX_INT),
            "last_purchase_at": columns.instants(zone),
            "nps_score": columns.by_distinct(self.parsers["nps_score"]),
            "subscribed": columns.by_distinct(fields.boolean),
        }
        self._plans: dict[tuple[str, ...], list[tuple[str, int, Any]]] = {}

    def __call__(self, row_no: int, row: dict[str, Any]) -> tuple[list[Any] | None, list[tuple[str, str]]]:
        """A staging row (a list in STAGING's column order), or the row's problems."""
        if PROBLEMS in row:
            return None, list(row[PROBLEMS])
        plan = self.plan(tuple(row), row_no)
        staged: list[Any] = [None] * len(STAGING_COLUMNS)
        staged[0] = row_no
        attributes: dict[str, Any] = {}
        topics: dict[str, bool] = {}
        problems: list[tuple[str, str]] = []
        for (key, index, parser), value in zip(plan, row.values()):
            if value is None or (value.__class__ is str and (not value or value.isspace())):
                continue  # blank: keep what is stored (fields.is_blank, inlined for speed)
            if index == TOPICS:
                problems += self._topic_values(key, value, topics)
                continue
            if parser is None:
                if key == "attributes" and isinstance(value, dict):
                    for name in value:
                        self._check_attribute_key(name, row_no)
                    attributes.update(value)
                else:
                    attributes[key] = fields.custom_value(value)
                continue
            try:
                staged[index] = parser(value)
            except ValueError as exc:
                problems.append((key, str(exc)))
        if staged[MEMBER_ID] is None or staged[EMAIL] is None:
            for key, index in (("member_id", MEMBER_ID), ("email", EMAIL)):
                if staged[index] is None and not any(c == key for c, _ in problems):
                    problems.append((key, "is required" if key not in row else "is empty"))
        if problems:
            return None, problems
        staged[ATTRIBUTES] = attributes or None
        staged[TOPICS] = topics or None
        if staged[JOINED_AT] is not None:
            zone = ZoneInfo(staged[TIMEZONE]) if staged[TIMEZONE] else self.zone
            staged[JOINED_ON] = staged[JOINED_AT].astimezone(zone).date()
        return staged, problems

    def plan(self, signature: tuple[str, ...], row_no: int) -> list[tuple[str, int, Any]]:
        """For one set of columns, in order: (column, staging index, parser or None for attributes).

        Raises ColumnRefused (naming `row_no`) for a column that cannot be imported."""
        return self._plans.get(signature) or self._compile(signature, row_no)

    def _compile(self, signature: tuple[str, ...], row_no: int) -> list[tuple[str, int, Any]]:
        """For one set of columns, in order: (column, staging index, parser or None for attributes)."""
        plan: list[tuple[str, int, Any]] = []
        for key in signature:
            parser = self.parsers.get(key)
            if key == "topics" or key.startswith(TOPIC_PREFIX):  # unknown topics: row problems
                plan.append((key, TOPICS, fields.boolean))
            elif parser is None:
                self._check_attribute_key(key, row_no)
                plan.append((key, ATTRIBUTES, None))
            else:
                plan.append((key, STAGING_COLUMNS.index(key), parser))
        if len(self._plans) > 1000:  # JSON Lines rows may vary; keep the cache bounded
            self._plans.clear()
        self._plans[signature] = plan
        return plan

    def check_topic_columns(self, header: Iterable[str]) -> None:
        """ColumnRefused for a CSV header's `topic.NAME` column of a topic config.yaml does not have."""
        for key in header:
            if key.startswith(TOPIC_PREFIX) and key[len(TOPIC_PREFIX):] not in self.topics:
                raise ColumnRefused(f"row 1: column '{key}': unknown topic '{key[len(TOPIC_PREFIX):]}' "
                                    f"(topics in config.yaml: {', '.join(self.topics) or 'none'})")

    def _topic_values(self, key: str, value: Any, topics: dict[str, bool]) -> list[tuple[str, str]]:
        """Read `topic.NAME: yes` or `topics: {NAME: yes, ...}` into `topics`; the problems."""
        if key != "topics":
            wanted = {key[len(TOPIC_PREFIX):]: value}
        elif isinstance(value, dict):
            wanted = value
        else:
            return [(key, "expected an object of topics, e.g. {\"promotions\": false}")]
        known = ", ".join(self.topics) or "none"
        if len(wanted) > len(self.topics) + TOPIC_MARGIN:
            return [(key, f"an object of {len(wanted):,} topics; config.yaml has {len(self.topics)} "
                          f"(topics in config.yaml: {known})")]
        problems = []
        unknown = [str(name) for name in wanted if name not in self.topics]
        if unknown:
            shown = ", ".join(f"'{name[:64]}'" for name in unknown[:MAX_NAMED])
            more = f" and {len(unknown) - MAX_NAMED} more" if len(unknown) > MAX_NAMED else ""
            problems.append((key, f"unknown topic{'s' if len(unknown) > 1 else ''} {shown}{more} "
                                  f"(topics in config.yaml: {known})"))
        for name, choice in wanted.items():
            if name not in self.topics:
                continue
            try:
                chosen = fields.boolean(choice)
            except ValueError as exc:
                problems.append((key if key != "topics" else f"topics.{name}", str(exc)))
                continue
            if topics.setdefault(name, chosen) != chosen:
                problems.append((key, f"topic '{name}' is {str(topics[name]).lower()} in `topics` or "
                                      f"`{TOPIC_PREFIX}{name}` and {str(chosen).lower()} here: give it once"))
        return problems

    def _check_attribute_key(self, key: str, row_no: int) -> None:
        if key in COMPUTED:
            raise ColumnRefused(f"row {row_no}: column '{key}' cannot be imported: {COMPUTED[key]}. "
                                 "Remove the column.")
        if key != "attributes" and not ATTRIBUTE_NAME.match(key):
            raise ColumnRefused(
                f"row {row_no}: column '{key}' is not a member field ({', '.join(MEMBER_COLUMNS)}) "
                "and cannot be a custom attribute name (letters, digits and _, not starting with a digit)"
            )


class MemberColumns:
    """Turns a CsvBatch into staging rows ready for the driver, a column at a time.

    The values are those MemberRowValidator gives (see `columns`); a row with any problem is
    handed to MemberRowValidator, so its problems read exactly as in the row-wise path.
    """

    def __init__(self, validate: MemberRowValidator, dialect: sa.Dialect):
        self.validate = validate
        self.converters = bind_converters(STAGING, dialect)
        self.column_converters: dict[int, Callable[[list[Any]], list[Any]]] = {}
        if dialect.name == "sqlite":
            # Whole-column forms of what the processor (or sqlite3's own adapter) does to a value.
            for index, column in enumerate(STAGING.columns):
                if isinstance(column.type, UTCDateTime):
                    self.column_converters[index] = UTCDateTime.sqlite_texts
                elif isinstance(column.type, sa.Date):
                    self.column_converters[index] = _iso_dates
        # Written as the JSON text that the JSON type's processor would make of the dicts.
        self.column_converters[ATTRIBUTES] = _unchanged
        self.column_converters[TOPICS] = _unchanged
        self._zones: dict[str, ZoneInfo] = {}

    def __call__(self, batch: CsvBatch) -> tuple[list[tuple[Any, ...]], list[SourceRow]]:
        """(staging rows, the source rows that have problems)."""
        self.validate.check_topic_columns(batch.header)
        plan = self.validate.plan(tuple(batch.header), 1)  # the header is row 1
        staged: list[list[Any] | None] = [None] * len(STAGING_COLUMNS)
        staged[0] = batch.numbers
        rejected: set[int] = set()
        custom: list[tuple[str, list[str | None]]] = []
        topics: list[tuple[str, list[Any]]] = []
        for (key, index, parse), cells in zip(plan, zip(*batch.records)):
            if index == TOPICS:
                parsed, bad = columns.parse_column(cells, columns.by_distinct(fields.boolean), fields.boolean)
                topics.append((key[len(TOPIC_PREFIX):], parsed))
                rejected.update(bad)
                continue
            if parse is None:
                trimmed = list(map(str.strip, cells))
                custom.append((key, [value or None for value in trimmed]))
                continue
            staged[index], bad = columns.parse_column(cells, self.validate.fast_parsers[key], parse)
            rejected.update(bad)
        for index in (MEMBER_ID, EMAIL):
            column = staged[index]
            if column is None:
                rejected.update(range(len(batch.numbers)))
            elif None in column:
                rejected.update(i for i, value in enumerate(column) if value is None)
        if custom:
            names, values = zip(*custom)
            staged[ATTRIBUTES] = columns.json_objects(names, values)
        if topics:
            staged[TOPICS] = [json.dumps(chosen) if chosen else None for chosen in (
                {name: value for (name, _), value in zip(topics, row) if value is not None}
                for row in zip(*(values for _, values in topics)))]
        joined = staged[JOINED_AT]
        if joined is not None:
            staged[JOINED_ON] = self._local_dates(joined, staged[TIMEZONE])
        for index, column in enumerate(staged):
            if column is None:
                continue
            if index in self.column_converters:
                staged[index] = self.column_converters[index](column)
            elif index in self.converters:
                convert = self.converters[index]
                staged[index] = [None if value is None else convert(value) for value in column]
        rows = list(zip(*(repeat(None) if column is None else column for column in staged)))
        if not rejected:
            return rows, []
        return ([row for i, row in enumerate(rows) if i not in rejected],
                [(batch.numbers[i], batch.row(i)) for i in sorted(rejected)])

    def _local_dates(self, instants: list[datetime | None], zone_names: list[str | None] | None) -> list[date | None]:
        """joined_on: the join date in the member's zone (the program's when the row has none)."""
        zones = self._zones
        default = self.validate.zone
        if zone_names is None:
            return [None if at is None else at.astimezone(default).date() for at in instants]
        for name in set(zone_names) - zones.keys():
            if name is not None:
                zones[name] = ZoneInfo(name)
        return [None if at is None else at.astimezone(zones[name] if name else default).date()
                for at, name in zip(instants, zone_names)]


def _iso_dates(values: list[date | None]) -> list[str | None]:
    return [None if value is None else value.isoformat() for value in values]


def _unchanged(values: list[Any]) -> list[Any]:
    return values


def import_members(
    connection: sa.Connection,
    settings: Settings,
    rows: Iterable[SourceRow | CsvBatch] | StagedParts,
    *,
    source: str,
    now: datetime,
    skip_invalid: bool = False,
    consent_source: str = "import",
) -> tuple[ImportSummary, Rejects]:
    """Import member rows inside the caller's transaction. Unsubscribes and topic changes are in
    the consent log as from `consent_source` (import, or api for the HTTP API).

    `rows` are source rows and CSV batches, or what worker processes staged already (see
    partitioned.py). Raises ImportRejected (and the caller rolls back) when any row is bad and
    skip_invalid is off; otherwise returns the summary and the rejected rows for the caller.
    """
    summary = ImportSummary(source=source)
    create_staging(connection, STAGING)
    if isinstance(rows, StagedParts):
        rows.copy_into_staging(connection)
        summary.rows_read, rejects = rows.rows_read, rows.rejects
    else:
        rejects = Rejects()
        staging = MemberStaging(settings, connection.dialect, now)
        insert_chunks(connection, STAGING, _staging_chunks(staging, rows, summary, rejects))
    index_staging(connection, STAGING, "member_id")
    duplicates = later_duplicates(connection, STAGING, "member_id")
    for row_no, member_id, first_row in duplicates:
        rejects.add(row_no, "member_id", f"'{member_id}' already appears in row {first_row}")
    if not skip_invalid:
        rejects.raise_if_any(source)
    delete_rows(connection, STAGING, (row for row, _, _ in duplicates))
    summary.rejected = len(rejects)

    rezoned = _rezoned(connection, settings)
    _apply(connection, TierLadder.from_settings(settings.tiers), now, summary, consent_source,
           settings.program.double_opt_in)
    rebuild_lots(connection, settings, rezoned)
    _apply_topics(connection, {t.name: t.default for t in settings.topics}, now, consent_source)
    touched.enqueue(connection, sa.select(members_table.c.id).where(
        members_table.c.member_id.in_(sa.select(STAGING.c.member_id))), now,
        count=summary.inserted + summary.updated)
    drop_staging(connection, STAGING)
    return summary, rejects


class MemberStaging:
    """Source rows to staging rows ready for the driver: CSV batches a column at a time, other
    rows one by one. Rows with problems go to the given Rejects."""

    def __init__(self, settings: Settings, dialect: sa.Dialect, now: datetime):
        self.validate = MemberRowValidator(settings, now)
        self.by_column = MemberColumns(self.validate, dialect)
        self.converters = list(self.by_column.converters.items())

    def batch(self, batch: CsvBatch, rejects: Rejects) -> list[tuple[Any, ...]]:
        staged, bad_rows = self.by_column(batch)
        if bad_rows:
            staged += self.rows(bad_rows, rejects)
        return staged

    def rows(self, rows: Iterable[SourceRow], rejects: Rejects) -> list[tuple[Any, ...]]:
        staged_rows = []
        for row_no, row in rows:
            staged, problems = self.validate(row_no, row)
            if problems:
                rejects.extend(row_no, problems)
                continue
            assert staged is not None
            staged_rows.append(for_driver(staged, self.converters))
        return staged_rows


def _staging_chunks(staging: MemberStaging, rows: Iterable[SourceRow | CsvBatch], summary: ImportSummary,
                    rejects: Rejects) -> Iterator[list[tuple[Any, ...]]]:
    chunk: list[tuple[Any, ...]] = []
    for item in rows:
        if isinstance(item, CsvBatch):
            summary.rows_read += len(item.numbers)
            yield staging.batch(item, rejects)
        else:
            summary.rows_read += 1
            chunk += staging.rows((item,), rejects)
            if len(chunk) >= BATCH_ROWS:
                yield chunk
                chunk = []
    yield chunk


def _rezoned(connection: sa.Connection, settings: Settings) -> list[int]:
    """The known members whose time zone the staged rows change (a blank keeps it), ascending:
    their point lots expire on their own clock, so they are derived again once the import has
    set the new zone (nothing to do when points do not expire)."""
    if settings.program.points.expiry is None:
        return []
    m, s = members_table, STAGING
    default = settings.program.default_timezone
    return list(connection.execute(
        sa.select(m.c.id).join(s, m.c.member_id == s.c.member_id)
        .where(s.c.timezone.is_not(None), sa.func.coalesce(m.c.timezone, default) != s.c.timezone)
        .order_by(m.c.id)).scalars())


def _apply(connection: sa.Connection, ladder: TierLadder, now: datetime, summary: ImportSummary,
           consent_source: str, double_opt_in: bool) -> None:
    m, s = members_table, STAGING
    now_value = sa.literal(now, UTCDateTime())
    matched = m.c.member_id == s.c.member_id
    existing = sa.select(sa.func.count()).select_from(s.join(m, matched))
    summary.updated = connection.execute(existing).scalar_one()
    staged = connection.execute(sa.select(sa.func.count()).select_from(s)).scalar_one()
    summary.inserted = staged - summary.updated

    # With tiers.qualification the tier review moves members; an import keeps the tier of a member
    # it updates (a new one starts at the tier their points or spend earn, below).
    new_tier = m.c.tier if ladder.held else ladder.sql_tier(sa.func.coalesce(s.c.points, m.c.points),
                                                            sa.func.coalesce(s.c.total_spend, m.c.total_spend))
    changes = (
        sa.select(m.c.id, m.c.tier, new_tier, now_value, sa.literal("members import"))
        .select_from(m.join(s, matched))
        .where(new_tier != m.c.tier)
    )
    # Counted, not read from rowcount: drivers disagree on rowcount for INSERT ... SELECT.
    summary.tier_changes = connection.execute(
        sa.select(sa.func.count()).select_from(changes.subquery())).scalar_one()
    connection.execute(tier_changes_table.insert().from_select(
        ["member_ref", "from_tier", "to_tier", "changed_at", "reason"], changes))

    # joined_on is the join date in the member's zone; where the zone in force comes from the
    # stored row rather than this file, it is recomputed below, in Python (zones need tzdata).
    recompute = [member_ref for (member_ref,) in connection.execute(
        sa.select(m.c.id).select_from(m.join(s, matched)).where(sa.or_(
            sa.and_(s.c.joined_at.is_not(None), s.c.timezone.is_(None), m.c.timezone.is_not(None)),
            sa.and_(s.c.timezone.is_not(None), s.c.joined_at.is_(None), m.c.joined_at.is_not(None)),
        )))]
    keep: dict[str, sa.ColumnElement[Any]] = {c: sa.func.coalesce(s.c[c], m.c[c])
            for c in MEMBER_COLUMNS if c not in ("member_id", "email", "subscribed")}
    keep["joined_on"] = sa.case((s.c.joined_at.is_not(None), s.c.joined_on), else_=m.c.joined_on)
    # An import may unsubscribe a member but never re-subscribe one: a stale export must not undo
    # an unsubscribe (re-subscribing is an explicit operator action). The addresses are read
    # before the update (which may change them to the file's) and unsubscribed after it.
    leaving = [email for (email,) in connection.execute(
        sa.select(s.c.email).select_from(m.join(s, matched))
        .where(s.c.subscribed == sa.false(), m.c.subscribed == sa.true()))]
    with indexes_rebuilt(connection, m, summary.inserted + summary.updated):
        connection.execute(
            m.update().where(matched).values(
                email=s.c.email,
                **keep,
                tier=new_tier,
                attributes=_merged_attributes(connection, m.c.attributes, s.c.attributes),
                updated_at=now_value,
            )
        )

        _recompute_joined_on(connection, recompute)

        zero = sa.literal(0)
        insert_columns = {
            "member_id": s.c.member_id, "email": s.c.email, "first_name": s.c.first_name,
            "last_name": s.c.last_name, "locale": s.c.locale, "timezone": s.c.timezone,
            "joined_at": s.c.joined_at, "joined_on": s.c.joined_on, "birthday": s.c.birthday,
            "points": sa.func.coalesce(s.c.points, zero),
            "total_spend": sa.func.coalesce(s.c.total_spend, sa.literal(0, MONEY)),
            "purchase_count": sa.func.coalesce(s.c.purchase_count, zero),
            "last_purchase_at": s.c.last_purchase_at, "nps_score": s.c.nps_score,
            "subscribed": sa.func.coalesce(s.c.subscribed, sa.true()),
            "tier": ladder.sql_tier(sa.func.coalesce(s.c.points, zero),
                                    sa.func.coalesce(s.c.total_spend, sa.literal(0, MONEY))),
            "attributes": sa.func.coalesce(s.c.attributes, _empty_json(connection)),
            "created_at": now_value, "updated_at": now_value,
        }
        if double_opt_in:  # a new member gets marketing email once they confirm their address
            insert_columns["unconfirmed_since"] = now_value
        new_rows = sa.select(*insert_columns.values())
        if summary.updated:  # else no staged member_id is in members: skip a probe per row
            new_rows = new_rows.where(~sa.exists().where(m.c.member_id == s.c.member_id))
        connection.execute(m.insert().from_select(list(insert_columns), new_rows))
    suppression.unsubscribe(connection, leaving, now, detail="members import", source=consent_source)
    if double_opt_in and summary.inserted:
        created = connection.execute(sa.select(m.c.id).where(
            m.c.member_id.in_(sa.select(s.c.member_id)), m.c.created_at == now_value,
            m.c.unconfirmed_since == now_value)).scalars().all()
        consent.record(connection, created, "await_confirm", consent_source, now, detail="double opt-in")


def _apply_topics(connection: sa.Connection, defaults: dict[str, bool], now: datetime, source: str) -> None:
    """The staged topic choices, after the members exist: a member's own choice to leave a topic
    (from a link) is never undone by a file."""
    if not defaults:
        return
    m, s = members_table, STAGING
    rows = connection.execute(sa.select(m.c.id, s.c.topics).select_from(m.join(s, m.c.member_id == s.c.member_id))
                              .where(s.c.topics.is_not(None))).all()
    choices = {ref: json.loads(chosen) if isinstance(chosen, str) else chosen for ref, chosen in rows}
    if choices:
        consent.set_topics(connection, choices, defaults, source, now, detail="members import",
                           keep_left=True)


def _recompute_joined_on(connection: sa.Connection, member_refs: list[int]) -> None:
    m = members_table
    for start in range(0, len(member_refs), 900):
        chunk = member_refs[start:start + 900]
        rows = connection.execute(sa.select(m.c.id, m.c.joined_at, m.c.timezone).where(m.c.id.in_(chunk))).all()
        updates = [{"b_id": r.id, "b_on": local_date(r.joined_at, r.timezone)} for r in rows if r.timezone]
        if updates:
            connection.execute(m.update().where(m.c.id == sa.bindparam("b_id"))
                               .values(joined_on=sa.bindparam("b_on")), updates)


def local_date(instant: datetime, zone: str) -> date:
    """The calendar date of `instant` in the IANA zone `zone`."""
    return instant.astimezone(ZoneInfo(zone)).date()


def _empty_json(connection: sa.Connection) -> sa.ColumnElement[Any]:
    if connection.dialect.name == "postgresql":
        return sa.cast(sa.literal("{}"), postgresql.JSONB)
    return sa.literal("{}")


def _merged_attributes(connection: sa.Connection, current: sa.ColumnElement[Any],
                       incoming: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """Existing attributes with the incoming keys set (SQL JSON merge on either database)."""
    if connection.dialect.name == "postgresql":
        return current.op("||")(sa.func.coalesce(incoming, _empty_json(connection)))
    return sa.func.json_patch(current, sa.func.coalesce(incoming, "{}"))

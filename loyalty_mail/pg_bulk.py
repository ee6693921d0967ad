"""PostgreSQL bulk statements whose text is fixed: the rows go as one JSON parameter.

A multi-row VALUES statement (SQLAlchemy's insertmanyvalues) has a placeholder for every value
and a text that changes with the row count, so psycopg converts each one afresh and the server
plans it afresh; executemany sends a statement a row; an array a column (`unnest(%s::int[],
...)`) is dumped by psycopg element by element in Python. Here the rows are one JSON document,
written by the json module's C encoder and read by the server's (`json_to_recordset`), under a
statement text fixed by the table and the columns: psycopg converts it once and prepares it on
the server after a few uses. Values are what the column types' own bind processors make of them,
as text the column's type reads back exactly (ISO times, decimal strings).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import date
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

POSITION = "lm_position"  # each row's place in the batch, a key of its JSON object
# Fewer rows go as the plain statements SQLAlchemy compiles: with one event a request (16 tasks
# in process, group commit) the API made 121-129 requests/s through these, 242-287 through those.
MIN_ROWS = 2


def insert_returning_ids(connection: sa.Connection, table: sa.Table, columns: Sequence[str],
                         rows: Sequence[Sequence[Any]]) -> list[int]:
    """Insert `rows` (tuples in `columns` order) and return the new ids in the rows' order.

    The rows are inserted in ORDER BY of their position, so the id sequence hands out its values
    in that order, and the ids come back sorted: the same guarantee SQLAlchemy's "insertmanyvalues"
    gives with sort_by_parameter_order on PostgreSQL (INSERT ... SELECT ... ORDER BY)."""
    if not rows:
        return []
    sql, document = _insert(table, tuple(columns), connection.dialect, returning=True)
    ids = sorted(connection.exec_driver_sql(sql, (document(rows),)).scalars())
    assert len(ids) == len(rows), "an id was not returned for every row"
    return ids


def insert(connection: sa.Connection, table: sa.Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Insert `rows` (tuples in `columns` order) in one statement, in their order."""
    if rows:
        sql, document = _insert(table, tuple(columns), connection.dialect, returning=False)
        connection.exec_driver_sql(sql, (document(rows),))


def update_by_id(connection: sa.Connection, table: sa.Table, columns: Sequence[str],
                 rows: Sequence[Sequence[Any]]) -> None:
    """Set `columns[1:]` of the row whose `columns[0]` (a unique key) is each row's first value."""
    if rows:
        sql, document = _update(table, tuple(columns), connection.dialect)
        connection.exec_driver_sql(sql, (document(rows),))


def by_key(table: sa.Table, key: str, columns: Sequence[sa.Column[Any]]) -> sa.TextualSelect:
    """SELECT `columns` of the rows whose unique `key` is among the JSON array of strings bound
    as `keys`: an index look-up a key, whatever the planner thinks of the table (`key =
    ANY(array)` can be planned as a scan of the whole table testing every row against the array)."""
    names = ", ".join(column.name for column in columns)
    return sa.text(
        f"SELECT {names} FROM json_array_elements_text(CAST(:keys AS json)) AS wanted(lm_key) CROSS JOIN LATERAL "
        f"(SELECT {names} FROM {table.name} WHERE {table.name}.{key} = wanted.lm_key LIMIT 1) AS found"
    ).columns(*columns)


def keys(values: Sequence[str]) -> str:
    """The `keys` parameter of a `by_key` statement."""
    return json.dumps(list(values), ensure_ascii=False)


Document = Callable[[Sequence[Sequence[Any]]], str]


@lru_cache(maxsize=64)
def _insert(table: sa.Table, columns: tuple[str, ...], dialect: sa.Dialect, returning: bool) -> tuple[str, Document]:
    rows, document = _recordset(table, columns, dialect)
    names = ", ".join(columns)
    sql = f"INSERT INTO {table.name} ({names}) SELECT {names} FROM {rows} ORDER BY {POSITION}"
    if returning:
        (key,) = table.primary_key.columns
        sql += f" RETURNING {key.name}"
    return sql, document


@lru_cache(maxsize=64)
def _update(table: sa.Table, columns: tuple[str, ...], dialect: sa.Dialect) -> tuple[str, Document]:
    rows, document = _recordset(table, columns, dialect)
    key, rest = columns[0], columns[1:]
    sql = (f"UPDATE {table.name} SET {', '.join(f'{c} = u.{c}' for c in rest)} "
           f"FROM {rows} WHERE {table.name}.{key} = u.{key}")
    return sql, document


def _recordset(table: sa.Table, columns: tuple[str, ...], dialect: sa.Dialect) -> tuple[str, Document]:
    """`json_to_recordset(%s::json) AS u(column type, ..., lm_position)` for the columns, and the
    function that writes rows as its JSON document."""
    if dialect.name != "postgresql":
        raise ValueError(f"JSON row parameters are for PostgreSQL, not {dialect.name}")
    types = [table.c[name].type for name in columns]
    processors = [t.dialect_impl(dialect).bind_processor(dialect) for t in types]
    as_json = [_as_json(t) for t in types]
    definition = ", ".join(f"{name} {t.compile(dialect=postgresql.dialect())}" for name, t in zip(columns, types))
    # the JSON types' bind processors wrap values for psycopg: their values go in as they are
    steps = [(name, None if to_json is None else process, to_json)
             for name, process, to_json in zip(columns, processors, as_json)]

    def document(rows: Sequence[Sequence[Any]]) -> str:
        objects = [dict(zip(columns, row), **{POSITION: n}) for n, row in enumerate(rows)]
        for name, process, to_json in steps:
            if to_json is None:
                continue
            for obj in objects:
                value = obj[name]
                if value is not None:
                    obj[name] = to_json(process(value) if process else value)
        return json.dumps(objects, ensure_ascii=False)

    return f"json_to_recordset(%s::json) AS u({definition}, {POSITION} integer)", document


def _as_json(kind: sa.types.TypeEngine[Any]) -> Callable[[Any], Any] | None:
    """How a value of this column type is written in JSON (None: as json.dumps writes it)."""
    base = kind.impl_instance if isinstance(kind, sa.TypeDecorator) else kind
    if isinstance(base, (sa.JSON, sa.String, sa.Integer, sa.Boolean)):
        return None
    if isinstance(base, (sa.DateTime, sa.Date)):
        return _iso
    if isinstance(base, sa.Numeric) and not isinstance(base, sa.Float):
        return str
    raise ValueError(f"no JSON form for a {kind} column")


def _iso(value: date) -> str:
    return value.isoformat()

"""PostgreSQL bulk writes that pass each column as one array: `unnest(%s::type[], ...)`.

A multi-row VALUES statement (SQLAlchemy's insertmanyvalues) has a placeholder for every value
and a text that changes with the row count, so psycopg converts each one afresh and the server
plans it afresh; executemany sends a statement a row. Here a statement has one parameter a
column and a text fixed by the table and the columns written: psycopg converts it once, prepares
it on the server after a few uses, and a batch of 1,000 rows is a handful of parameters in one
round trip. Values go through each column type's own bind processor, as SQLAlchemy would.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import sqlalchemy as sa


def insert_returning_ids(connection: sa.Connection, table: sa.Table, columns: Sequence[str],
                         rows: Sequence[Sequence[Any]]) -> list[int]:
    """Insert `rows` (tuples in `columns` order) and return the new ids in the rows' order.

    The rows are inserted in ORDER BY of their position, so the id sequence hands out its values
    in that order, and the ids come back sorted: the same guarantee SQLAlchemy's "insertmanyvalues"
    gives with sort_by_parameter_order on PostgreSQL (INSERT ... SELECT ... ORDER BY)."""
    if not rows:
        return []
    sql, convert = _insert(table, tuple(columns), connection.dialect, returning=True)
    ids = sorted(connection.exec_driver_sql(sql, convert(rows)).scalars())
    assert len(ids) == len(rows), "an id was not returned for every row"
    return ids


def insert(connection: sa.Connection, table: sa.Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Insert `rows` (tuples in `columns` order) in one statement."""
    if rows:
        sql, convert = _insert(table, tuple(columns), connection.dialect, returning=False)
        connection.exec_driver_sql(sql, convert(rows))


def update_by_id(connection: sa.Connection, table: sa.Table, columns: Sequence[str],
                 rows: Sequence[Sequence[Any]]) -> None:
    """Set `columns[1:]` of the row whose `columns[0]` (a unique key) is each row's first value."""
    if rows:
        sql, convert = _update(table, tuple(columns), connection.dialect)
        connection.exec_driver_sql(sql, convert(rows))


Converter = Callable[[Sequence[Sequence[Any]]], tuple[list[Any], ...]]


@lru_cache(maxsize=64)
def _insert(table: sa.Table, columns: tuple[str, ...], dialect: sa.Dialect, returning: bool) -> tuple[str, Converter]:
    arrays, convert = _arrays(table, columns, dialect)
    names = ", ".join(columns)
    sql = (f"INSERT INTO {table.name} ({names}) SELECT {names} FROM {arrays} WITH ORDINALITY "
           f"AS u({names}, lm_position) ORDER BY lm_position")
    if returning:
        (key,) = table.primary_key.columns
        sql += f" RETURNING {key.name}"
    return sql, convert


@lru_cache(maxsize=64)
def _update(table: sa.Table, columns: tuple[str, ...], dialect: sa.Dialect) -> tuple[str, Converter]:
    arrays, convert = _arrays(table, columns, dialect)
    key, rest = columns[0], columns[1:]
    sql = (f"UPDATE {table.name} SET {', '.join(f'{c} = u.{c}' for c in rest)} "
           f"FROM {arrays} AS u({', '.join(columns)}) WHERE {table.name}.{key} = u.{key}")
    return sql, convert


def _arrays(table: sa.Table, columns: tuple[str, ...], dialect: sa.Dialect) -> tuple[str, Converter]:
    """`unnest(%s::type[], ...)` for the columns, and the function that turns rows into its arrays."""
    if dialect.name != "postgresql":
        raise ValueError(f"array parameters are for PostgreSQL, not {dialect.name}")
    types = [table.c[name].type for name in columns]
    processors = [t.dialect_impl(dialect).bind_processor(dialect) for t in types]
    casts = ", ".join(f"%s::{t.compile(dialect=dialect)}[]" for t in types)

    def convert(rows: Sequence[Sequence[Any]]) -> tuple[list[Any], ...]:
        arrays = tuple(map(list, zip(*rows)))
        for values, process in zip(arrays, processors):
            if process is not None:
                values[:] = [None if v is None else process(v) for v in values]
        return arrays

    return f"unnest({casts})", convert

"""Many rows written in one call, the way each database takes them fastest.

The rows are tuples in the order of the `columns` named. On SQLite they go to the driver as
they are, by one executemany under a statement text built once from the table and the columns,
each value converted first by its column type's own bind processor (so a time, an amount, a
JSON document is stored exactly as SQLAlchemy would store it): SQLAlchemy's general handling of
a row's parameters (a dict a row, then the same conversions) costs more than SQLite's insert.
On PostgreSQL, two rows or more go as pg_bulk's one JSON parameter, and a single row as
SQLAlchemy's own statement. Rows are looked up by a list of keys the same way: the keys as one
JSON parameter (`by_key`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from functools import lru_cache
from typing import Any

import sqlalchemy as sa

from . import pg_bulk

Converters = list[tuple[int, Callable[[Any], Any]]]


def insert(connection: sa.Connection, table: sa.Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Insert `rows` (tuples in `columns` order), in their order."""
    if not rows:
        return
    if connection.dialect.name == "postgresql":
        if len(rows) >= pg_bulk.MIN_ROWS:
            pg_bulk.insert(connection, table, columns, rows)
        else:
            connection.execute(_insert(table), [dict(zip(columns, row)) for row in rows])
        return
    execute_many(connection, insert_sql(table, tuple(columns), connection.dialect),
                 converted(rows, converters(table, tuple(columns), connection.dialect)))


def insert_returning_ids(connection: sa.Connection, table: sa.Table, columns: Sequence[str],
                         rows: Sequence[Sequence[Any]]) -> list[int]:
    """Insert `rows` (tuples in `columns` order) and return their new ids, in the rows' order.

    SQLite's RETURNING with the parameters' order kept inserts one row a statement, so there the
    rows go in by executemany and their ids are read back: the caller's transaction holds the
    write lock (a SQLite writer's transaction does), so the rows above the largest id before it
    are its own, in the order inserted."""
    if not rows:
        return []
    if connection.dialect.name == "postgresql":
        if len(rows) >= pg_bulk.MIN_ROWS:
            return pg_bulk.insert_returning_ids(connection, table, columns, rows)
        return list(connection.execute(_insert_returning(table), [dict(zip(columns, row)) for row in rows]).scalars())
    (key,) = table.primary_key.columns
    before = connection.execute(sa.select(sa.func.coalesce(sa.func.max(key), 0))).scalar_one()
    insert(connection, table, columns, rows)
    ids = list(connection.execute(sa.select(key).where(key > before).order_by(key)).scalars())
    assert len(ids) == len(rows), "rows of another transaction among this one's"
    return ids


def update_by_id(connection: sa.Connection, table: sa.Table, columns: Sequence[str],
                 rows: Sequence[Sequence[Any]]) -> None:
    """Set `columns[1:]` of the row whose `columns[0]` (a unique key) is each row's first value."""
    if not rows:
        return
    columns = tuple(columns)
    if connection.dialect.name == "postgresql":
        if len(rows) >= pg_bulk.MIN_ROWS:
            pg_bulk.update_by_id(connection, table, columns, rows)
        else:
            names = _names(columns)
            connection.execute(_update(table, columns), [dict(zip(names, row)) for row in rows])
        return
    key_last = (*columns[1:], columns[0])  # the order of the statement's parameters
    execute_many(connection, update_sql(table, columns, connection.dialect),
                 converted([(*row[1:], row[0]) for row in rows], converters(table, key_last, connection.dialect)))


def by_key(connection: sa.Connection, table: sa.Table, key: str, columns: Sequence[sa.Column[Any]],
           keys: Collection[str]) -> Sequence[sa.Row[Any]]:
    """`columns` of the rows of `table` whose unique `key` is among `keys`: an index look-up a key,
    the keys bound as one JSON parameter under a statement text fixed by the table and the columns
    (an IN list of the keys is compiled afresh for every number of keys)."""
    if not keys:
        return []
    if connection.dialect.name == "postgresql":
        statement = pg_bulk.by_key(table, key, columns)
    else:
        statement = _sqlite_by_key(table, key, tuple(columns))
    return connection.execute(statement, {"keys": pg_bulk.keys(list(keys))}).all()


def execute_many(connection: sa.Connection, sql: str, rows: list[tuple[Any, ...]]) -> None:
    """executemany of `sql` over `rows` already converted for the driver (see `converters`)."""
    if rows:
        connection.exec_driver_sql(sql, rows)


def converted(rows: Sequence[Sequence[Any]], steps: Converters) -> list[tuple[Any, ...]]:
    """`rows` as tuples with the values that need it converted (None stays None). A value that is
    the very object of the row before in its column (the `now` of every row) is converted once."""
    if not steps:
        return [tuple(row) for row in rows]
    last: list[Any] = [None] * len(steps)
    done: list[Any] = [None] * len(steps)
    out = []
    for row in rows:
        values = list(row)
        for n, (i, convert) in enumerate(steps):
            value = values[i]
            if value is None:
                continue
            if value is not last[n]:
                last[n], done[n] = value, convert(value)
            values[i] = done[n]
        out.append(tuple(values))
    return out


@lru_cache(maxsize=128)
def converters(table: sa.Table, columns: tuple[str, ...], dialect: sa.Dialect) -> Converters:
    """(index in `columns`, the column type's bind processor) for the columns whose values this
    dialect's driver needs converted."""
    return [(i, process) for i, name in enumerate(columns)
            if (process := table.c[name].type.dialect_impl(dialect).bind_processor(dialect)) is not None]


@lru_cache(maxsize=128)
def insert_sql(table: sa.Table, columns: tuple[str, ...], dialect: sa.Dialect) -> str:
    """`INSERT INTO table (columns) VALUES (?, ...)` in the driver's parameter style."""
    return (f"INSERT INTO {table.name} ({', '.join(columns)}) "
            f"VALUES ({', '.join([_marker(dialect)] * len(columns))})")


@lru_cache(maxsize=128)
def update_sql(table: sa.Table, columns: tuple[str, ...], dialect: sa.Dialect) -> str:
    """`UPDATE table SET columns[1:] = ? WHERE columns[0] = ?`: its parameters are a row's values
    from the second on, then the first."""
    marker = _marker(dialect)
    key, rest = columns[0], columns[1:]
    return (f"UPDATE {table.name} SET {', '.join(f'{name} = {marker}' for name in rest)} "
            f"WHERE {key} = {marker}")


@lru_cache(maxsize=32)
def _sqlite_by_key(table: sa.Table, key: str, columns: tuple[sa.Column[Any], ...]) -> sa.TextualSelect:
    names = ", ".join(column.name for column in columns)
    return sa.text(f"SELECT {names} FROM {table.name} WHERE {key} IN (SELECT value FROM json_each(:keys))"
                   ).columns(*columns)


def _marker(dialect: sa.Dialect) -> str:
    return "?" if dialect.paramstyle == "qmark" else "%s"


@lru_cache(maxsize=32)
def _insert(table: sa.Table) -> Any:
    return table.insert()


@lru_cache(maxsize=32)
def _insert_returning(table: sa.Table) -> Any:
    (key,) = table.primary_key.columns
    return table.insert().returning(key, sort_by_parameter_order=True)


@lru_cache(maxsize=32)
def _update(table: sa.Table, columns: tuple[str, ...]) -> Any:
    (key, *rest), (key_param, *params) = columns, _names(columns)
    return table.update().where(table.c[key] == sa.bindparam(key_param, type_=table.c[key].type)).values(
        {name: sa.bindparam(param, type_=table.c[name].type) for name, param in zip(rest, params)})


def _names(columns: Sequence[str]) -> tuple[str, ...]:
    """The bound parameters' names (a column's own name is SQLAlchemy's, in SET)."""
    return tuple(f"b_{name}" for name in columns)

"""Dialect-specific statements: "insert unless present" and "insert or update".

Every backend kpiwatch supports spells these differently; the repository only
calls the helpers here. Statements are built once per (backend, table) and
executed with parameters: building them per call cost more than the database
work at 10,000 KPIs a cycle.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.sql.dml import Insert

from kpiwatch.errors import StoreError
from kpiwatch.store.types import UtcDateTime

Row = Mapping[str, Any]

_MYSQL = ("mysql", "mariadb")


def _insert(dialect: str, table: sa.Table) -> Insert:
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    if dialect in _MYSQL:
        return mysql.insert(table)
    raise StoreError(
        f"the state store runs on SQLite, PostgreSQL or MariaDB/MySQL, not {dialect!r}"
    )


@cache
def _insert_ignore(dialect: str, table: sa.Table) -> sa.Executable:
    """INSERT that skips rows clashing on the primary key."""
    stmt = _insert(dialect, table)
    if dialect in _MYSQL:
        return stmt.prefix_with("IGNORE")  # the caller reads rowcount
    key = [c.name for c in table.primary_key.columns]
    if isinstance(stmt, postgresql.Insert | sqlite.Insert):
        stmt = stmt.on_conflict_do_nothing(index_elements=key)
    return stmt


@cache
def _insert_ignore_unique(dialect: str, table: sa.Table, unique: str) -> sa.Executable:
    """INSERT ... RETURNING id that skips a row clashing on the ``unique`` column."""
    stmt = _insert(dialect, table)
    if dialect in _MYSQL:
        return stmt.prefix_with("IGNORE")
    if isinstance(stmt, postgresql.Insert | sqlite.Insert):
        stmt = stmt.on_conflict_do_nothing(index_elements=[unique])
    return stmt.returning(table.c.id)


@cache
def _upsert(dialect: str, table: sa.Table) -> sa.Executable:
    key = {c.name for c in table.primary_key.columns}
    others = [c.name for c in table.columns if c.name not in key]
    stmt = _insert(dialect, table)
    if isinstance(stmt, mysql.Insert):
        return stmt.on_duplicate_key_update({name: stmt.inserted[name] for name in others})
    assert isinstance(stmt, postgresql.Insert | sqlite.Insert)  # _insert knows no others
    updates = {name: stmt.excluded[name] for name in others}
    return stmt.on_conflict_do_update(index_elements=sorted(key), set_=updates)


@cache
def _upsert_unique(
    dialect: str, table: sa.Table, unique: tuple[str, ...], updated: tuple[str, ...]
) -> sa.Executable:
    """INSERT, or on a clash of the ``unique`` columns UPDATE only the ``updated`` ones."""
    stmt = _insert(dialect, table)
    if isinstance(stmt, mysql.Insert):
        # MySQL has no conflict target: any unique key clash triggers the update
        return stmt.on_duplicate_key_update({name: stmt.inserted[name] for name in updated})
    assert isinstance(stmt, postgresql.Insert | sqlite.Insert)
    updates = {name: stmt.excluded[name] for name in updated}
    return stmt.on_conflict_do_update(index_elements=list(unique), set_=updates)


def insert_ignore_many(connection: Connection, table: sa.Table, rows: Sequence[Row]) -> int:
    """Insert ``rows`` (one executemany), skipping those whose primary key exists.

    Returns how many rows were new.
    """
    if not rows:
        return 0
    dialect = connection.dialect.name
    if dialect == "postgresql":
        # One statement over the rows as one JSON text, counting the RETURNING rows. An
        # executemany with RETURNING is sent as long multi-row INSERTs, whose text psycopg
        # converts in Python every time (too long for its cache): 1.4 s of a first cycle
        # of 10,000 KPIs, for their first states (issue 15).
        first_key = table.primary_key.columns[0].name
        written = _insert_from_json(connection, table, rows, update=False, returning=(first_key,))
        return len(written.all())
    return connection.execute(_insert_ignore(dialect, table), list(rows)).rowcount


def one_of(
    column: sa.ColumnElement[str], dialect: str, values: Sequence[str]
) -> sa.ColumnElement[bool]:
    """``column IN values``; on PostgreSQL ``column = ANY(:array)``, one parameter:
    the same short statement for any number of values, compiled and parsed once."""
    if dialect == "postgresql":
        array = sa.bindparam(None, list(values), type_=postgresql.ARRAY(column.type))
        return column == sa.any_(array)
    return column.in_(list(values))


def insert_ignore_returning_id(
    connection: Connection, table: sa.Table, row: Row, unique: str
) -> int | None:
    """Insert one row unless ``unique`` clashes; the new row's id, or None if it existed."""
    dialect = connection.dialect.name
    result = connection.execute(_insert_ignore_unique(dialect, table, unique), dict(row))
    if dialect in _MYSQL:
        if result.rowcount != 1:
            return None
        return int(result.lastrowid)
    new_id = result.scalar_one_or_none()
    return None if new_id is None else int(new_id)


def insert_ignore_returning_ids(
    connection: Connection, table: sa.Table, rows: Sequence[Row], unique: str
) -> dict[Any, int]:
    """:func:`insert_ignore_returning_id` for many rows: the new rows' ids by their
    ``unique`` value (a row whose value is stored, or comes earlier in ``rows``, is not
    written). On PostgreSQL one statement over the rows as one JSON text: a round trip
    a row cost ~0.5 ms, 0.5 s for a first cycle's 1,000 notices (issue 15)."""
    if not rows:
        return {}
    if connection.dialect.name == "postgresql":
        written = _insert_from_json(connection, table, rows, update=False,
                                    returning=(unique, "id"), unique=unique)  # fmt: skip
        return {row[unique]: int(row["id"]) for row in written.mappings()}
    found: dict[Any, int] = {}
    for row in rows:
        new_id = insert_ignore_returning_id(connection, table, row, unique)
        if new_id is not None:
            found[row[unique]] = new_id
    return found


def upsert(connection: Connection, table: sa.Table, row: Row) -> None:
    """Insert ``row`` or, when its primary key exists, overwrite the other columns.

    ``row`` must name every column of ``table``.
    """
    connection.execute(_upsert(connection.dialect.name, table), dict(row))


def upsert_many(connection: Connection, table: sa.Table, rows: Sequence[Row]) -> None:
    """:func:`upsert` for many rows: on PostgreSQL one statement over the rows as one
    JSON text; elsewhere one executemany (a multi-row statement with PyMySQL)."""
    if not rows:
        return
    if connection.dialect.name == "postgresql":
        _insert_from_json(connection, table, rows, update=True)
    else:
        connection.execute(_upsert(connection.dialect.name, table), [dict(row) for row in rows])


def insert_rows(connection: Connection, table: sa.Table, rows: Sequence[Row]) -> None:
    """Insert ``rows`` (a table with a serial id: no clash): on PostgreSQL one statement
    over the rows as one JSON text, elsewhere one executemany. A first cycle's 10,000
    status changes as an executemany were ~17 % of its interpreter time (issue 15)."""
    if not rows:
        return
    if connection.dialect.name == "postgresql":
        _insert_from_json(connection, table, rows, update=False, conflict=False)
    else:
        connection.execute(sa.insert(table), list(rows))


def insert_ignore_rows(connection: Connection, table: sa.Table, rows: Sequence[Row]) -> None:
    """:func:`insert_ignore_many` without counting: on PostgreSQL one statement over
    the rows as one JSON text, elsewhere one executemany."""
    if not rows:
        return
    if connection.dialect.name == "postgresql":
        _insert_from_json(connection, table, rows, update=False)
    else:
        connection.execute(_insert_ignore(connection.dialect.name, table), list(rows))


# PostgreSQL types, in a json_to_recordset() row definition, for the store's column types
_PG_TYPES = (
    (UtcDateTime, "timestamptz"),
    (sa.JSON, "json"),
    (sa.Float, "float8"),
    (sa.Integer, "bigint"),
    (sa.Boolean, "boolean"),
    (sa.String, "text"),
)
_UTC = UtcDateTime()


def _pg_type(column: sa.Column[Any]) -> str:
    for kind, name in _PG_TYPES:
        if isinstance(column.type, kind):
            return name
    raise StoreError(f"no PostgreSQL type for {column.table.name}.{column.name}")


@cache
def _from_json_statement(
    table: sa.Table,
    update: bool,
    quote: Callable[[str], str],
    returning: tuple[str, ...] = (),
    unique: str | None = None,
    conflict: bool = True,
) -> sa.TextClause:
    """INSERT INTO t (...) SELECT ... FROM json_to_recordset(:rows) ... ON CONFLICT ...:
    the same short statement for any number of rows, all of them in one JSON text
    (built by the C json encoder; psycopg's array dumping costs far more in Python).
    The conflict is on the primary key, or on ``unique`` (none without ``conflict``); the
    rows written return the ``returning`` columns. A serial id is left to the database."""
    columns = [c for c in table.columns if c is not table.autoincrement_column]
    names = ", ".join(quote(c.name) for c in columns)
    record = ", ".join(f"{quote(c.name)} {_pg_type(c)}" for c in columns)
    key = quote(unique) if unique else ", ".join(quote(c.name) for c in table.primary_key)
    clash = f" ON CONFLICT ({key}) DO NOTHING" if conflict else ""
    if update:
        updates = ", ".join(
            f"{quote(c.name)} = EXCLUDED.{quote(c.name)}" for c in columns if not c.primary_key
        )
        clash = f" ON CONFLICT ({key}) DO UPDATE SET {updates}"
    written = f" RETURNING {', '.join(map(quote, returning))}" if returning else ""
    return sa.text(
        f"INSERT INTO {quote(table.name)} ({names}) SELECT {names}"
        f" FROM json_to_recordset(CAST(:rows AS json)) AS u({record}){clash}{written}"
    )


def _insert_from_json(
    connection: Connection,
    table: sa.Table,
    rows: Sequence[Row],
    *,
    update: bool,
    returning: tuple[str, ...] = (),
    unique: str | None = None,
    conflict: bool = True,
) -> sa.CursorResult[Any]:
    dialect = connection.dialect
    times = [c.name for c in table.columns if isinstance(c.type, UtcDateTime)]
    records = []
    for row in rows:
        record = dict(row)
        for name in times:  # aware UTC, naive refused: as for one row
            try:
                value = _UTC.process_bind_param(record[name], dialect)
            except ValueError as exc:
                raise StoreError(str(exc)) from exc
            record[name] = None if value is None else value.isoformat()
        records.append(record)
    quote = dialect.identifier_preparer.quote
    statement = _from_json_statement(table, update, quote, returning, unique, conflict)
    # allow_nan=False: NaN is no JSON; the store never holds one (sources reject them)
    return connection.execute(statement, {"rows": json.dumps(records, allow_nan=False)})


def upsert_unique(
    connection: Connection, table: sa.Table, row: Row, unique: Sequence[str]
) -> None:
    """Insert ``row`` or, when the ``unique`` columns clash, overwrite its other columns.

    For tables with a surrogate id and a natural key: the id of an existing row stays.
    """
    updated = tuple(name for name in row if name not in unique)
    stmt = _upsert_unique(connection.dialect.name, table, tuple(unique), updated)
    connection.execute(stmt, dict(row))

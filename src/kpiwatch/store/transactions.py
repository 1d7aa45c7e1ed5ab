"""Transactions whose SQLAlchemy errors become :class:`StoreError`, with a clean message."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from kpiwatch.errors import StoreError, redact


@contextmanager
def writing(engine: Engine, action: str) -> Iterator[Connection]:
    """One transaction, committed on success; on an error rolled back and re-raised
    as ``StoreError("<action>: <first line>")``."""
    try:
        with engine.begin() as connection:
            yield connection
    except sa.exc.SQLAlchemyError as exc:
        raise StoreError(f"{action}: {first_line(exc)}") from exc


@contextmanager
def reading(engine: Engine, action: str) -> Iterator[Connection]:
    """A connection for reads; errors as in :func:`writing`."""
    try:
        with engine.connect() as connection:
            yield connection
    except sa.exc.SQLAlchemyError as exc:
        raise StoreError(f"{action}: {first_line(exc)}") from exc


# a transaction the database rolled back to break a deadlock or a serialization
# conflict: doing it again is expected to work (MySQL/MariaDB error numbers,
# PostgreSQL SQLSTATEs)
_DEADLOCK_ERRNOS = frozenset({1205, 1213})  # lock wait timeout, deadlock found
_DEADLOCK_SQLSTATES = frozenset({"40P01", "40001"})  # deadlock detected, serialization


def transient(exc: BaseException) -> bool:
    """Whether ``exc`` (a StoreError or what caused it) is a transaction the database
    rolled back for a deadlock or a serialization conflict, worth doing again."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, sa.exc.DBAPIError):
        cause = cause.__cause__
    if cause is None:
        return False
    original = cause.orig
    if getattr(original, "sqlstate", None) in _DEADLOCK_SQLSTATES:  # psycopg
        return True
    args: tuple[object, ...] = getattr(original, "args", ())
    return bool(args) and args[0] in _DEADLOCK_ERRNOS


def first_line(exc: BaseException) -> str:
    """The error's first line, redacted. SQLAlchemy appends the SQL and its
    parameters; the exception's cause keeps them for debugging."""
    text = str(exc).strip().splitlines()
    return redact(text[0] if text else type(exc).__name__)

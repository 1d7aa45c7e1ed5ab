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


def first_line(exc: BaseException) -> str:
    """The error's first line, redacted. SQLAlchemy appends the SQL and its
    parameters; the exception's cause keeps them for debugging."""
    text = str(exc).strip().splitlines()
    return redact(text[0] if text else type(exc).__name__)

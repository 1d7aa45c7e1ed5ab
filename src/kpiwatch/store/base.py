"""What every part of the state store shares: the engine and error-wrapped transactions."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from kpiwatch.store.transactions import reading, writing

# KPI ids per IN (...) list: far below every backend's limit on bound parameters
IN_CHUNK = 500


def chunks(items: Collection[str], size: int = IN_CHUNK) -> Iterator[list[str]]:
    """``items`` in lists of at most ``size``."""
    listed = list(items)
    for start in range(0, len(listed), size):
        yield listed[start : start + size]


class StoreBase:
    """The engine, and transactions whose SQLAlchemy errors become StoreError."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @property
    def engine(self) -> Engine:
        return self._engine

    def _write(self, action: str) -> AbstractContextManager[Connection]:
        """One transaction; SQLAlchemy errors become StoreError after the rollback."""
        return writing(self._engine, action)

    def _read(self, action: str) -> AbstractContextManager[Connection]:
        return reading(self._engine, action)

    def _read_last(
        self,
        query: sa.Select[Any],
        order: Sequence[sa.ColumnElement[Any]],
        limit: int | None,
        action: str,
    ) -> list[sa.RowMapping]:
        # "the last N, ascending": fetch newest-first with LIMIT, then reverse
        if limit is None:
            query = query.order_by(*order)
        else:
            query = query.order_by(*(column.desc() for column in order)).limit(limit)
        with self._read(action) as connection:
            found = list(connection.execute(query).mappings())
        return found if limit is None else found[::-1]

"""A lean bulk read of what ``/metrics`` and the board's order show of every KPI's state.

``Store.states()`` builds a whole ``KpiState`` per row (sixteen columns, JSON
reasons, five datetimes parsed): about 25 µs a row, 250 ms at 10,000 KPIs. A
scrape needs seven columns (of the JSON ``data_problem`` only whether there is
one), the status board's order and summary one more (``next_review``: is a
review overdue), and for most rows only to know that they did not change since
the previous read. :class:`StateSnapshots` reads those seven columns in one query
as the driver returns them and converts only the rows that differ from its
previous read; an unchanged row comes back as the very same
:class:`ShownState` object, so a caller can keep what it derived from it, keyed
by identity.

Every read still reads every row: a state written by another replica (whatever
its clock), or deleted, shows at the next read. Only the conversion is cached.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from itertools import compress
from operator import itemgetter, ne
from typing import Any, NamedTuple

import sqlalchemy as sa

from kpiwatch.errors import StoreError, redact
from kpiwatch.model import ReviewCadence, Status
from kpiwatch.store.repository import Store
from kpiwatch.store.schema import kpi_state as state_t

# (kpi_id, status, value, review, escalated_since, last_evaluated, has a data problem, plan,
# next_review) as the driver returns them
_Row = tuple[Any, ...]


class ShownState(NamedTuple):
    """What the exporter shows of a KPI's stored state (and the status board's order)."""

    status: Status
    value: float | None
    review: ReviewCadence  # the cadence in force (escalated or not)
    escalated: bool
    last_evaluated: datetime | None
    blind: bool  # unknown for want of data (KpiState.blind): its value is the last one kept
    plan: float | None = None  # the judged period's plan (KpiState.plan)
    next_review: datetime | None = None  # when the review is due (KpiState.next_review)


class StateSnapshots:
    """Reads every KPI's :class:`ShownState` in one query (see the module docstring).

    Safe to share between threads: a read builds its own result and replaces the
    memo of the previous one in one assignment.
    """

    def __init__(self, store: Store) -> None:
        self._engine = store.engine
        dialect = self._engine.dialect
        self._errors = (sa.exc.SQLAlchemyError, dialect.loaded_dbapi.Error)
        query = sa.select(
            state_t.c.kpi_id,
            state_t.c.status,
            state_t.c.value,
            state_t.c.review,
            state_t.c.escalated_since,
            state_t.c.last_evaluated,
            # a flag, not the JSON: 0/1 or false/true as the driver returns it, compared in C
            state_t.c.data_problem.is_not(None).label("has_data_problem"),
            state_t.c.plan,
            state_t.c.next_review,
        )
        self._sql = str(query.compile(dialect=dialect))
        # the conversion a typed SELECT would apply (parsing on SQLite, UTC everywhere)
        column_type = state_t.c.last_evaluated.type.dialect_impl(dialect)
        processor = column_type.result_processor(dialect, None)
        self._datetime: Callable[[Any], datetime | None] = processor or (lambda raw: raw)
        # the previous read: its rows by KPI id, as fetched, and what they showed
        self._previous: tuple[dict[str, _Row], dict[str, ShownState]] = ({}, {})

    def read(self) -> dict[str, ShownState]:
        """kpi id -> what to show, for every stored state; StoreError when unreadable."""
        fetched = self._fetch()
        before, shown = self._previous
        ids = list(map(itemgetter(0), fetched))
        rows = dict(zip(ids, fetched, strict=True))
        # in C, so that only the changed rows cost Python time: the plain tuples compare
        # their values, and a row the previous read did not have compares unequal to None
        changed = list(compress(fetched, map(ne, fetched, map(before.get, ids))))
        gone = before.keys() - rows.keys()
        if changed or gone:
            shown = dict(shown)
            for kpi_id in gone:
                del shown[kpi_id]
            for row in changed:
                shown[row[0]] = self._convert(row)
        self._previous = (rows, shown)
        return dict(shown)  # the caller's own: the memo must not change

    def _fetch(self) -> list[_Row]:
        try:
            with self._engine.connect() as connection:
                # The DB-API cursor's plain tuples compare in C; SQLAlchemy's
                # Row objects compare in Python, ~2 µs a row.
                cursor = connection.connection.cursor()
                try:
                    cursor.execute(self._sql)
                    return list(cursor.fetchall())
                finally:
                    cursor.close()
        except self._errors as exc:
            text = str(exc).strip().splitlines()  # the first line: no SQL, no parameters
            raise StoreError(f"read states: {redact(text[0] if text else repr(exc))}") from exc

    def _convert(self, row: _Row) -> ShownState:
        _, status, value, review, escalated_since, last_evaluated, has_problem, plan, due = row
        shown = Status(status)
        return ShownState(
            status=shown,
            value=None if value is None else float(value),
            review=ReviewCadence(review),
            escalated=escalated_since is not None,
            last_evaluated=self._datetime(last_evaluated),
            blind=shown is Status.UNKNOWN and bool(has_problem),
            plan=None if plan is None else float(plan),
            next_review=self._datetime(due),
        )

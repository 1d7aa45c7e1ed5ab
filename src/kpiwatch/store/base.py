"""What every part of the state store shares: the engine, error-wrapped transactions,
and recording events with their outbox rows."""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Engine

from kpiwatch.model import Delivery, DeliveryState, Event
from kpiwatch.store import rows, sql
from kpiwatch.store.schema import events as events_t
from kpiwatch.store.schema import observations as observations_t
from kpiwatch.store.schema import outbox as outbox_t
from kpiwatch.store.transactions import reading, writing

# KPI ids per IN (...) list: far below every backend's limit on bound parameters
IN_CHUNK = 500
# KPIs per UNION of "newest N points" queries (newest_observations) when evaluating.
# Each padded length is compiled once and kept, by SQLAlchemy and by every pooled SQLite
# connection: a union of 128 held 2.8 MiB of Python objects plus ~2.5 MiB in each
# connection (~15 MiB at 5 connections), one of 32 a quarter of that; a cycle's few more,
# shorter queries cost little (issue 15). The notices and the board read up to 200 KPIs
# a UNION (NOTICE_CHUNK): a page of the board in a few queries, whatever its size.
UNION_CHUNK = 32
NOTICE_CHUNK = 200


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

    def _insert_events(
        self,
        connection: Connection,
        events: Iterable[Event],
        deliveries: Mapping[str, Sequence[Delivery]],
    ) -> None:
        """Record events (a known key: once) and, for each new one, its outbox rows: in
        the caller's transaction, with the change that caused them."""
        events = list(events)
        new_ids = sql.insert_ignore_returning_ids(
            connection, events_t, [rows.event_row(event) for event in events], unique="key"
        )
        outbox_rows: list[dict[str, Any]] = []
        for event in events:
            # None: already recorded, and so were its deliveries (pop: a key twice in
            # ``events`` is recorded once, and so are its deliveries)
            event_id = new_ids.pop(event.key, None)
            if event_id is None:
                continue
            # dict.fromkeys: keep order, drop a delivery listed twice
            for delivery in dict.fromkeys(deliveries.get(event.key, ())):
                outbox_rows.append(
                    {
                        "event_id": event_id,
                        "channel": delivery.channel,
                        "target": delivery.target,
                        "state": DeliveryState.PENDING.value,
                        "attempts": 0,
                        "next_attempt_at": event.at,
                        "created_at": event.at,  # the store has no clock; the event's time is close
                    }
                )
        self._insert_outbox(connection, outbox_rows)

    @staticmethod
    def _insert_outbox(connection: Connection, outbox_rows: Sequence[Mapping[str, Any]]) -> None:
        if outbox_rows:
            connection.execute(sa.insert(outbox_t), list(outbox_rows))


def newest_observations(
    kpi_ids: Sequence[str],
    points: int,
    *,
    chunk: int,
    since: datetime | None = None,
    dialect: str = "",
) -> tuple[sa.Select[Any] | sa.CompoundSelect[Any], dict[str, Any]]:
    """The newest ``points`` observations of each of ``kpi_ids`` (at most ``chunk``
    but on PostgreSQL; at or after ``since`` when given), in no set order: one index
    range per KPI, not a window over their whole history. Returns the statement and
    its parameters.

    On PostgreSQL one short statement takes any number of KPIs: a ``LATERAL`` join
    over the ids as one array. Elsewhere (no ``LATERAL`` in SQLite or MariaDB) a
    ``UNION ALL`` of one select per KPI; the list is padded with "" (no KPI has that
    id) to a power of two, at most ``chunk``: each length is a statement of its own in
    SQLAlchemy's compiled cache (and in each SQLite connection's statement cache), so
    there are a few of them (six for 32), not one per length. The ids, ``points`` and
    ``since`` are bound parameters of a statement built once per length: building a
    union of 32 selects took ~90 ms per 1,000 KPIs, more than running it (issue 15).
    On PostgreSQL the union's long text was also parsed again by psycopg at every run
    (too long for its cache): ~10 % of a 10,000-KPI cycle's reads.
    """
    bound: dict[str, Any] = {"points": points} | ({} if since is None else {"since": since})
    if dialect == "postgresql":
        return _newest_lateral(since is not None), bound | {"kpi_ids": list(kpi_ids)}
    size = 1
    while size < len(kpi_ids):
        size *= 2
    size = min(size, max(chunk, len(kpi_ids)))
    params: dict[str, Any] = {f"kpi_{i}": kpi for i, kpi in enumerate(kpi_ids)}
    params |= {f"kpi_{i}": "" for i in range(len(kpi_ids), size)}
    return _newest_shape(size, since is not None), params | bound


def newest_chunk(dialect: str, union: int) -> int:
    """How many KPIs one :func:`newest_observations` read should take: ``union`` for a
    UNION, a whole IN list's worth on PostgreSQL."""
    return IN_CHUNK if dialect == "postgresql" else union


def _newest_query(kpi_id: sa.ColumnElement[Any], with_since: bool) -> sa.Select[Any]:
    """The newest points of the KPI ``kpi_id`` names: one index range, newest first."""
    c = observations_t.c
    query = sa.select(observations_t).where(c.kpi_id == kpi_id)
    if with_since:
        query = query.where(c.observed_at >= sa.bindparam("since"))
    return query.order_by(c.observed_at.desc()).limit(sa.bindparam("points"))


@functools.lru_cache(maxsize=2)
def _newest_lateral(with_since: bool) -> sa.Select[Any]:
    kind = postgresql.ARRAY(observations_t.c.kpi_id.type)
    ids = sa.func.unnest(sa.bindparam("kpi_ids", type_=kind)).table_valued("kpi_id")
    ids = ids.render_derived(name="ids")
    newest = _newest_query(ids.c.kpi_id, with_since).lateral("newest")
    return sa.select(newest).select_from(ids.join(newest, sa.true()))


@functools.lru_cache(maxsize=64)
def _newest_shape(size: int, with_since: bool) -> sa.CompoundSelect[Any]:
    parts = [
        _newest_query(sa.bindparam(f"kpi_{i}"), with_since).subquery().select()
        for i in range(size)
    ]
    return sa.union_all(*parts)


def new_id(result: sa.CursorResult[Any]) -> int:
    """The id a single-row INSERT gave its row."""
    key = result.inserted_primary_key
    assert key is not None  # a single-row INSERT always has one
    return int(key[0])

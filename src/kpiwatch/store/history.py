"""A lean, streamed read of many KPIs' observations (backtests replay whole years).

``Store.evaluation_inputs`` reads states and history as mappings for one cycle's
batch. A replay of 10,000 KPIs over a year reads millions of rows: this reads three
columns as plain rows, a chunk of KPIs per query, and hands each KPI's series
over before the next chunk is read, so memory holds one chunk, not the year.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime

import sqlalchemy as sa

from kpiwatch.model import Observation
from kpiwatch.store import sql
from kpiwatch.store.base import chunks
from kpiwatch.store.repository import Store
from kpiwatch.store.schema import observations as observations_t
from kpiwatch.store.transactions import reading
from kpiwatch.store.types import stored_utc

KPIS_PER_READ = 200  # a year of daily points each: ~73,000 rows a query


def earliest(store: Store, kpi_ids: Sequence[str], *, until: datetime) -> datetime | None:
    """The time of the oldest observation of any of ``kpi_ids`` at or before ``until``."""
    c = observations_t.c
    found: list[datetime] = []
    with reading(store.engine, "read history") as connection:
        dialect = connection.dialect.name
        for chunk in chunks(kpi_ids):
            query = sa.select(sa.func.min(c.observed_at)).where(
                sql.one_of(c.kpi_id, dialect, chunk), c.observed_at <= until
            )
            oldest = connection.execute(query).scalar()
            if oldest is not None:
                found.append(stored_utc(oldest))
    return min(found, default=None)


def histories(
    store: Store, kpi_ids: Sequence[str], *, since: datetime | None, until: datetime
) -> Iterator[tuple[str, list[Observation]]]:
    """Each of ``kpi_ids`` with its observations in ``[since, until]``, oldest first, in
    the order given (an empty list for a KPI with none); StoreError when unreadable."""
    c = observations_t.c
    for chunk in chunks(kpi_ids, KPIS_PER_READ):
        found: dict[str, list[Observation]] = {kpi_id: [] for kpi_id in chunk}
        with reading(store.engine, "read history") as connection:
            dialect = connection.dialect.name
            # the times as the driver returns them, converted below without a typed
            # column's per-row processing (about a sixth of the read)
            raw_time = sa.type_coerce(c.observed_at, sa.types.NullType())
            query = (
                sa.select(c.kpi_id, raw_time, c.value)
                .where(sql.one_of(c.kpi_id, dialect, chunk), c.observed_at <= until)
                .order_by(c.kpi_id, c.observed_at)
            )
            if since is not None:
                query = query.where(c.observed_at >= since)
            for kpi_id, observed_at, value in connection.execute(query):
                found[kpi_id].append(Observation(kpi_id, stored_utc(observed_at), value))
        yield from found.items()

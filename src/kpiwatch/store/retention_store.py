"""The retention's deletes (``KPIWATCH_RETENTION``): what each KPI's observations keep is
decided by :mod:`kpiwatch.evaluation.retention` (:class:`~kpiwatch.model.Kept`), the
records (notifications, events, status changes) go by age once they are done with.
:func:`kpiwatch.runtime.pruning.prune_history` runs both."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from kpiwatch.model import DeliveryState, Kept
from kpiwatch.store.base import (
    UNION_CHUNK,
    StoreBase,
    chunks,
    newest_chunk,
    newest_observations,
)
from kpiwatch.store.schema import events as events_t
from kpiwatch.store.schema import observations as observations_t
from kpiwatch.store.schema import outbox as outbox_t
from kpiwatch.store.schema import status_changes as changes_t

PRUNE_CHUNK = 500  # KPIs a transaction of prune_observations
PRUNED_TABLES = ("observations", "status_changes", "events", "outbox")  # what a prune counts


# each KPI id in the observations, by one index seek per id (a loose index scan), not a
# scan of every row as SELECT DISTINCT makes on PostgreSQL. MariaDB does that scan for
# DISTINCT itself, and ran this one as a scan per step (4.3 s for 2,000 KPIs)
_DISTINCT = sa.select(observations_t.c.kpi_id).distinct()
_OBSERVED = sa.text("""
WITH RECURSIVE ids (k) AS (
    SELECT min(kpi_id) FROM observations
    UNION ALL
    SELECT (SELECT min(o.kpi_id) FROM observations o WHERE o.kpi_id > ids.k)
    FROM ids WHERE ids.k IS NOT NULL
)
SELECT k FROM ids WHERE k IS NOT NULL
""")


RECORDS_CHUNK = 5_000  # notifications, events or status changes deleted a transaction
_OLDER = sa.and_(
    observations_t.c.kpi_id == sa.bindparam("kpi"),
    observations_t.c.observed_at < sa.bindparam("before"),
)  # a KPI's points before a time: one index range


def _cutoffs(connection: Connection, kept: Mapping[str, Kept]) -> dict[str, datetime]:
    """For each KPI, the time its points before which the retention drops: its
    ``since``, or its ``newest``-th newest point when that is older. A KPI with fewer
    points than it keeps has none to drop (left out)."""
    below: dict[str, datetime] = {}
    by_newest: dict[int, list[str]] = {}
    for kpi_id, (since, newest) in kept.items():
        if newest <= 0:
            below[kpi_id] = since
        else:
            by_newest.setdefault(newest, []).append(kpi_id)
    dialect = connection.dialect.name
    size = newest_chunk(dialect, UNION_CHUNK)
    for newest, kpi_ids in by_newest.items():
        points: dict[str, list[datetime]] = {kpi_id: [] for kpi_id in kpi_ids}
        for chunk in chunks(kpi_ids, size):
            query, params = newest_observations(chunk, newest, chunk=size, dialect=dialect)
            for row in connection.execute(query, params).mappings():
                points[row["kpi_id"]].append(row["observed_at"])
        for kpi_id, found in points.items():
            if len(found) >= newest:
                below[kpi_id] = min(kept[kpi_id].since, min(found))
    return below


def _records(
    before: datetime,
) -> dict[str, tuple[sa.Table, sa.ColumnElement[bool], sa.ColumnElement[bool]]]:
    """Per table: what the retention drops from it, and what a delete by id checks again
    (a notification retried meanwhile, an event given one)."""
    o, e, c = outbox_t.c, events_t.c, changes_t.c
    final = [s.value for s in (DeliveryState.SENT, DeliveryState.DEAD,
                               DeliveryState.SUPPRESSED)]  # fmt: skip
    done = sa.and_(o.created_at < before, o.state.in_(final))
    waiting = outbox_t.alias("waiting")
    # an event's notifications: none left that is not both old and done
    alone = ~sa.exists().where(
        waiting.c.event_id == e.id,
        ~sa.and_(waiting.c.created_at < before, waiting.c.state.in_(final)),
    )
    newer = changes_t.alias("newer")
    superseded = sa.exists().where(newer.c.kpi_id == c.kpi_id, newer.c.id > c.id)
    return {
        "outbox": (outbox_t, done, done),
        "events": (events_t, sa.and_(e.at < before, alone), alone),
        # a newer change stays newer: nothing to check again
        "status_changes": (changes_t, sa.and_(c.at < before, superseded), sa.true()),
    }


class RetentionStore(StoreBase):
    """Deleting the history the retention drops."""

    def observed_kpis(self) -> set[str]:
        """The id of every KPI with an observation stored (those removed from the rules
        too)."""
        with self._read("read the observed KPIs") as connection:
            mysql = connection.dialect.name in ("mysql", "mariadb")
            return set(connection.execute(_DISTINCT if mysql else _OBSERVED).scalars())

    def prune_observations(self, kept: Mapping[str, Kept], *, dry_run: bool = False) -> int:
        """Delete what the retention drops: each KPI's points before its ``since`` that
        are not among its ``newest``. Returns how many rows went (with ``dry_run``: would
        go, deleting nothing).

        Each chunk of a few hundred KPIs first reads where each KPI's newest points
        start, then deletes below that in one transaction: a KPI's range is one index
        range of the primary key, below the points it keeps. A delete that looked up
        the newest points itself locked them on MariaDB, and deadlocked with the
        evaluations saving new points (hundreds of deadlocks a minute).
        """
        removed = 0
        for chunk in chunks(sorted(kept), PRUNE_CHUNK):  # one order: no deadlock between replicas
            with self._read("read the newest observations") as connection:
                below = _cutoffs(connection, {kpi_id: kept[kpi_id] for kpi_id in chunk})
            params = [{"kpi": kpi_id, "before": at} for kpi_id, at in below.items()]
            if not params:
                continue
            if dry_run:
                with self._read("count observations to prune") as connection:
                    counted = (connection.execute(sa.select(sa.func.count()).where(_OLDER), p)
                               for p in params)  # fmt: skip
                    removed += sum(result.scalar_one() for result in counted)
                continue
            with self._write("prune observations") as connection:
                gone = connection.execute(sa.delete(observations_t).where(_OLDER), params)
                removed += gone.rowcount
        return removed

    def prune_records(self, before: datetime, *, dry_run: bool = False) -> dict[str, int]:
        """Delete what happened before ``before`` (the retention): notifications sent, dead
        or suppressed; events with no notification left (a waiting one keeps its event);
        status changes but each KPI's newest (the start of its current episode, however
        old). Returns the rows per table that went (with ``dry_run``: would go).

        The ids are read first and deleted by id, up to RECORDS_CHUNK a transaction (a
        delete that searched the tables itself locked what it read on MariaDB); the
        tables grow with transitions, not with every poll."""
        removed: dict[str, int] = {}
        for name, (table, where, again) in _records(before).items():
            if dry_run:
                with self._read("count records to prune") as connection:
                    count = sa.select(sa.func.count()).select_from(table).where(where)
                    removed[name] = connection.execute(count).scalar_one()
                continue
            removed[name] = 0
            after = 0  # the ids go up: a row that changed meanwhile is not read again
            while True:
                with self._read("find records to prune") as connection:
                    found = sa.select(table.c.id).where(where, table.c.id > after)
                    found = found.order_by(table.c.id).limit(RECORDS_CHUNK)
                    ids = list(connection.execute(found).scalars())
                if not ids:
                    break
                with self._write("prune records") as connection:  # what may have changed since
                    gone = sa.delete(table).where(table.c.id.in_(ids), again)
                    removed[name] += connection.execute(gone).rowcount
                if len(ids) < RECORDS_CHUNK:
                    break
                after = ids[-1]
        return removed

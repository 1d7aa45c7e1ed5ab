"""The retention's deletes (``KPIWATCH_RETENTION``): what each KPI's observations keep is
decided by :mod:`kpiwatch.evaluation.retention` (:class:`~kpiwatch.model.Kept`), the
records (notifications, events, status changes) go by age once they are done with.
:func:`kpiwatch.runtime.pruning.prune_history` runs both."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import sqlalchemy as sa

from kpiwatch.model import DeliveryState, Kept
from kpiwatch.store.base import StoreBase, chunks
from kpiwatch.store.schema import events as events_t
from kpiwatch.store.schema import observations as observations_t
from kpiwatch.store.schema import outbox as outbox_t
from kpiwatch.store.schema import status_changes as changes_t

PRUNE_CHUNK = 500  # KPIs a transaction of prune_observations
PRUNED_TABLES = ("observations", "status_changes", "events", "outbox")  # what a prune counts


# each KPI id in the observations, by one index seek per id (a loose index scan), not a
# scan of every row as SELECT DISTINCT would make
_OBSERVED = sa.text("""
WITH RECURSIVE ids (k) AS (
    SELECT min(kpi_id) FROM observations
    UNION ALL
    SELECT (SELECT min(o.kpi_id) FROM observations o WHERE o.kpi_id > ids.k)
    FROM ids WHERE ids.k IS NOT NULL
)
SELECT k FROM ids WHERE k IS NOT NULL
""")


def _dropped(newest: int) -> sa.ColumnElement[bool]:
    """The rows of the KPI bound as ``kpi`` that a :class:`Kept` of (``since`` bound,
    ``newest``) drops: before ``since`` and older than its ``newest``-th newest point."""
    c = observations_t.c
    old = sa.and_(c.kpi_id == sa.bindparam("kpi"), c.observed_at < sa.bindparam("since"))
    if newest <= 0:
        return old
    nth = (
        sa.select(c.observed_at)
        .where(c.kpi_id == sa.bindparam("kpi"))
        .order_by(c.observed_at.desc())
        .offset(newest - 1)
        .limit(1)
        .scalar_subquery()
    )
    return sa.and_(old, c.observed_at < nth)


class RetentionStore(StoreBase):
    """Deleting the history the retention drops."""

    def observed_kpis(self) -> set[str]:
        """The id of every KPI with an observation stored (those removed from the rules
        too)."""
        with self._read("read the observed KPIs") as connection:
            return {row[0] for row in connection.execute(_OBSERVED)}

    def prune_observations(self, kept: Mapping[str, Kept], *, dry_run: bool = False) -> int:
        """Delete what the retention drops: each KPI's points before its ``since`` that
        are not among its ``newest``. Returns how many rows went (with ``dry_run``: would
        go, deleting nothing).

        One transaction per few hundred KPIs, so that the saves of evaluations wait for
        one chunk's delete at most; a KPI's range is one index range of the primary key.
        """
        removed = 0
        for chunk in chunks(sorted(kept), PRUNE_CHUNK):  # one order: no deadlock between replicas
            by_newest: dict[int, list[dict[str, object]]] = {}
            for kpi_id in chunk:
                since, newest = kept[kpi_id]
                by_newest.setdefault(newest, []).append({"kpi": kpi_id, "since": since})
            if dry_run:
                with self._read("count observations to prune") as connection:
                    for newest, params in by_newest.items():
                        count = sa.select(sa.func.count()).where(_dropped(newest))
                        removed += sum(connection.execute(count, p).scalar_one() for p in params)
                continue
            with self._write("prune observations") as connection:
                for newest, params in by_newest.items():
                    removed += connection.execute(
                        sa.delete(observations_t).where(_dropped(newest)), params
                    ).rowcount
        return removed

    def prune_records(self, before: datetime, *, dry_run: bool = False) -> dict[str, int]:
        """Delete what happened before ``before`` (the retention): notifications sent, dead
        or suppressed; events with no notification left (a waiting one keeps its event);
        status changes but each KPI's newest (the start of its current episode, however
        old). Returns the rows per table that went (with ``dry_run``: would go). One
        transaction; the tables grow with transitions, not with every poll."""
        o, e, c = outbox_t.c, events_t.c, changes_t.c
        final = [s.value for s in (DeliveryState.SENT, DeliveryState.DEAD,
                                   DeliveryState.SUPPRESSED)]  # fmt: skip
        waiting = outbox_t.alias("waiting")
        newer = changes_t.alias("newer")
        dropped = {
            "outbox": (outbox_t, sa.and_(o.created_at < before, o.state.in_(final))),
            # what stays of its notifications: not both old and done
            "events": (events_t, sa.and_(e.at < before, ~sa.exists().where(
                waiting.c.event_id == e.id,
                ~sa.and_(waiting.c.created_at < before, waiting.c.state.in_(final)),
            ))),
            "status_changes": (changes_t, sa.and_(c.at < before, sa.exists().where(
                newer.c.kpi_id == c.kpi_id, newer.c.id > c.id
            ))),
        }  # fmt: skip
        removed: dict[str, int] = {}
        if dry_run:
            with self._read("count records to prune") as connection:
                for name, (table, where) in dropped.items():
                    count = sa.select(sa.func.count()).select_from(table).where(where)
                    removed[name] = connection.execute(count).scalar_one()
            return removed
        with self._write("prune records") as connection:
            for name, (table, where) in dropped.items():  # notifications before their events
                removed[name] = connection.execute(sa.delete(table).where(where)).rowcount
        return removed

"""One writer per KPI state: a save goes through only over the state it started from.

Leases keep replicas from evaluating one KPI at once, but not everything that
writes a state is leased (a push, a formula follow-up, a second ``run --once``)
and a lease can expire during a long pause. So each save locks the KPI's state
row and checks it is still the one the evaluation read; otherwise it raises
:class:`EvaluationSuperseded` and writes nothing, and a transition is recorded
(and notified) once however many processes evaluate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from kpiwatch.errors import EvaluationSuperseded
from kpiwatch.model import KpiState, Status
from kpiwatch.store import sql
from kpiwatch.store.base import chunks
from kpiwatch.store.schema import kpi_state as state_t


class Basis(NamedTuple):
    """The stored state an evaluation started from, by its ``last_evaluated``
    (None: no state yet). Saving checks it is still the stored one."""

    last_evaluated: datetime | None

    @classmethod
    def of(cls, state: KpiState | None) -> Basis:
        return cls(None if state is None else state.last_evaluated)


def locked_verdicts(
    connection: Connection, bases: Sequence[tuple[str, Basis | None, datetime | None]]
) -> tuple[dict[str, Status | None], set[str]]:
    """The stored verdict of each KPI (None: it has none yet), its state row locked until
    the transaction ends,
    and the KPIs that must be inserted new (checked, with no state yet); raises
    :class:`EvaluationSuperseded` for KPIs (given as id, basis, evaluation time) whose
    state moved past their basis, or was evaluated at the same time or later (no
    time: a state update that is not an evaluation, such as a review tick).

    The lock makes a second writer of the same KPI wait for this one and then see
    the state it wrote: a transition is recorded once however many processes evaluate.
    """
    found: dict[str, tuple[Status | None, datetime | None]] = {}
    dialect = connection.dialect.name
    for chunk in chunks(sorted(kpi_id for kpi_id, _, _ in bases)):  # one lock order everywhere
        query = (
            sa.select(
                state_t.c.kpi_id, state_t.c.status, state_t.c.verdict, state_t.c.last_evaluated
            )
            .where(sql.one_of(state_t.c.kpi_id, dialect, chunk))
            .order_by(state_t.c.kpi_id)
            .with_for_update()
        )
        for kpi_id, status, verdict, last_evaluated in connection.execute(query):
            # a verdict state written without one (a review tick's copy, a test's) is its own
            shown = verdict or (None if status == Status.UNKNOWN.value else status)
            found[kpi_id] = (None if shown is None else Status(shown), last_evaluated)
    stale = []
    for kpi_id, basis, at in bases:
        if basis is None:
            continue
        stored = found.get(kpi_id, (None, None))[1]
        if stored != basis.last_evaluated or (
            at is not None and stored is not None and stored >= at
        ):
            stale.append(kpi_id)
    if stale:
        raise EvaluationSuperseded(stale)
    new = {kpi_id for kpi_id, basis, _ in bases if basis is not None and kpi_id not in found}
    return {kpi_id: verdict for kpi_id, (verdict, _) in found.items()}, new


def insert_new_states(connection: Connection, states: Sequence[Mapping[str, Any]]) -> None:
    """Insert first states; one that another writer inserted meanwhile (there was no
    row to lock) supersedes this evaluation, as a moved state does."""
    if states and sql.insert_ignore_many(connection, state_t, states) != len(states):
        raise EvaluationSuperseded(sorted(str(row["kpi_id"]) for row in states))

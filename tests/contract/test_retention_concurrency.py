"""The retention's prune beside evaluations saving new points, on every backend: neither
waits for the other into a deadlock (on MariaDB a prune that looked up each KPI's newest
points inside its delete locked them, and failed hundreds of times a minute)."""

from __future__ import annotations

import random
import threading
import time
from datetime import UTC, datetime, timedelta

from kpiwatch.model import Evaluation, Kept, KpiState, Observation, ReviewCadence, Status
from kpiwatch.store import Store
from kpiwatch.store.repository import EvaluationToSave

T0 = datetime(2026, 1, 1, tzinfo=UTC)
KPIS = [f"k{i:04d}" for i in range(400)]
SECONDS = 3.0  # how long the three run side by side; the count of failures is asserted


def _batch(kpi_ids: list[str], at: datetime) -> list[EvaluationToSave]:
    batch = []
    for kpi_id in kpi_ids:
        state = KpiState(kpi_id, Status.GREEN, since=at, review=ReviewCadence.WEEKLY,
                         last_evaluated=at)  # fmt: skip
        evaluation = Evaluation(kpi_id=kpi_id, at=at, value=1.0, observed_at=at,
                                raw_status=Status.GREEN, findings=(), state=state,
                                events=())  # fmt: skip
        batch.append(EvaluationToSave(evaluation, {}, [Observation(kpi_id, at, 1.0)]))
    return batch


def test_pruning_beside_batches_of_evaluations_fails_neither(store: Store) -> None:
    step = timedelta(minutes=5)
    store.add_observations(Observation(k, T0 + step * j, 1.0) for k in KPIS for j in range(20))
    # every KPI evaluated once: a first run's new state rows may deadlock on MariaDB's gap
    # locks between two batches (the runner saves such a batch again), not this race
    store.save_evaluations(_batch(KPIS, T0 + step * 19))
    stop = time.monotonic() + SECONDS
    failures: list[str] = []
    done = {"saved": 0, "pruned": 0}

    def save(kpi_ids: list[str]) -> None:  # as a replica's claimed batches: disjoint KPIs
        j = 20
        while time.monotonic() < stop:
            try:
                store.save_evaluations(_batch(kpi_ids, T0 + step * j))
                done["saved"] += 1
            except Exception as exc:
                failures.append(f"save: {exc}")
            j += 1

    def prune() -> None:
        while time.monotonic() < stop:
            kept = {k: Kept(T0 + step * 40 - timedelta(hours=1), 4) for k in KPIS}
            try:
                store.prune_observations(kept)
                done["pruned"] += 1
            except Exception as exc:
                failures.append(f"prune: {exc}")

    # in the rules' order, not the prune's sorted one
    ordered = random.Random(7).sample(KPIS, len(KPIS))
    threads = [threading.Thread(target=save, args=(ordered[:200],)),
               threading.Thread(target=save, args=(ordered[200:],)),
               threading.Thread(target=prune)]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=SECONDS + 60)
    assert failures == []
    assert done["saved"] > 0
    assert done["pruned"] > 0

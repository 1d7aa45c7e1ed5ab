"""Helpers shared by the evaluation tests: a KPI factory and observation series."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from kpiwatch.config.rules import Kpi
from kpiwatch.evaluation import evaluate
from kpiwatch.model import Evaluation, KpiState, Observation

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)  # a Monday
WEEK = timedelta(days=7)


def make_kpi(**overrides: Any) -> Kpi:
    """A push KPI (churn, %, lower is better) with ``overrides`` applied; ``for_`` means ``for``."""
    spec: dict[str, Any] = {
        "id": "churn",
        "name": "Churn",
        "owner": "ann@example.com",
        "unit": "%",
        "direction": "lower_is_better",
        "source": "push",
    }
    if "for_" in overrides:
        overrides["for"] = overrides.pop("for_")
    spec.update(overrides)
    return Kpi.model_validate(spec)


def series(
    values: Sequence[float], *, end: datetime = NOW, step: timedelta = WEEK, kpi_id: str = "churn"
) -> list[Observation]:
    """Observations ``step`` apart, the last one at ``end``."""
    n = len(values)
    return [Observation(kpi_id, end - step * (n - 1 - i), v) for i, v in enumerate(values)]


def run(
    kpi: Kpi,
    values_per_step: Sequence[float | None],
    *,
    start: datetime = NOW,
    step: timedelta = timedelta(hours=1),
    previous: KpiState | None = None,
) -> list[Evaluation]:
    """Evaluate once per step; each step's value is observed at that step (None: source error)."""
    results: list[Evaluation] = []
    state = previous
    history: list[Observation] = []
    for i, value in enumerate(values_per_step):
        now = start + step * i
        if value is None:
            result = evaluate(kpi, history, state, now, error="source down")
        else:
            history = [*history, Observation(kpi.id, now, value)]
            result = evaluate(kpi, history, state, now)
        results.append(result)
        state = result.state
    return results

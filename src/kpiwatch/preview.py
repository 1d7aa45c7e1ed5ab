"""`kpiwatch eval`: fetch and evaluate one KPI with the stored history, saving nothing."""

from __future__ import annotations

from kpiwatch.clock import SystemClock
from kpiwatch.config.loader import LoadedRules
from kpiwatch.config.settings import Settings
from kpiwatch.model import Evaluation, KpiState
from kpiwatch.runtime.runner import Runner
from kpiwatch.runtime.workspace import build_workspace
from kpiwatch.store.repository import Store


def evaluate_without_saving(
    settings: Settings, loaded: LoadedRules, kpi_id: str
) -> tuple[Evaluation, KpiState | None]:
    """The evaluation a poll would make now, and the state it would replace.

    Takes no instance lock: it may run beside the daemon (SQLite WAL lets it read).
    """
    store = Store.open(settings.database_url.get_secret_value())
    workspace = build_workspace(loaded, settings, store.latest, frozenset({"log"}))
    try:
        runner = Runner(
            store,
            SystemClock(),
            workspace,
            tz=settings.tz,
            review_time=settings.review_time,
            max_workers=1,
        )
        previous = store.get_state(kpi_id)
        evaluation = runner.evaluate_kpi(kpi_id, persist=False)
        assert evaluation is not None  # the caller checked the id exists
        return evaluation, previous
    finally:
        workspace.close()
        store.close()

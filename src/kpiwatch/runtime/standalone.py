"""A runner without the daemon, for one-off commands (`eval`, `push`, `backfill`).

Takes no instance lock: these commands may run beside the daemon (SQLite WAL
lets them read; their writes are single idempotent transactions).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from kpiwatch.clock import Clock, SystemClock
from kpiwatch.config.loader import LoadedRules
from kpiwatch.config.settings import Settings
from kpiwatch.model import Evaluation, KpiState
from kpiwatch.runtime.channels import channel_names
from kpiwatch.runtime.runner import Runner
from kpiwatch.runtime.workspace import build_workspace
from kpiwatch.store.repository import Store


@contextmanager
def standalone_runner(
    settings: Settings, loaded: LoadedRules, clock: Clock | None = None
) -> Iterator[tuple[Store, Runner]]:
    """The store and a runner over the given rules; both closed on exit."""
    store = Store.open(settings.database_url.get_secret_value())
    workspace = build_workspace(loaded, settings, store.latest, channel_names(settings))
    try:
        yield store, Runner(
            store,
            clock or SystemClock(),
            workspace,
            tz=settings.tz,
            review_time=settings.review_time,
            max_workers=1,
        )
    finally:
        workspace.close()
        store.close()


def evaluate_without_saving(
    settings: Settings, loaded: LoadedRules, kpi_id: str
) -> tuple[Evaluation, KpiState | None]:
    """The evaluation a poll would make now, and the state it would replace."""
    with standalone_runner(settings, loaded) as (store, runner):
        previous = store.get_state(kpi_id)
        evaluation = runner.evaluate_kpi(kpi_id, persist=False)
        assert evaluation is not None  # the caller checked the id exists
        return evaluation, previous

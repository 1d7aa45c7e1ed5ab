"""A runner without the daemon, for one-off commands (`eval`, `push`, `backfill`).

Takes no instance lock: these commands may run beside the daemon (SQLite WAL
lets them read; their writes are single idempotent transactions).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pydantic import SecretStr

from kpiwatch.clock import Clock, SystemClock
from kpiwatch.config.loader import LoadedRules
from kpiwatch.config.settings import Settings
from kpiwatch.model import Evaluation, KpiState
from kpiwatch.runtime.channels import channel_names
from kpiwatch.runtime.runner import Runner
from kpiwatch.runtime.workspace import build_workspace
from kpiwatch.store.engine import missing_sqlite_file
from kpiwatch.store.repository import Store


@contextmanager
def standalone_runner(
    settings: Settings, loaded: LoadedRules, clock: Clock | None = None, *, create: bool = True
) -> Iterator[tuple[Store, Runner]]:
    """The store and a runner over the given rules; both closed on exit. Without
    ``create`` (commands that only read) a missing SQLite database is an error."""
    store = Store.open(settings.database_url.get_secret_value(), create=create)
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
    """The evaluation a poll would make now, and the state it would replace.

    Before the first run there is no state database, and this creates none: the KPI
    is evaluated against an empty one in memory (no history, no previous state)."""
    if missing_sqlite_file(settings.database_url.get_secret_value()):
        settings = settings.model_copy(update={"database_url": SecretStr("sqlite://")})
    with standalone_runner(settings, loaded) as (store, runner):
        previous = store.get_state(kpi_id)
        evaluation = runner.evaluate_kpi(kpi_id, persist=False)
        assert evaluation is not None  # the caller checked the id exists
        return evaluation, previous

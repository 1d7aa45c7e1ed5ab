"""On the embedded SQLite store one daemon runs (the instance lock refuses a second):
a KPI's scheduled evaluation claims no lease, and still runs once per call."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from kpiwatch.config.settings import Settings
from kpiwatch.model import Observation, Status
from kpiwatch.runtime.app import App
from kpiwatch.store.schema import leases as leases_t
from kpiwatch.testing import FixedClock

RULES = """
kpis:
  - {id: signups, name: Signups, owner: ava@example.com, direction: higher_is_better,
     source: push, every: 1m, thresholds: {red: 10}}
"""


def test_a_scheduled_evaluation_on_sqlite_claims_no_lease(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("KPIWATCH_")]:
        monkeypatch.delenv(name)
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "kpis.yaml").write_text(RULES)
    settings = Settings(database_url=f"sqlite:///{tmp_path}/state.db",
                        rules_dir=tmp_path / "rules")  # fmt: skip
    clock = FixedClock(datetime(2026, 3, 2, 8, 0, tzinfo=UTC))
    app = App(settings, clock)
    try:
        app.store.add_observations([Observation("signups", clock.now(), 5.0)])
        app._run_kpis(("signups",))
        clock.advance(timedelta(minutes=1))
        app._run_kpis(("signups",))
        state = app.store.get_state("signups")
        assert state is not None
        assert state.status is Status.RED
        assert state.last_evaluated == clock.now()
        with app.store.engine.connect() as connection:
            names = connection.execute(sa.select(leases_t.c.name)).scalars().all()
        assert not [name for name in names if name.startswith("kpi:")]
    finally:
        app.close()

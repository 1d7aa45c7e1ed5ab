"""The daemon's scheduled path runs the KPIs that fall due together as batches
(issue 15): a few transactions for a whole batch, formulas over it once, and on
a shared database each KPI's due time claimed by exactly one replica."""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from kpiwatch.config.settings import Settings
from kpiwatch.model import Evaluation, Observation
from kpiwatch.runtime.app import App
from kpiwatch.testing import FixedClock

START = datetime(2026, 3, 2, 8, 0, 5, tzinfo=UTC)
KPIS = 120


def _rules(count: int) -> str:
    lines = ["kpis:"]
    for n in range(count):
        lines.append(
            f"  - {{id: k{n:03}, name: K{n}, owner: ava@example.com, "
            "direction: higher_is_better, source: push, every: 1m, thresholds: {red: 10}}"
        )
    lines.append(
        "  - {id: total, name: Total, owner: ava@example.com, direction: higher_is_better,"
        " source: formula, query: k000 + k001, every: 1h}"
    )
    return "\n".join(lines) + "\n"


def _settings(tmp_path: Path, url: str, count: int, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.chdir(tmp_path)  # no config/kpiwatch.toml or .env here
    for name in [n for n in os.environ if n.startswith("KPIWATCH_")]:
        monkeypatch.delenv(name)
    (tmp_path / "rules").mkdir(exist_ok=True)
    (tmp_path / "rules" / "kpis.yaml").write_text(_rules(count))
    return Settings(database_url=url, rules_dir=str(tmp_path / "rules"), max_workers=2)


def _evaluated_ids(app: App) -> list[str]:
    seen: list[str] = []
    guard = threading.Lock()

    def record(evaluation: Evaluation) -> None:
        with guard:
            seen.append(evaluation.kpi_id)

    app.runner.on_evaluated = record
    return seen


@pytest.fixture
def app(tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    app = App(_settings(tmp_path, store_url, KPIS, monkeypatch), FixedClock(START))
    yield app
    app.close()


def test_a_batch_of_due_kpis_costs_a_few_transactions_not_a_few_per_kpi(app: App) -> None:
    ids = tuple(f"k{n:03}" for n in range(KPIS))
    app.store.add_observations([Observation(k, START, 5.0 + n) for n, k in enumerate(ids)])
    evaluated = _evaluated_ids(app)
    begins = 0

    def begun(*_: object) -> None:
        nonlocal begins
        begins += 1

    sa.event.listen(app.store.engine, "begin", begun)
    try:
        app._run_kpis(ids)
    finally:
        sa.event.remove(app.store.engine, "begin", begun)
    # every KPI once, then the formula over two of them once (not once per input)
    assert Counter(evaluated) == Counter({**dict.fromkeys(ids, 1), "total": 1})
    states = app.store.states()
    assert all(states[k].last_evaluated == START for k in ids)
    assert states["total"].value == 5.0 + 6.0
    # two batches of 60 (2 workers): a read and a save each, the claim and its finish
    # on a shared database, the formula's inputs and its own batch. One job per KPI
    # took ~15 round trips and 3 transactions per KPI: 360 here.
    assert begins <= 16, begins


@pytest.mark.postgres
def test_replicas_firing_together_share_a_batch_and_evaluate_each_kpi_once(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three replicas' batch jobs fire at the same due time for 600 KPIs; they claim
    chunks of 200 (2 workers x 100) as they go: every KPI is evaluated exactly once."""
    settings = _settings(tmp_path, postgres_url, 600, monkeypatch)
    clock = FixedClock(START)
    apps = [App(settings, clock) for _ in range(3)]
    try:
        ids = tuple(f"k{n:03}" for n in range(600))
        apps[0].store.add_observations([Observation(k, START, 20.0) for k in ids])
        seen = [_evaluated_ids(app) for app in apps]
        barrier = threading.Barrier(3, timeout=30)

        def fire(app: App) -> None:
            barrier.wait()
            app._run_kpis(ids)

        threads = [threading.Thread(target=fire, args=(app,)) for app in apps]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not any(thread.is_alive() for thread in threads)
        runs = Counter(kpi for one in seen for kpi in one if kpi != "total")
        assert runs == Counter(dict.fromkeys(ids, 1))
        for app in apps:  # the same due time again: done, nobody evaluates it twice
            app._run_kpis(ids)
        assert sum(1 for one in seen for kpi in one if kpi != "total") == 600
    finally:
        for app in apps:
            app.close()

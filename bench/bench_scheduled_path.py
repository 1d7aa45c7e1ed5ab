"""The scheduled path's cost per KPI on the embedded SQLite store: one job per KPI
against one job for the KPIs that fall due together, with and without lease claims
(issue 15: the claim was 29 % of the per-KPI path's CPU on one instance).

Runs ``App._run_kpis`` (what a schedule's job calls) for N push KPIs, a steady round
each (states already written): once per KPI (a batch of one, the shape of the old one
job per KPI) and once for all of them (one batch job), each with the lease claims
forced on (as replicas claim) and off (as the daemon runs on SQLite: the instance
lock admits one daemon). Best of two rounds; prints ms per KPI, wall and CPU.

    .venv/bin/python bench/bench_scheduled_path.py [--kpis 2000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kpiwatch.config.settings import Settings
from kpiwatch.logs import configure_logging
from kpiwatch.model import Observation
from kpiwatch.runtime.app import App
from kpiwatch.testing import FixedClock


def _rules(path: Path, n: int) -> None:
    lines = ["kpis:\n"]
    for i in range(n):
        lines.append(f"  - {{id: k{i}, name: K {i}, owner: o@example.com, direction: "
                     f"lower_is_better, source: push, every: 1m, thresholds: {{red: 50}}}}\n")
    path.write_text("".join(lines))


def _round(app: App, clock: FixedClock, n: int, batched: bool) -> tuple[float, float]:
    clock.advance(timedelta(minutes=1))
    ids = tuple(f"k{i}" for i in range(n))
    wall, cpu = time.perf_counter(), time.process_time()
    if batched:
        app._run_kpis(ids)
    else:
        for kpi_id in ids:
            app._run_kpis((kpi_id,))
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kpis", type=int, default=2000)
    n = parser.parse_args().kpis
    configure_logging("console", "warning")  # the events of 2,000 first states are noise here
    for name in [k for k in os.environ if k.startswith("KPIWATCH_")]:
        del os.environ[name]
    with tempfile.TemporaryDirectory() as tmp:
        rules = Path(tmp) / "rules"
        rules.mkdir()
        _rules(rules / "kpis.yaml", n)
        settings = Settings(database_url=f"sqlite:///{tmp}/state.db", rules_dir=rules,
                            _env_file=None)  # type: ignore[call-arg]
        clock = FixedClock(datetime(2026, 3, 2, 8, 0, tzinfo=UTC))
        app = App(settings, clock)
        try:
            app.store.add_observations(
                [Observation(f"k{i}", clock.now(), float(i % 100)) for i in range(n)]
            )
            _round(app, clock, n, True)  # first states written: not what a steady cycle costs
            results: dict[tuple[bool, bool], list[tuple[float, float]]] = {}
            for _ in range(2):
                for batched in (False, True):
                    for exclusive in (False, True):
                        app._exclusive = exclusive
                        results.setdefault((batched, exclusive), []).append(
                            _round(app, clock, n, batched)
                        )
        finally:
            app.close()
    for (batched, exclusive), runs in results.items():
        wall = min(r[0] for r in runs) / n * 1000
        cpu = min(r[1] for r in runs) / n * 1000
        label = f"{'one batch job' if batched else 'a job per KPI'}, " + (
            "no claims" if exclusive else "claims"
        )
        print(f"{label:30s} {wall:.3f} ms/KPI wall, {cpu:.3f} ms/KPI CPU")


if __name__ == "__main__":
    main()

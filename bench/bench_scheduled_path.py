"""The scheduled path's cost per KPI on the embedded SQLite store, with and without the
per-KPI lease claim (issue 15: the claim was 29 % of the path's CPU on one instance).

Runs ``App._run_kpi`` (what a KPI's scheduler job calls) for N push KPIs, twice over,
once with the lease claim forced on and once as the daemon now runs on SQLite (no
claim: the instance lock admits one daemon). Prints ms per KPI, wall and CPU.

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


def _round(app: App, clock: FixedClock, n: int) -> tuple[float, float]:
    clock.advance(timedelta(minutes=1))
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(n):
        app._run_kpi(f"k{i}")
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
            _round(app, clock, n)  # first states written: not what a steady cycle costs
            results = {}
            for exclusive in (False, True, False, True):
                app._exclusive = exclusive
                results.setdefault(exclusive, []).append(_round(app, clock, n))
        finally:
            app.close()
    for exclusive, runs in results.items():
        wall = min(r[0] for r in runs) / n * 1000
        cpu = min(r[1] for r in runs) / n * 1000
        label = "no claim (SQLite now)" if exclusive else "lease claim per KPI (before)"
        print(f"{label:30s} {wall:.3f} ms/KPI wall, {cpu:.3f} ms/KPI CPU")


if __name__ == "__main__":
    main()

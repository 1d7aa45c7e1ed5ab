"""Benchmark of `kpiwatch backtest --all`: 10,000 KPIs over 365 daily points, whole process.

Run:  .venv/bin/python bench/bench_backtest.py [--kpis 10000] [--days 365] [--rounds 3]
      [--profile]

The KPIs are the cycle benchmark's (``bench_cycle.write_rules``: one threshold
pair each, half either direction, about one in ten near its limits), polled
``every: 1d``. Their stored history is a seeded random walk around each KPI's
level, one point a day, in a SQLite state store built once and kept in
``--cache`` (building it is not timed). The timed run is the real command in a
subprocess, from start to exit, printing JSON to /dev/null:
``kpiwatch backtest --all --from <first day> --to <last day> --json``.
Prints the median wall time, evaluations per second and the peak RSS.
``--profile`` runs the command once in-process under cProfile instead.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import random
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench_cycle import kpi_id, value_of, write_rules

from kpiwatch.model import Observation
from kpiwatch.store.repository import Store

END = datetime(2026, 11, 30, tzinfo=UTC)
CHUNK = 100_000  # observations per store write while building


def build(cache: Path, n: int, days: int) -> Path:
    """The rules and the state store for ``n`` KPIs x ``days`` points, built once."""
    root = cache / f"backtest-{n}x{days}"
    done = root / "built"
    if done.exists():
        return root
    rules = root / "rules"
    rules.mkdir(parents=True, exist_ok=True)
    write_rules(rules, "sqlite:///unused-by-backtest.db", n)
    for path in rules.glob("kpis_*.yaml"):
        path.write_text(path.read_text().replace("every: 5m", "every: 1d"))
    (root / "state.db").unlink(missing_ok=True)
    store = Store.open(f"sqlite:///{root / 'state.db'}")
    rng = random.Random(7)
    start = END - timedelta(days=days - 1)
    batch: list[Observation] = []
    for i in range(n):
        level = value_of(i)
        value = level
        for day in range(days):
            value += (level - value) * 0.1 + rng.gauss(0, level * 0.05)  # mean-reverting
            batch.append(Observation(kpi_id(i), start + timedelta(days=day), round(value, 3)))
        if len(batch) >= CHUNK:
            store.add_observations(batch)
            batch.clear()
            print(f"  stored {i + 1:,} of {n:,} KPIs", file=sys.stderr, end="\r")
    store.add_observations(batch)
    store.close()
    done.touch()
    print(file=sys.stderr)
    return root


def command(root: Path, days: int) -> tuple[list[str], dict[str, str]]:
    start = END - timedelta(days=days - 1)
    args = [sys.executable, "-m", "kpiwatch", "backtest", "--all",
            "--from", start.isoformat(), "--to", END.isoformat(), "--json"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("KPIWATCH_")}
    env.update(
        KPIWATCH_CONFIG=str(root / "absent.toml"),
        KPIWATCH_RULES_DIR=str(root / "rules"),
        KPIWATCH_DATABASE_URL=f"sqlite:///{root / 'state.db'}",
        KPIWATCH_LOG_FORMAT="json",
    )
    return args, env


def timed(root: Path, days: int) -> tuple[float, float]:
    """(seconds, peak RSS in MiB of that child) of one whole-process run."""
    args, env = command(root, days)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    subprocess.run(args, env=env, stdout=subprocess.DEVNULL, check=True, timeout=1800)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, max(peak, before) / 1024


def profile(root: Path, days: int, top: int = 25) -> None:
    from kpiwatch.cli import main

    args, env = command(root, days)
    os.environ.update(env)
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        main(args[3:], standalone_mode=False)
    finally:
        profiler.disable()
    pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(top)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--kpis", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/kpiwatch-bench"))
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    print(f"building {args.kpis:,} KPIs x {args.days} daily points (once) ...", file=sys.stderr)
    root = build(args.cache, args.kpis, args.days)
    if args.profile:
        profile(root, args.days)
        return
    runs = [timed(root, args.days) for _ in range(args.rounds)]
    seconds = statistics.median(s for s, _ in runs)
    evaluations = args.kpis * args.days
    print(
        f"{args.kpis:,} KPIs x {args.days} days = {evaluations:,} evaluations, "
        f"median of {args.rounds}, Python {sys.version.split()[0]}, load {os.getloadavg()[0]:.1f}"
    )
    print(
        f"whole process: {seconds:.1f} s  ({evaluations / seconds:,.0f} evaluations/s)  "
        f"runs {', '.join(f'{s:.1f}' for s, _ in runs)} s; "
        f"peak RSS {max(r for _, r in runs):.0f} MiB"
    )


if __name__ == "__main__":
    main()

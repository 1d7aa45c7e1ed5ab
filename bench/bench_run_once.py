"""Whole-process ``kpiwatch run --once`` of 10,000 SQL KPIs on PostgreSQL, against a
raw psycopg loop running the same queries on 8 connections.

Run:  .venv/bin/python bench/bench_run_once.py [--kpis 10000] [--later 2]
      [--url postgresql+psycopg://postgres@127.0.0.1:5432/test] [--store sqlite|postgres]

Builds ``bench_cycle.py``'s warehouse (``bench_kpiwatch.metrics``, a row per KPI)
and rules (one query per KPI, thresholds, 20 files of 500), then times, as a
user would run it from cron:

* the **first run**: ``python -m kpiwatch run --once`` on an empty state store
  (migrations, every KPI's first state, status change and events, the outbox
  rows, logged since no channel is configured);
* ``--later`` **later runs** (states exist, values unchanged);

each a fresh process timed from start to exit (rules loaded, imports, the lot),
each also compared with a raw loop run just before it (the host's speed drifts),
with the state store an embedded SQLite file (``--store sqlite``, the default
``kpiwatch`` setup) or a PostgreSQL database of its own (``--store postgres``).
The baseline is ``bench_cycle.raw_loop``: 8 threads, one psycopg connection
each, the same 10,000 queries, timed without connecting. Prints seconds and the
ratio; the issue's target is 3x.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench_cycle import (
    create_warehouse,
    drop_state_db,
    drop_warehouse,
    raw_loop,
    recreate_state_db,
    state_url,
    write_rules,
)

TARGET = 3.0


def run_once(root: Path, rules: Path, store: str) -> float:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("KPIWATCH_")},
           "KPIWATCH_RULES_DIR": str(rules), "KPIWATCH_DATABASE_URL": store,
           "KPIWATCH_LOG_LEVEL": "warning", "KPIWATCH_DELIVERY_TIMEOUT": "1"}  # fmt: skip
    # an installed kpiwatch has its bytecode compiled at install; a source checkout with
    # PYTHONDONTWRITEBYTECODE set (as on the CI machines) compiled every module each run
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "kpiwatch", "run", "--once"], cwd=root,
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          timeout=600, check=False)  # fmt: skip
    took = time.perf_counter() - started
    if done.returncode not in (0, 1):  # 1: some KPI is red, as the demo's are
        raise SystemExit(f"run --once exited {done.returncode}: {done.stderr[-2000:]!r}")
    return took


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--kpis", type=int, default=10_000)
    parser.add_argument("--later", type=int, default=2)
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args(argv)
    create_warehouse(args.url, args.kpis)
    try:
        baseline = statistics.median(raw_loop(args.url, args.kpis) for _ in range(3))
        with tempfile.TemporaryDirectory(prefix="kpiwatch-once-") as tmp:
            root = Path(tmp)
            rules = root / "rules"
            rules.mkdir()
            write_rules(rules, args.url, args.kpis)
            if args.store == "postgres":
                recreate_state_db(args.url)
                store = state_url(args.url)
            else:
                store = f"sqlite:///{root}/state.db"
            # a raw loop right before each run as well: the host's speed drifts, so
            # each run is also compared with the loop next to it
            paired = [raw_loop(args.url, args.kpis)]
            first = run_once(root, rules, store)
            later = []
            for _ in range(args.later):
                paired.append(raw_loop(args.url, args.kpis))
                later.append(run_once(root, rules, store))
            if args.store == "postgres":
                drop_state_db(args.url)
    finally:
        drop_warehouse(args.url)
    print(f"\n{args.kpis} SQL KPIs, whole-process run --once, state store {args.store}, "
          f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")  # fmt: skip
    print(f"  raw psycopg loop, 8 connections   {baseline:6.2f} s")
    print(f"  first run                         {first:6.2f} s  ({first / baseline:.1f}x;"
          f" {first / paired[0]:.1f}x the loop before it, {paired[0]:.2f} s)")  # fmt: skip
    for n, took in enumerate(later, 1):
        print(f"  later run {n}                       {took:6.2f} s  ({took / baseline:.1f}x;"
              f" {took / paired[n]:.1f}x the loop before it, {paired[n]:.2f} s)")  # fmt: skip
    print(f"  target                            {TARGET:.0f}x")


if __name__ == "__main__":
    main()

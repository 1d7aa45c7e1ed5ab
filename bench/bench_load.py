"""Loading 10,000 KPIs: `load_rules` time and memory, and `kpiwatch check` as a whole process.

Run:  .venv/bin/python bench/bench_load.py [--kpis 10000] [--rounds 5] [--layout one|split|both]
      [--no-cache] [--no-check] [--profile one|split] [--keep DIR]

Writes realistic rule files once (into ``--keep`` or a temporary directory): one
SQLite warehouse source and one PostgreSQL source (its server is never reached by
the load; ``check`` warns it is unreachable), 20 teams, and 10,000 KPIs in block
style as people write them: a name, a description for one in three, an owner and a
team, a unit, a direction, a SQL query of its own (one in ten a ``WITH ... SELECT``
with a join and a filter; one in fifty KPIs is a formula over two others
instead), ``every``, a review, thresholds, a target with a glide path for one in
eight, trend rules (``worsening_streak`` one in three, ``change`` one in five,
``off_track`` with the targets), ``for: 2`` one in four, ``max_age`` and labels.
Two layouts: **one** file holding everything, and **20 files**: ``sources.yaml`` plus
20 team files of 500 KPIs each (which name the sources of the other file).

Each round runs in a fresh child process (``cold``: as when the daemon, ``run
--once`` or ``check`` starts). The child imports what ``load_rules`` needs
(``kpiwatch.config.loader`` and the SQL statement check with sqlglot), reads VmRSS,
times ``load_rules`` (wall clock and CPU), reads VmRSS and VmHWM again with the
result still held, then times a second ``load_rules`` in the same process
(``warm``: a reload, with the statement check's per-query cache filled). Each
layout is measured without the rules cache (``cache_dir=None``), then, unless
``--no-cache``, with it: one child writes it (the first start after a change), then
``--rounds`` children read it (every later start), then ``--rounds`` children
load after one KPI was renamed (the first start after an edit: with 20 files, the
other 19 come from the cache), each from the cache as it was before the edit.
Prints medians (memory: the last child).

Then it times ``kpiwatch check`` on each layout from start to exit (median of
``--rounds``), without the cache (``KPIWATCH_CACHE_DIR=""``) and with a written
one, against ``kpiwatch --version`` (the interpreter and the CLI's imports, no
rules). ``--profile`` runs one cold load (no cache) in-process under cProfile and
prints the top functions by cumulative and by own time. ``--no-cache`` also
measures a kpiwatch from before the cache (no ``cache_dir``).

Target (issue 15, item 2): under 1 s and under 60 MB above the import cost.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

TEAMS = 20
PER_FILE = 500
TARGET_S = 1.0
TARGET_MIB = 60.0

CHILD = r"""
import json, sys, time
from pathlib import Path

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")

started = time.perf_counter()
from kpiwatch.config.loader import load_rules
import kpiwatch.sources.sql_guard  # noqa: F401  (sqlglot: the statement check's import)
imported = time.perf_counter() - started
rss_import = status("VmRSS")
from kpiwatch.errors import RuleLoadError
cache = {} if sys.argv[2] == "-" else {"cache_dir": Path(sys.argv[2])}
started, cpu = time.perf_counter(), time.process_time()
try:
    loaded = load_rules(Path(sys.argv[1]), **cache)
except RuleLoadError as exc:
    print(json.dumps({"failed": time.perf_counter() - started, "problems": len(exc.problems),
                      "first": str(exc.problems[0])}))
    sys.exit(0)
cold, cold_cpu = time.perf_counter() - started, time.process_time() - cpu
rss_loaded = status("VmRSS")
hwm = status("VmHWM")
started = time.perf_counter()
again = load_rules(Path(sys.argv[1]), **cache)
warm = time.perf_counter() - started
print(json.dumps({
    "import": imported, "cold": cold, "cold_cpu": cold_cpu, "warm": warm,
    "kpis": len(loaded.rules.kpis), "files": len(loaded.files), "rss_import": rss_import,
    "rss_loaded": rss_loaded, "hwm": hwm,
}))
"""


def _block(i: int, n: int) -> list[str]:
    """One KPI in block style, as people write them."""
    team = f"team_{i // PER_FILE % TEAMS:02d}"  # a team's KPIs in its own file
    lower = i % 2 == 0
    level = 100 + (i * 37) % 900
    lines = [
        f"  - id: kpi_{i:05d}",
        f"    name: {team.replace('_', ' ').title()} metric {i}",
    ]
    if i % 3 == 0:
        lines.append(f"    description: Tracked for {team}; see the runbook, section {i % 40}.")
    lines += [
        f"    owner: owner{i % 150}@example.com",
        f"    team: {team}",
        f"    unit: \"{('%', '$', 'ms')[i % 4]}\"" if i % 4 < 3 else "",
        f"    direction: {'lower_is_better' if lower else 'higher_is_better'}",
    ]
    lines = [line for line in lines if line]
    if i % 50 == 49 and i >= 2:
        lines += ["    source: formula", f"    query: kpi_{i - 1:05d} / kpi_{i - 2:05d}"]
    elif i % 10 == 0:
        lines += [
            "    source: events",
            "    query: |",
            "      WITH daily AS (",
            "        SELECT date_trunc('day', e.at) AS day, count(*) AS n",
            "        FROM events e JOIN accounts a ON a.id = e.account_id",
            f"        WHERE e.kind = 'kind_{i}' AND a.plan <> 'internal'",
            "        GROUP BY 1",
            "      )",
            "      SELECT day, n FROM daily ORDER BY day",
        ]
    else:
        table = ("revenue", "usage", "support", "ops")[i % 4]
        lines += [
            "    source: warehouse",
            f"    query: SELECT day, value FROM {table}_daily"
            f" WHERE kpi = 'kpi_{i:05d}' ORDER BY day",
        ]
    lines.append(f"    every: {(5, 15, 60)[i % 3]}m")
    lines.append(f"    review: {('weekly', 'monthly', 'daily')[i % 3]}")
    yellow, red = (level * 1.1, level * 1.3) if lower else (level * 0.9, level * 0.7)
    lines.append(f"    thresholds: {{yellow: {yellow:.1f}, red: {red:.1f}}}")
    trend = []
    if i % 8 == 0:
        goal = level * (0.8 if lower else 1.2)
        lines.append(
            f"    target: {{value: {goal:.1f}, by: 2027-06-30, baseline: {level},"
            " baseline_date: 2026-06-01}"
        )
        trend.append("off_track: yellow")
    if i % 3 == 0:
        trend.append("worsening_streak: 3")
    if i % 5 == 0:
        trend.append(f"change: {{max_pct: {10 + i % 20}, over: 7d}}")
    if trend:
        lines.append(f"    trend: {{{', '.join(trend)}}}")
    if i % 4 == 0:
        lines.append("    for: 2")
    if i % 6 == 0:
        lines.append("    max_age: 2d")
    lines.append(f"    labels: {{tier: t{i % 3}, area: {team}}}")
    return lines


def _header(teams: range) -> list[str]:
    lines = ["teams:"]
    for t in teams:
        lines += [
            f"  team_{t:02d}:",
            f'    slack: "#team-{t:02d}-kpis"',
            f"    email: [team{t:02d}@example.com]",
        ]
    return lines


def write_rules(root: Path, n: int) -> tuple[Path, Path]:
    """The two layouts under ``root``: (one file, split files)."""
    warehouse = root / "warehouse.db"
    if not warehouse.exists():
        sqlite3.connect(warehouse).close()
    sources = [
        "sources:",
        "  warehouse:",
        "    type: sql",
        f"    url: sqlite:///{warehouse}",
        "    timeout: 10s",
        "    owner: data-platform@example.com",
        "  events:",
        "    type: sql",
        "    url: postgresql+psycopg://kpiwatch@127.0.0.1:9/events",
        "    timeout: 30s",
        "    max_concurrency: 8",
        "    owner: data-platform@example.com",
    ]
    one, split = root / f"one-{n}", root / f"split-{n}"
    one.mkdir(parents=True, exist_ok=True)
    split.mkdir(parents=True, exist_ok=True)
    kpis = [_block(i, n) for i in range(n)]
    body = [line for kpi in kpis for line in ["", *kpi]]
    everything = [*sources, *_header(range(TEAMS)), "kpis:", *body]
    (one / "rules.yaml").write_text("\n".join(everything) + "\n")
    (split / "sources.yaml").write_text("\n".join(sources) + "\n")
    for f, start in enumerate(range(0, n, PER_FILE)):
        chunk = [line for kpi in kpis[start : start + PER_FILE] for line in ["", *kpi]]
        teams = range(f, f + 1) if f < TEAMS else range(0)
        team = [*_header(teams), "kpis:", *chunk]
        (split / f"team_{f:02d}.yaml").write_text("\n".join(team) + "\n")
    return one, split


def _env(rules: Path, cache: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KPIWATCH_")}
    env.update(
        KPIWATCH_CONFIG=str(rules / "absent.toml"),
        KPIWATCH_RULES_DIR=str(rules),
        KPIWATCH_LOG_FORMAT="json",
        KPIWATCH_CACHE_DIR=str(cache or ""),
    )
    return env


def measure(rules: Path, cache: Path | None) -> dict[str, Any]:
    """One fresh child process: import, cold load, memory, warm load."""
    args = [sys.executable, "-c", CHILD, str(rules), str(cache or "-")]
    out = subprocess.run(args, env=_env(rules), capture_output=True, text=True, check=True,
                         timeout=600)  # fmt: skip
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def changed(rules: Path, cache: Path, rounds: int) -> list[dict[str, Any]]:
    """The first load after an edit: one KPI's name changed in the first rule file (of
    20: the others come from the cache), the cache as it was before the edit each round."""
    edited = min(rules.glob("*.yaml"), key=lambda p: p.name != "team_00.yaml")
    original = edited.read_text()
    before = cache.with_name(cache.name + "-before")
    shutil.rmtree(before, ignore_errors=True)
    shutil.copytree(cache, before)
    runs = []
    try:
        edited.write_text(original.replace(" metric 0\n", " metric 0 (renamed)\n", 1))
        for _ in range(rounds):
            shutil.rmtree(cache)
            shutil.copytree(before, cache)
            runs.append(measure(rules, cache))
    finally:
        edited.write_text(original)
        shutil.rmtree(cache)
        shutil.copytree(before, cache)
    return runs


def whole(args: list[str], rules: Path, cache: Path | None = None) -> tuple[float, int]:
    """Seconds from start to exit, and the exit code."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "kpiwatch", *args], env=_env(rules, cache),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          timeout=600)  # fmt: skip
    return time.perf_counter() - started, done.returncode


def _row(name: str, runs: list[dict[str, Any]]) -> str:
    if failed := [r for r in runs if "failed" in r]:
        return (f"{name:<22} refused after {failed[0]['failed']:.2f} s with "
                f"{failed[0]['problems']} problem(s): {failed[0]['first']}")  # fmt: skip
    last = runs[-1]
    median = {k: statistics.median(r[k] for r in runs) for k in ("import", "cold", "cold_cpu")}
    return (
        f"{name:<22} {median['import']:>8.2f} {median['cold']:>7.2f} {median['cold_cpu']:>6.2f} "
        f"{statistics.median(r['warm'] for r in runs):>7.2f} "
        f"{last['rss_loaded'] - last['rss_import']:>8.1f} "
        f"{last['hwm'] - last['rss_import']:>8.1f}  " + ", ".join(f"{r['cold']:.2f}" for r in runs)
    )


def profile(rules: Path, top: int = 30) -> None:
    from kpiwatch.config.loader import load_rules
    from kpiwatch.sources import sql_guard  # noqa: F401  (imported before, as in measure)

    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    loaded = load_rules(rules)
    profiler.disable()
    seconds = time.perf_counter() - started
    print(f"{len(loaded.rules.kpis):,} KPIs in {seconds:.2f} s under cProfile")
    stats = pstats.Stats(profiler)
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--kpis", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--layout", choices=("one", "split", "both"), default="both")
    parser.add_argument("--no-cache", action="store_true", help="measure without the cache only")
    parser.add_argument("--no-check", action="store_true", help="skip timing `kpiwatch check`")
    parser.add_argument("--profile", choices=("one", "split"))
    parser.add_argument("--keep", type=Path, help="write the rules here (kept); else a temp dir")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        root = args.keep or Path(tmp)
        one, split = write_rules(root, args.kpis)
        if args.profile:
            profile(one if args.profile == "one" else split)
            return
        layouts = {"one": [("one file", one)], "split": [("20 files", split)]}.get(
            args.layout, [("one file", one), ("20 files", split)]
        )
        caches = {name: Path(tmp) / f"cache-{i}" for i, (name, _) in enumerate(layouts)}
        print(
            f"{args.kpis:,} KPIs, median of {args.rounds} fresh processes, "
            f"Python {sys.version.split()[0]}, load {os.getloadavg()[0]:.2f}"
        )
        print(f"{'load_rules':<22} {'import s':>8} {'cold s':>7} {'cpu s':>6} {'warm s':>7} "
              f"{'RSS +MiB':>8} {'HWM +MiB':>8}  cold runs")  # fmt: skip
        for name, rules in layouts:
            print(_row(f"{name}, no cache", [measure(rules, None) for _ in range(args.rounds)]))
            if not args.no_cache:
                shutil.rmtree(caches[name], ignore_errors=True)
                print(_row(f"{name}, writes cache", [measure(rules, caches[name])]))
                runs = [measure(rules, caches[name]) for _ in range(args.rounds)]
                print(_row(f"{name}, cached", runs))
                runs = changed(rules, caches[name], args.rounds)
                print(_row(f"{name}, one KPI edited", runs))
        print(f"target: cold < {TARGET_S:.0f} s, < {TARGET_MIB:.0f} MiB above the import")
        if args.no_check:
            return
        base = statistics.median(whole(["--version"], one)[0] for _ in range(args.rounds))
        print(f"\n{'whole process':<34} {'median s':>8}  runs (exit code)")
        print(f"{'kpiwatch --version':<34} {base:>8.2f}")
        for name, rules in layouts:
            for what, cache in [("no cache", None)] + ([] if args.no_cache else [
                    ("cached", caches[name])]):  # fmt: skip
                checks = [whole(["check"], rules, cache) for _ in range(args.rounds)]
                print(f"{f'kpiwatch check, {name}, {what}':<34} "
                      f"{statistics.median(s for s, _ in checks):>8.2f}  "
                      + ", ".join(f"{s:.2f} ({code})" for s, code in checks))  # fmt: skip


if __name__ == "__main__":
    main()

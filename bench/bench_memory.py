"""Resident memory of the kpiwatch daemon with 10,000 KPIs over an hour of cycles.

Run:  .venv/bin/python bench/bench_memory.py [--kpis 10000] [--every 5] [--hours 1]
      [--cycles N] [--mark 100] [--source push|sql]
      [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/bench_kpiwatch_mem]
      [--first-start] [--warm-cache] [--objects] [--no-deliver] [--no-scrape] [--trim]
      [--tracemalloc [--frames N]]

The measurement runs in a fresh child process (so RSS holds nothing of the
parent's). It builds what ``kpiwatch run`` holds: the CLI and
``kpiwatch.runtime.daemon`` imported, then ``kpiwatch.runtime.App`` from
Settings (store, rules, channels, outbox, notice builder, suppressor, leases,
metrics registry) and the web app served by the daemon's ``WebServer`` on its
thread (port 0). The scheduler is left out: its jobs run on the wall clock, so
the bench drives the cycles itself. The rules come from a temporary rules
directory (thresholds, ``worsening_streak``, ``for: 2``, a monthly review;
``--source push``, the default: values stored each cycle as the push API does;
``--source sql``: one ``type: sql`` source on a SQLite warehouse file and one
query per KPI, the real fetch path but ~10x slower per cycle). The store is a
SQLite file by default, or ``--database-url`` (an empty database); another
process creates its schema first, as on a restart (``--first-start``: the
measured process migrates, so Alembic stays loaded in it).

Then, once per poll interval (``every: 5m`` -> 12 cycles an hour), it runs
``App.runner.evaluate_all`` on a fixed clock advanced by the interval, delivers
the outbox (the job the scheduler runs every 0.25 s; ``--no-deliver`` skips it)
and GETs ``/metrics`` as Prometheus would (and ``/`` after the last cycle;
``--no-scrape`` skips both), moving every value a little between cycles. It
reports VmRSS (``/proc/self/status``) after the imports, after start (rules
loaded, everything wired), after the first cycle, every 10 cycles and at the end.
``--cycles N`` runs N cycles instead of ``--hours`` worth; ``--mark M``
(default 100, or a fifth of the cycles when there are fewer than 500) is the
cycle the end is compared with: "does memory plateau" is RSS at the end over
RSS at cycle M (issue 15 wants 500 cycles within 5 % of cycle 100).
``--objects`` measures the older, narrower set instead: only the store,
workspace and Runner. ``--tracemalloc`` also reports Python's traced memory (it
slows the cycles about 2x and adds its own memory to RSS, so it is off by
default); with it, a snapshot at the mark and one at the end are compared (the
allocation sites that grew, by line, ``--frames N`` deep) and the objects per
type counted at both, then the largest sites at the end are listed. Set
``MALLOC_ARENA_MAX`` in the environment to see glibc's arenas' share.

Baseline (quoted, not measured): Prometheus uses about 127 MiB for the same rules.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
import tracemalloc
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

PROMETHEUS_MIB = 127.0  # quoted in issue 6, not measured here
WORKERS = 8
PER_FILE = 500  # KPIs per rule file
START = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def rss_mib() -> float:
    """VmRSS of this process, MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def hwm_mib() -> float:
    """VmHWM (peak RSS) of this process, MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def traced_mib() -> str:
    return (
        f"{tracemalloc.get_traced_memory()[0] / 2**20:.1f} MiB"
        if tracemalloc.is_tracing()
        else "(--tracemalloc)"
    )


def engine_note(engine: Any) -> str:
    """The SQLAlchemy compiled-statement cache's entries and the pool's connections."""
    cache = engine._compiled_cache  # an LRU of compiled statements, 500 by default
    size = "off" if cache is None else f"{len(cache)} of {cache.capacity}"
    return f"compiled cache {size}; {engine.pool.status()}"


def type_counts() -> dict[str, int]:
    """Live objects the garbage collector tracks, per type name."""
    counts: dict[str, int] = {}
    for obj in gc.get_objects():
        name = type(obj).__qualname__
        counts[name] = counts.get(name, 0) + 1
    return counts


def _filtered(snapshot: tracemalloc.Snapshot) -> tracemalloc.Snapshot:
    return snapshot.filter_traces([
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap*>"),
    ])  # fmt: skip


class Marked:
    """What --tracemalloc holds at the mark: a snapshot and the objects per type."""

    def __init__(self, snapshot: tracemalloc.Snapshot, types: dict[str, int]) -> None:
        self.snapshot = snapshot
        self.types = types

    @classmethod
    def take(cls) -> Marked:
        gc.collect()
        return cls(_filtered(tracemalloc.take_snapshot()), type_counts())

    def report_growth(self, between: str, top: int = 25) -> None:
        gc.collect()
        end = _filtered(tracemalloc.take_snapshot())
        key = "traceback" if tracemalloc.get_traceback_limit() > 1 else "lineno"
        diffs = end.compare_to(self.snapshot, key)
        grown = sum(d.size_diff for d in diffs)
        print(f"\ntraced memory {between}: {grown / 2**20:+.2f} MiB; the sites that grew most:")
        for diff in diffs[:top]:
            if diff.size_diff <= 0:
                break
            frames = list(diff.traceback)[::-1]  # innermost first
            where = " <- ".join(f"{f.filename.split('site-packages/')[-1]}:{f.lineno}"
                                for f in frames[:4])  # fmt: skip
            print(f"  {diff.size_diff / 1024:+9.1f} KiB {diff.count_diff:+7d} blocks  {where}")
        types = type_counts()
        rows = sorted(((n - self.types.get(t, 0), t, n) for t, n in types.items()),
                      reverse=True)[:12]  # fmt: skip
        print("objects per type that grew (delta, type, now):")
        for delta, name, now in rows:
            if delta <= 0:
                break
            print(f"  {delta:+8d}  {name:<40} {now:>9d}")


def report_top(snapshot: tracemalloc.Snapshot, top: int = 20) -> None:
    """The largest allocation sites at the end, by file and by line."""
    snapshot = _filtered(snapshot)
    for key in ("filename", "lineno"):
        stats = snapshot.statistics(key)
        print(f"\ntraced memory at the end by {key} (top {top} of {len(stats)}):")
        for stat in stats[:top]:
            frame = stat.traceback[0]
            where = frame.filename.split("site-packages/")[-1]
            if key == "lineno":
                where += f":{frame.lineno}"
            print(f"  {stat.size / 2**20:8.2f} MiB {stat.count:>9d} blocks  {where}")


def make_warehouse(path: Path, n: int, rng: random.Random) -> list[float]:
    values = [round(rng.uniform(10.0, 100.0), 2) for _ in range(n)]
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE metrics (kpi TEXT PRIMARY KEY, value REAL)")
        conn.executemany("INSERT INTO metrics VALUES (?, ?)",
                         [(f"kpi_{i}", v) for i, v in enumerate(values)])  # fmt: skip
    return values


def nudge_warehouse(path: Path, values: list[float], rng: random.Random) -> None:
    """Move every value by up to +-2 %: a few KPIs cross a threshold each cycle."""
    for i, v in enumerate(values):
        values[i] = round(v * (1 + rng.uniform(-0.02, 0.02)), 3)
    with sqlite3.connect(path) as conn:
        conn.executemany("UPDATE metrics SET value = ? WHERE kpi = ?",
                         [(v, f"kpi_{i}") for i, v in enumerate(values)])  # fmt: skip


def write_rules(
    rules_dir: Path, warehouse: Path, values: list[float], every: int, source: str
) -> None:
    (rules_dir / "sources.yaml").write_text(
        "sources:\n"
        f'  warehouse: {{type: sql, url: "sqlite:///{warehouse}", timeout: 10s,'
        f" max_concurrency: {WORKERS}, owner: data@example.com}}\n"
    )
    lines = ["kpis:"]
    for i, v in enumerate(values):
        lower = i % 2 == 0
        yellow, red = (v * 1.05, v * 1.15) if lower else (v * 0.95, v * 0.85)
        where = (
            f" source: warehouse, query: \"SELECT value FROM metrics WHERE kpi = 'kpi_{i}'\","
            if source == "sql"
            else " source: push,"
        )
        lines.append(
            f"  - {{id: kpi_{i}, name: KPI {i}, owner: owner{i % 50}@example.com,"
            f" direction: {'lower_is_better' if lower else 'higher_is_better'},"
            f"{where} every: {every}m,"
            f" thresholds: {{yellow: {yellow:.3f}, red: {red:.3f}}},"
            " trend: {worsening_streak: 3}, for: 2, review: monthly}"
        )
    for start in range(0, len(values), PER_FILE):  # one file a team, as users split them
        chunk = lines[1 + start : 1 + start + PER_FILE]
        (rules_dir / f"kpis_{start // PER_FILE:03d}.yaml").write_text(
            "\n".join(["kpis:", *chunk]) + "\n"
        )


def child(args: argparse.Namespace) -> None:
    """The measurement itself, in a fresh process."""
    if args.tracemalloc:
        tracemalloc.start(args.frames)
    for name in [n for n in os.environ if n.startswith("KPIWATCH_")]:
        del os.environ[name]  # the settings are this bench's, not the shell's
    print(f"{'point':<34} {'RSS MiB':>8} {'cycle s':>8}  notes", flush=True)
    print(f"{'interpreter':<34} {rss_mib():>8.1f}", flush=True)

    import structlog

    from kpiwatch import heap
    from kpiwatch.config.settings import Settings
    from kpiwatch.model import Observation
    from kpiwatch.runtime.pruning import prune_history
    from kpiwatch.testing import FixedClock

    if args.objects:
        from kpiwatch.config.loader import load_rules
        from kpiwatch.runtime.runner import Runner
        from kpiwatch.runtime.workspace import build_workspace
        from kpiwatch.store.repository import Store
    else:  # what `kpiwatch daemon` has imported when it builds the App
        import kpiwatch.cli
        import kpiwatch.runtime.daemon  # noqa: F401
        from kpiwatch.runtime.app import App
        from kpiwatch.web.app import create_app
        from kpiwatch.web.server import WebServer

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    what = "runner, workspace, store" if args.objects else "kpiwatch.runtime.app + web"
    print(f"{'kpiwatch imported':<34} {rss_mib():>8.1f}           {what}", flush=True)

    rng = random.Random(11)
    with tempfile.TemporaryDirectory(prefix="kpiwatch-mem-") as tmp:
        root = Path(tmp)
        os.chdir(root)  # no stray .env is read
        warehouse = root / "warehouse.db"
        values = make_warehouse(warehouse, args.kpis, rng)
        rules_dir = root / "rules"
        rules_dir.mkdir()
        write_rules(rules_dir, warehouse, values, args.every, args.source)
        url = args.database_url or f"sqlite:///{root / 'state.db'}"
        settings = Settings(database_url=url, rules_dir=rules_dir, max_workers=WORKERS,
                            http_host="127.0.0.1", http_port=0,
                            retention=args.retention or "off")  # fmt: skip
        clock = FixedClock(START)
        if args.warm_cache:  # a restart: an earlier start (here `check`) cached the rules
            env = {**os.environ, "KPIWATCH_RULES_DIR": str(rules_dir)}
            subprocess.run([sys.executable, "-m", "kpiwatch", "check"], env=env, check=True,
                           stdout=subprocess.DEVNULL, timeout=600)  # fmt: skip
        if not args.first_start:  # a restart: another process created the schema
            migrate = f"from kpiwatch.store.repository import Store; Store.open({url!r}).close()"
            subprocess.run([sys.executable, "-c", migrate], check=True)
        t0 = time.perf_counter()
        if args.objects:
            loaded = load_rules(rules_dir)
            store = Store.open(url)
            workspace = build_workspace(loaded, settings, store.latest, frozenset())
            runner = Runner(store, clock, workspace, tz=ZoneInfo("UTC"),
                            review_time=dtime(9, 0), max_workers=WORKERS)  # fmt: skip
            deliver = None
            scrape = None
        else:
            app = App(settings, clock)
            store, runner = app.store, app.runner
            # the daemon's HTTP server on its thread, as App.start() runs it (the scheduler
            # is left out: its jobs would evaluate on the wall clock, not this bench's)
            web = WebServer(create_app(app.web_context()), settings.http_host, 0)
            web.start()
            deliver = None if args.no_deliver else app._deliver  # the scheduler's outbox job
            scrape = None if args.no_scrape else web.url
        gc.collect()
        load_s = time.perf_counter() - t0
        start_rss = rss_mib()
        print(f"{'started (rules loaded, wired)':<34} {start_rss:>8.1f} {load_s:>8.1f}"
              f"  {args.kpis:,} KPIs; traced {traced_mib()}", flush=True)  # fmt: skip
        cycles = args.cycles or args.hours * 60 // args.every
        mark = min(args.mark or 100, cycles) if args.mark or cycles >= 500 else cycles // 5
        mark = max(1, mark)
        mark_rss = float("nan")
        mark_engine = ""
        marked: Marked | None = None
        durations: list[float] = []
        pruned = prune_s = 0.0
        for c in range(1, cycles + 1):
            if args.source == "push":  # what the push API would have stored since
                store.add_observations(
                    Observation(f"kpi_{i}", clock.now(), v) for i, v in enumerate(values)
                )
            t0 = time.perf_counter()
            stats = runner.evaluate_all()
            durations.append(time.perf_counter() - t0)
            if stats.failed or stats.evaluated != args.kpis:
                raise SystemExit(f"cycle {c} went wrong: {stats}")
            if deliver is not None:
                deliver()
            if scrape is not None:  # Prometheus scrapes /metrics; someone opens the board
                get(scrape + "/metrics")
                if c == cycles:
                    get(scrape + "/")
            if settings.retention is not None and c * args.every % 60 == 0:
                t1 = time.perf_counter()  # the daemon's hourly prune, on this bench's clock
                kept = settings.retention
                rows = prune_history(store, runner.workspace.rules, kept, clock.now())
                pruned += sum(rows.values())
                prune_s = time.perf_counter() - t1
            gc.collect()
            if args.trim:  # what the daemon's minutely housekeeping job does
                heap.trim()
            if c == mark:
                mark_rss = rss_mib()
                mark_engine = engine_note(store.engine)
                if args.tracemalloc:
                    marked = Marked.take()
            if c == 1 or c % 10 == 0 or c in (cycles, mark):
                mix = ", ".join(f"{v} {k}" for k, v in sorted(stats.by_status.items()))
                mix += state_size(url)
                if settings.retention is not None:
                    mix += f"; pruned {pruned:,.0f} rows so far, the last prune {prune_s:.2f} s"
                label = f"after cycle {c} ({c * args.every} min simulated)"
                print(f"{label:<34} {rss_mib():>8.1f} {durations[-1]:>8.1f}  {mix}", flush=True)
            clock.advance(timedelta(minutes=args.every))
            nudge_warehouse(warehouse, values, rng)
        end_rss = rss_mib()
        size = state_size(url) + table_rows(store.engine)
        threads = len(os.listdir("/proc/self/task"))
        print(f"store engine: {engine_note(store.engine)}"
              + (f" (at cycle {mark}: {mark_engine})" if cycles > mark else ""))  # fmt: skip
        print(f"\nend: RSS {end_rss:.1f} MiB (peak VmHWM {hwm_mib():.1f} MiB), growth over"
              f" {cycles} cycles {end_rss - start_rss:+.1f} MiB{size}; {threads} threads;"
              f" MALLOC_ARENA_MAX={os.environ.get('MALLOC_ARENA_MAX', '(unset)')}")  # fmt: skip
        if cycles > mark:
            print(f"plateau: RSS at cycle {mark} {mark_rss:.1f} MiB, at cycle {cycles}"
                  f" {end_rss:.1f} MiB: {end_rss / mark_rss:.3f}x ({end_rss - mark_rss:+.1f} MiB;"
                  " target: within 5 %)")  # fmt: skip
        if args.tracemalloc:
            current, peak = tracemalloc.get_traced_memory()
            print(f"tracemalloc: current {current / 2**20:.1f} MiB, peak {peak / 2**20:.1f} MiB"
                  " (Python objects only)")  # fmt: skip
            if marked is not None and cycles > mark:
                marked.report_growth(f"cycle {mark} -> cycle {cycles}")
            report_top(tracemalloc.take_snapshot())
        print(f"baseline: Prometheus ~{PROMETHEUS_MIB:.0f} MiB for the same rules"
              f" (quoted); kpiwatch/Prometheus = {end_rss / PROMETHEUS_MIB:.2f}"
              f"; median cycle {sorted(durations)[len(durations) // 2]:.1f} s")  # fmt: skip
        if args.objects:
            workspace.close()
            store.close()
        else:
            web.stop()
            app.close()


def state_size(url: str) -> str:
    """"; state.db on disk N MiB" (its WAL included) for a SQLite store, else ""."""
    if not url.startswith("sqlite:///"):
        return ""
    state = Path(url[len("sqlite:///") :])
    on_disk = sum(p.stat().st_size for p in state.parent.glob(state.name + "*"))
    return f"; state.db on disk {on_disk / 2**20:.1f} MiB"


def table_rows(engine: Any) -> str:
    """"; rows: observations N, ..." of the tables that grow with time."""
    import sqlalchemy as sa

    counts = []
    with engine.connect() as connection:
        for table in ("observations", "status_changes", "events", "outbox"):
            n = connection.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
            counts.append(f"{table} {n:,}")
    return "; rows: " + ", ".join(counts)


def get(url: str) -> None:
    """One GET the way a scraper or a browser does it; any non-200 stops the bench."""
    with urllib.request.urlopen(url, timeout=120) as response:
        response.read()
        if response.status != 200:
            raise SystemExit(f"GET {url}: {response.status}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--kpis", type=int, default=10_000)
    parser.add_argument("--every", type=int, default=5, help="poll interval, minutes")
    parser.add_argument("--hours", type=int, default=1, help="simulated hours")
    parser.add_argument(
        "--database-url",
        default=None,
        help="state store (an empty database); default a SQLite file",
    )
    parser.add_argument(
        "--source",
        choices=("push", "sql"),
        default="push",
        help="push: values stored each cycle as the push API does (fast);"
        " sql: one query per KPI on a SQLite warehouse (slow: ~10x)",
    )
    parser.add_argument(
        "--cycles", type=int, default=None, help="cycles to run (default: --hours worth)"
    )
    parser.add_argument(
        "--mark",
        type=int,
        default=None,
        help="the cycle the end is compared with (RSS ratio; tracemalloc growth);"
        " default 100, or a fifth of the cycles when there are fewer than 500",
    )
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument(
        "--frames", type=int, default=1, help="--tracemalloc: frames kept per allocation"
    )
    parser.add_argument(
        "--objects",
        action="store_true",
        help="the older, narrower measure: only the store, workspace and Runner"
        " (no App, channels, outbox, metrics or web server)",
    )
    parser.add_argument(
        "--first-start",
        action="store_true",
        help="the state database is migrated by the measured process (Alembic stays"
        " loaded); by default another process migrated it first, as on a restart",
    )
    parser.add_argument(
        "--warm-cache",
        action="store_true",
        help="the rules cache holds the rules (`kpiwatch check` ran first), as on a"
        " restart; by default the rules are new, so a SQL source's queries are parsed"
        " (and sqlglot loaded) in the measured process",
    )
    parser.add_argument(
        "--no-deliver",
        action="store_true",
        help="skip the outbox delivery after each cycle (to split the cost)",
    )
    parser.add_argument(
        "--no-scrape",
        action="store_true",
        help="skip GET /metrics after each cycle and GET / at the end",
    )
    parser.add_argument(
        "--trim",
        action="store_true",
        help="give the C heap's free pages back after each cycle (kpiwatch.heap.trim), as"
        " the daemon's heartbeat does once a minute",
    )
    parser.add_argument(
        "--retention",
        metavar="SPAN",
        help="KPIWATCH_RETENTION (2h, 30d); the daemon's hourly prune runs every simulated"
        " hour, and the state database's size is shown (default: off, every point kept)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return
    span = f"{args.cycles} cycles" if args.cycles else f"{args.hours} h simulated"
    print(f"{args.kpis:,} KPIs, every {args.every}m, {span},"
          f" Python {sys.version.split()[0]}, fresh process:\n", flush=True)  # fmt: skip
    argv_child = [sys.executable, os.path.abspath(__file__), *(argv or sys.argv[1:]), "--child"]
    raise SystemExit(subprocess.call(argv_child))


if __name__ == "__main__":
    main()

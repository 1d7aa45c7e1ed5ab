"""Benchmark of the status board (``GET /``) and ``GET /api/v1/kpis`` with 10,000 KPIs.

Run:  .venv/bin/python bench/bench_board.py [--kpis 10000] [--rounds 50] [--points 30]
      [--profile]

Builds what ``bench_metrics.py`` builds (the same 10,000 rules in a temporary
directory: 20 teams, 37 owners, thresholds, targets, awkward names; a state for
97 % of the KPIs written straight into the store, about 70 % green, 15 % yellow,
10 % red, 5 % unknown, half of those blind; source health for 20 sources, one of
them down) plus ``--points`` daily observations per KPI (the sparklines), then
serves the real app (``kpiwatch.web.app.create_app`` on
``kpiwatch.web.server.WebServer``, port 0, in this process) and times requests
with a keep-alive httpx client, body read in full:

* ``/``: the board's first page (the summary, 50 KPIs that need attention first);
* ``/?status=red``: the first page of the red KPIs;
* ``/?q=number 12``: a search (id or name);
* ``/api/v1/kpis?limit=100``: the API's first page;
* ``/api/v1/kpis?limit=100&cursor=…``: a page from the middle of the walk;
* ``/api/v1/kpis``: every KPI at once, as a client that knows no pages asks.

After ``--warmup`` untimed requests each (3), ``--rounds`` requests per row; prints the
median and p95 in ms. ``--profile`` prints a cProfile of 20 first pages of the
board built in-process (no HTTP).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import time as dtime
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import structlog
from bench_metrics import NOW, database, fill, kpi_id, percentile, write_rules
from prometheus_client import CollectorRegistry

from kpiwatch.config.loader import load_rules
from kpiwatch.config.settings import Settings
from kpiwatch.runtime.runner import Runner
from kpiwatch.runtime.workspace import build_workspace
from kpiwatch.store.repository import Store
from kpiwatch.store.schema import observations as observations_t
from kpiwatch.testing import FixedClock
from kpiwatch.web.app import create_app
from kpiwatch.web.context import WebContext
from kpiwatch.web.server import WebServer

TARGET_MS = 300.0  # the p95 for the board's first page and the API page


def add_history(store: Store, n: int, points: int) -> None:
    """``points`` daily observations per KPI, written in one transaction."""
    batch = []
    with store.engine.begin() as connection:
        for i in range(n):
            for day in range(points):
                value = 50 + (i * 7919 + day * 104729) % 700 / 10
                at = NOW - timedelta(days=points - day, minutes=5)
                batch.append({"kpi_id": kpi_id(i), "observed_at": at, "value": value})
            if len(batch) >= 50_000:
                connection.execute(observations_t.insert(), batch)
                batch = []
        if batch:
            connection.execute(observations_t.insert(), batch)


def middle_cursor(client: httpx.Client, pages: int) -> str | None:
    """The cursor of the page ``pages`` pages into the walk (None: no cursor answered)."""
    url = "/api/v1/kpis?limit=100"
    cursor = None
    for _ in range(pages):
        response = client.get(url)
        response.raise_for_status()
        cursor = response.headers.get("X-Next-Cursor")
        if cursor is None:
            return None
        url = f"/api/v1/kpis?limit=100&cursor={cursor}"
    return cursor


def timed_gets(
    client: httpx.Client, path: str, rounds: int, warmup: int
) -> tuple[list[float], int]:
    """Seconds per request (after ``warmup`` requests), and the size of the last body."""
    size = 0
    for _ in range(warmup):
        client.get(path).raise_for_status()
    took = []
    for _ in range(rounds):
        gc.collect()
        start = time.perf_counter()
        response = client.get(path)
        body = response.content
        took.append(time.perf_counter() - start)
        response.raise_for_status()
        size = len(body)
    return took, size


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--kpis", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=50, help="requests per row")
    parser.add_argument("--points", type=int, default=30, help="observations per KPI")
    parser.add_argument("--warmup", type=int, default=3, help="untimed requests per row")
    parser.add_argument("--profile", action="store_true", help="cProfile 20 board requests")
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # errors only

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        write_rules(Path(tmp), args.kpis)
        loaded = load_rules(Path(tmp))
    settings = Settings(timezone="UTC")
    with database(None) as url, Store.open(url) as store:
        workspace = build_workspace(loaded, settings, store.latest, frozenset())
        fill(store, args.kpis)
        add_history(store, args.kpis, args.points)
        clock = FixedClock(NOW)
        runner = Runner(store, clock, workspace, tz=ZoneInfo("UTC"), review_time=dtime(9, 0))
        rules = workspace.rules
        ctx = WebContext(store=store, rules=lambda: rules, settings=settings, clock=clock,
                         runner=runner, registry=CollectorRegistry(),
                         heartbeat=time.monotonic)  # fmt: skip
        app = create_app(ctx)
        server = WebServer(app, "127.0.0.1", 0)
        server.start()
        client = httpx.Client(base_url=server.url, timeout=120)
        load = os.getloadavg()
        print(
            f"{args.kpis} KPIs, {args.points} observations each, on SQLite; set up in "
            f"{time.perf_counter() - started:.1f} s; load average {load[0]:.2f}"
        )
        try:
            paths = ["/", "/?status=red", "/?q=number+12", "/api/v1/kpis?limit=100"]
            cursor = middle_cursor(client, args.kpis // 200)
            if cursor is not None:
                paths.append(f"/api/v1/kpis?limit=100&cursor={cursor}")
            paths.append("/api/v1/kpis")  # every KPI, as clients without pages ask
            print(f"{'GET':48} {'median ms':>9} {'p95 ms':>8} {'body kB':>8}")
            for path in paths:
                took, size = timed_gets(client, path, args.rounds, args.warmup)
                p50, p95 = statistics.median(took) * 1000, percentile(took, 95) * 1000
                label = path if len(path) < 48 else path[:44] + "..."
                print(f"{label:48} {p50:9.1f} {p95:8.1f} {size / 1000:8.1f}")
            print(f"target: p95 < {TARGET_MS:.0f} ms for / and /api/v1/kpis?limit=100; "
                  f"load average now {os.getloadavg()[0]:.2f}")  # fmt: skip
            parts(ctx, max(5, args.rounds // 3))
            if args.profile:
                profile(ctx)
        finally:
            client.close()
            server.stop()
            workspace.close()


def parts(ctx: WebContext, rounds: int) -> None:
    """The first page of the board in parts, in this process (median ms)."""
    from starlette.datastructures import QueryParams

    from kpiwatch.web.listing import LazySnapshots, board_page
    from kpiwatch.web.pages import SPARK_POINTS, _board_html, board_query

    snapshots = LazySnapshots(ctx.store)
    rules = ctx.rules()
    query = board_query(QueryParams(""), rules)
    shown = snapshots.read()
    now = ctx.clock.now()

    def order() -> object:
        return board_page(rules, shown, now, query.filters, page=1, size=query.size)

    ids = [kpi.id for _, kpi in board_page(rules, shown, now, query.filters, page=1,
                                           size=query.size).kpis]  # fmt: skip
    steps = [
        ("lean state snapshot (StateSnapshots.read)", snapshots.read),
        ("order, filters, summary (listing.board_page)", order),
        ("the page's states, points, acks (notice_context)",
         lambda: ctx.store.notice_context(ids, points=SPARK_POINTS, annotations_since=None)),
        ("source health", ctx.store.source_health),
        ("the whole first page (pages._board_html)",
         lambda: _board_html(ctx, snapshots, query)),
    ]  # fmt: skip
    print(f"\n{'in-process parts of GET /':48} {'median ms':>9}")
    for label, action in steps:
        action()
        took = []
        for _ in range(rounds):
            start = time.perf_counter()
            action()
            took.append(time.perf_counter() - start)
        print(f"{label:48} {statistics.median(took) * 1000:9.1f}")


def profile(ctx: WebContext) -> None:
    """The board's first page built 20 times in this thread (the server's threads are
    out of cProfile's sight)."""
    from starlette.datastructures import QueryParams

    from kpiwatch.web.listing import LazySnapshots
    from kpiwatch.web.pages import _board_html, board_query

    snapshots = LazySnapshots(ctx.store)
    query = board_query(QueryParams(""), ctx.rules())
    _board_html(ctx, snapshots, query)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(20):
        _board_html(ctx, snapshots, query)
    profiler.disable()
    pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()

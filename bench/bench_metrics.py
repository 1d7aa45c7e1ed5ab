"""Benchmark of ``GET /metrics`` with 10,000 KPIs, through the real app and HTTP server.

Run:  .venv/bin/python bench/bench_metrics.py [--kpis 10000] [--rounds 30] [--profile]
      [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/test]

Builds a state store (SQLite in a temporary directory, or with ``--database-url``
a throwaway PostgreSQL database created next to the one named, and dropped)
holding a state for 97 % of the KPIs (mixed statuses, about one in ten escalated,
values, evaluation times), source health for 20 sources and some pending outbox
messages; and the matching rules: thresholds, fixed targets, glide paths,
targets with a date but no baseline, 20 teams, some KPIs without a team, awkward
names (quotes, backslashes, newlines, non-ASCII). Then serves
``kpiwatch.web.app.create_app`` on ``kpiwatch.web.server.WebServer`` (port 0)
and times ``GET /metrics`` with an httpx client (keep-alive), body read in full:

* **steady**: nothing changed since the previous scrape;
* **100 changed**: 100 states rewritten in the store (new value, time, status)
  before each scrape, as by a replica's evaluations (untimed);
* **after reload**: a new ``RuleSet`` object before each scrape (untimed), so
  every per-rule-set cache starts cold;

each in the Prometheus text format 0.0.4 (no Accept header) and in OpenMetrics
(the Accept header Prometheus 2 sends). Prints the median and p95 of
``--rounds`` scrapes per row, and the parts in-process (median): the lean state
read the exporter uses, ``Store.states()`` for comparison, the rendering, and
the registry path (``generate_latest``, what the Pushgateway push serialises)
and, as the scrape before this exporter's fast path, ``Store.states()`` followed
by the registry path (which overstates it by one lean state read).
``--profile`` prints a cProfile of 20 steady scrapes (in-process, no HTTP).
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import gc
import pstats
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import sqlalchemy as sa
import structlog
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import choose_encoder

from kpiwatch.config.loader import load_rules
from kpiwatch.config.rules import RuleSet
from kpiwatch.config.settings import Settings
from kpiwatch.model import (
    DataProblem,
    Delivery,
    Event,
    EventKind,
    KpiState,
    ReviewCadence,
    Status,
)
from kpiwatch.runtime.runner import Runner
from kpiwatch.runtime.workspace import build_workspace
from kpiwatch.store import rows
from kpiwatch.store.repository import Store
from kpiwatch.store.schema import kpi_state as state_t
from kpiwatch.store.snapshot import StateSnapshots
from kpiwatch.testing import FixedClock
from kpiwatch.web.app import create_app
from kpiwatch.web.context import WebContext
from kpiwatch.web.exporter import Metrics, build_registry, render
from kpiwatch.web.server import WebServer

NOW = datetime(2026, 6, 15, 9, 30, tzinfo=UTC)
SOURCES = 20
TEAMS = 20
CHANGED = 100  # states rewritten before each "100 changed" scrape
PROMETHEUS_ACCEPT = (  # what Prometheus 2.x sends; choose_encoder picks OpenMetrics 1.0.0
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
FORMATS = {"text 0.0.4": "", "OpenMetrics": PROMETHEUS_ACCEPT}
AWKWARD = ('Say "hi"', "back\\slash", "two\nlines", "Umsatz (€) – Größe", "日本の売上")


# ---------------------------------------------------------------- data


def kpi_id(i: int) -> str:
    return f"kpi_{i:05d}"


def write_rules(rules_dir: Path, n: int) -> None:
    """sources.yaml, then the KPIs in files of 1,000 (as a team might split them)."""
    lines = ["sources:"]
    lines += [f'  src{s}: {{type: sql, url: "sqlite://"}}' for s in range(SOURCES)]
    lines += ["teams:"] + [f"  team{t}: {{}}" for t in range(TEAMS)]
    (rules_dir / "sources.yaml").write_text("\n".join(lines) + "\n")
    for first in range(0, n, 1000):
        kpis = ["kpis:"]
        for i in range(first, min(n, first + 1000)):
            kpis += kpi_yaml(i)
        (rules_dir / f"kpis_{first:05d}.yaml").write_text("\n".join(kpis) + "\n")


def kpi_yaml(i: int) -> list[str]:
    name = f"KPI {i} {AWKWARD[i // 50 % len(AWKWARD)]}" if i % 50 == 0 else f"KPI number {i}"
    lower = i % 2 == 1
    yellow, red = (80, 90) if lower else (80, 60)
    lines = [
        f"  - id: {kpi_id(i)}",
        f"    name: {_quoted(name)}",
        f"    owner: owner{i % 37}@example.com",
        f"    direction: {'lower_is_better' if lower else 'higher_is_better'}",
        f"    source: src{i % SOURCES}",
        "    query: SELECT 1",
    ]
    if i % 8:
        lines.append(f"    team: team{i % TEAMS}")
    if i % 3 == 0:
        lines.append('    unit: "%"')
    if i % 5 == 4:
        lines.append(f"    thresholds: {{red: {red}}}")
    elif i % 5:
        lines.append(f"    thresholds: {{yellow: {yellow}, red: {red}}}")
    target = (
        "{value: 120, by: 2026-12-31, baseline: 50, baseline_date: 2026-01-01}",  # glide
        "{value: 100}",
        "{value: 110, by: 2027-03-31}",  # no baseline: the final target
        None,
    )[i % 4]
    if target:
        lines.append(f"    target: {target}")
    return lines


def _quoted(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


STATUS_CYCLE = [Status.GREEN] * 14 + [Status.YELLOW] * 3 + [Status.RED] * 2 + [Status.UNKNOWN]


def state_of(i: int, at: datetime, salt: int = 0) -> KpiState:
    status = STATUS_CYCLE[(i + salt) % len(STATUS_CYCLE)]
    escalated = status is Status.RED or (status is Status.YELLOW and i % 3 == 0)
    value = round(50 + (i * 7919 + salt) % 700 / 10, 3)
    return KpiState(
        kpi_id=kpi_id(i),
        status=status,
        since=at - timedelta(days=3),
        review=ReviewCadence.WEEKLY if escalated else ReviewCadence.MONTHLY,
        value=None if status is Status.UNKNOWN and i % 2 else value,
        observed_at=at - timedelta(minutes=5),
        reasons=() if status is Status.GREEN else ("value 71.2 is below the yellow threshold 80",),
        last_evaluated=at - timedelta(seconds=i % 3600, microseconds=i),
        escalated_since=at - timedelta(days=1) if escalated else None,
        next_review=at + timedelta(days=7),
        error="timeout" if status is Status.UNKNOWN else None,
        # half the unknown ones are blind: their last value and verdict kept, not exported
        verdict=Status.GREEN if status is Status.UNKNOWN and not i % 2 else None,
        data_problem=DataProblem(at - timedelta(hours=1), "timeout", "source", "src0")
        if status is Status.UNKNOWN and not i % 2
        else None,
    )


def fill(store: Store, n: int) -> None:
    with store.engine.begin() as connection:
        connection.execute(
            state_t.insert(), [rows.state_row(state_of(i, NOW)) for i in range(n) if i % 33 != 32]
        )
    for s in range(SOURCES):
        store.set_source_health(f"src{s}", up=s != 7, now=NOW, error=None if s != 7 else "refused")
    for i in range(0, n, n // 60 or 1):  # ~60 events, each queued on two channels
        event = Event(EventKind.STATUS_CHANGED, f"{kpi_id(i)}:bench", NOW, kpi_id=kpi_id(i))
        deliveries = [Delivery("email", "a@example.com"), Delivery("slack", "#kpis")]
        store.save_state(state_of(i, NOW), [event], {event.key: deliveries})


def change_states(store: Store, n: int, round_no: int) -> None:
    """Rewrite CHANGED states, as evaluations (of this or another replica) would."""
    at = NOW + timedelta(seconds=15 * (round_no + 1))
    picked = [(round_no * CHANGED + k) * 97 % n for k in range(CHANGED)]
    new = [rows.state_row(state_of(i, at, salt=round_no + 1)) for i in picked if i % 33 != 32]
    with store.engine.begin() as connection:
        connection.execute(
            state_t.update()
            .where(state_t.c.kpi_id == sa.bindparam("id"))
            .values({c: sa.bindparam(c) for c in ("status", "value", "last_evaluated",
                                                   "escalated_since", "review")}),
            [{**row, "id": row["kpi_id"]} for row in new],
        )  # fmt: skip


# ---------------------------------------------------------------- databases


@contextmanager
def database(url: str | None) -> Iterator[str]:
    """SQLite in a temporary directory, or a throwaway database beside ``url``'s."""
    if url is None:
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{tmp}/state.db"
        return
    name = f"bench_kpiwatch_metrics_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f"CREATE DATABASE {name}"))
    try:
        yield sa.make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


# ---------------------------------------------------------------- timing


def percentile(samples: Sequence[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def timed(rounds: int, before: Callable[[int], None], action: Callable[[], object]) -> list[float]:
    took = []
    for r in range(rounds):
        before(r)
        gc.collect()
        start = time.perf_counter()
        action()
        took.append(time.perf_counter() - start)
    return took


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f}"


class Scraper:
    """``GET /metrics`` with a keep-alive httpx client, timed to the last byte read.

    In this process: the client's own parsing counts too, and shares the GIL with the
    server thread (curl's ``time_total`` against the same server is a few ms lower).
    """

    def __init__(self, url: str) -> None:
        self._client = httpx.Client(base_url=url, timeout=60)

    def body(self, accept: str) -> bytes:
        response = self._client.get("/metrics", headers={"Accept": accept} if accept else {})
        response.raise_for_status()
        return response.content

    def get(self, accept: str) -> float:
        start = time.perf_counter()
        self.body(accept)
        return time.perf_counter() - start

    def close(self) -> None:
        self._client.close()


def scrape_before(store: Store, registry: CollectorRegistry) -> bytes:
    store.states()
    return generate_latest(registry)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--kpis", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=30, help="scrapes per row")
    parser.add_argument("--database-url", help="PostgreSQL server URL (a database is created)")
    parser.add_argument("--profile", action="store_true", help="cProfile 20 steady scrapes")
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # errors only

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        write_rules(Path(tmp), args.kpis)
        loaded = load_rules(Path(tmp))
    settings = Settings(timezone="UTC")
    with database(args.database_url) as url, Store.open(url) as store:
        workspace = build_workspace(loaded, settings, store.latest, frozenset({"email", "slack"}))
        fill(store, args.kpis)
        clock = FixedClock(NOW)
        tz = ZoneInfo("UTC")
        runner = Runner(store, clock, workspace, tz=tz, review_time=dtime(9, 0))
        metrics = Metrics(["email", "slack"])
        # two equal rule sets of distinct objects, as two loads of the same files give
        generations = [workspace.rules, copy.deepcopy(workspace.rules)]
        rules = [generations[0]]
        registry = build_registry(store, lambda: rules[0], metrics, clock=clock, tz=tz)
        ctx = WebContext(store=store, rules=lambda: rules[0], settings=settings, clock=clock,
                         runner=runner, registry=registry, heartbeat=time.monotonic)  # fmt: skip
        server = WebServer(create_app(ctx), "127.0.0.1", 0)
        server.start()
        scraper = Scraper(server.url)
        backend = sa.make_url(url).get_backend_name()
        print(f"{args.kpis} KPIs on {backend}, set up in {time.perf_counter() - started:.1f} s")
        try:
            report(args, scraper, store, registry, rules, generations)
        finally:
            scraper.close()
            server.stop()
            workspace.close()


def report(
    args: argparse.Namespace,
    scraper: Scraper,
    store: Store,
    registry: CollectorRegistry,
    rules: list[RuleSet],
    generations: list[RuleSet],
) -> None:
    body = scraper.body("")
    lines = body.count(b"\n")
    print(f"body: {len(body) / 1e6:.1f} MB, {lines} lines (text 0.0.4)\n")
    print(f"{'GET /metrics':42} {'median ms':>9} {'p95 ms':>8}")

    def nothing(_: int) -> None:
        pass

    def reload(round_no: int) -> None:
        rules[0] = generations[(round_no + 1) % 2]  # not the rules of the previous scrape

    changes = iter(range(10**6))
    scenarios = [
        ("steady", nothing),
        (f"{CHANGED} changed", lambda _: change_states(store, args.kpis, next(changes))),
        ("after reload", reload),
    ]
    for scenario, before in scenarios:
        for fmt, accept in FORMATS.items():
            for r in range(3):  # warm up: caches filled, connections pooled
                before(r)
                scraper.get(accept)
            took = []
            for r in range(args.rounds):
                before(r)
                gc.collect()
                took.append(scraper.get(accept))
            label = f"{scenario}, {fmt}"
            print(f"{label:42} {ms(statistics.median(took))} {ms(percentile(took, 95))}")

    snapshots = StateSnapshots(store)
    text_encoder = choose_encoder("")[0]
    parts: list[tuple[str, Callable[[], object]]] = [
        ("lean state read (StateSnapshots.read)", snapshots.read),
        ("Store.states() (full KpiState rows)", store.states),
        ("render, text 0.0.4 (exporter.render)", lambda: render(registry, text_encoder)),
        ("registry path: generate_latest()", lambda: generate_latest(registry)),
        # what a scrape did before render() and StateSnapshots (plus one lean read)
        ("before: Store.states() + generate_latest()", lambda: scrape_before(store, registry)),
    ]
    print(f"\n{'in-process parts, steady':42} {'median ms':>9} {'p95 ms':>8}")
    for label, action in parts:
        action()
        took = timed(max(5, args.rounds // 3), nothing, action)
        print(f"{label:42} {ms(statistics.median(took))} {ms(percentile(took, 95))}")

    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(20):
            render(registry, text_encoder)
        profiler.disable()
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    main()

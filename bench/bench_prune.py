"""The retention's prune (``KPIWATCH_RETENTION``): how long the daemon's hourly pass and a
first pass over a grown table take, on SQLite and PostgreSQL.

Run:  .venv/bin/python bench/bench_prune.py [--kpis 10000] [--points 100]
      [--store sqlite|postgres|mariadb|all]
      [--admin-url postgresql+psycopg://postgres@127.0.0.1/postgres]
      [--mariadb-url mysql+pymysql://root@127.0.0.1:3306/test]

Fills a fresh state store with ``--points`` observations 5 minutes apart for each of
``--kpis`` threshold KPIs (the rules are built in memory: push KPIs), then runs
:func:`kpiwatch.runtime.pruning.prune_history` as the daemon does:

1. *catch-up*: the first pass after the retention is set, deleting all but the last
   hour's 12 points of every KPI (what a daemon that ran without a retention meets);
2. *hourly*: twelve new points per KPI later (an hour), one pass deleting the hour
   that fell out of the retention;
3. *nothing to do*: the same pass again.

It prints rows deleted, seconds and rows a second for each, and the table's size on
disk before and after (SQLite: the file and its WAL; PostgreSQL:
``pg_total_relation_size``; MariaDB: the table's data and index length).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from kpiwatch.config.loader import load_rule_text
from kpiwatch.config.rules import RuleSet
from kpiwatch.model import Observation
from kpiwatch.runtime.pruning import prune_history
from kpiwatch.store.repository import Store

START = datetime(2026, 6, 1, tzinfo=UTC)
STEP = timedelta(minutes=5)
STATE_DB = "kpiwatch_bench_prune"


def rules_of(n: int) -> RuleSet:
    kpis = "".join(
        f"  - {{id: kpi_{i}, name: KPI {i}, owner: ops@example.com, "
        "direction: higher_is_better, source: push, thresholds: {red: 10}}\n"
        for i in range(n)
    )
    return load_rule_text("kpis:\n" + kpis).rules


def fill(store: Store, n: int, points: range) -> None:
    for p in points:  # one point of every KPI a call: ~10,000 rows a transaction
        at = START + STEP * p
        store.add_observations(Observation(f"kpi_{i}", at, 50.0) for i in range(n))


def size_mib(store: Store, url: str) -> float:
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])
        return sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 2**20
    with store.engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            query = "SELECT pg_total_relation_size('observations')"
        else:  # InnoDB's estimate: ANALYZE first
            connection.execute(sa.text("ANALYZE TABLE observations"))
            query = (
                "SELECT data_length + index_length FROM information_schema.tables"
                " WHERE table_schema = DATABASE() AND table_name = 'observations'"
            )
        size = connection.execute(sa.text(query))
        return float(size.scalar_one()) / 2**20


def run(url: str, kpis: int, points: int) -> None:
    store = Store.open(url)
    rules = rules_of(kpis)
    retention = timedelta(hours=1)
    try:
        t0 = time.perf_counter()
        fill(store, kpis, range(points))
        print(f"  filled {kpis * points:,} rows in {time.perf_counter() - t0:.1f} s;"
              f" {size_mib(store, url):.1f} MiB on disk")  # fmt: skip
        now = START + STEP * (points - 1)
        timed(store, url, rules, retention, now, "catch-up")
        fill(store, kpis, range(points, points + 12))
        later = now + timedelta(hours=1)
        timed(store, url, rules, retention, later, "hourly")
        timed(store, url, rules, retention, later, "nothing to do")
    finally:
        store.close()


def timed(
    store: Store, url: str, rules: RuleSet, retention: timedelta, now: datetime, name: str
) -> None:
    t0 = time.perf_counter()
    rows = prune_history(store, rules, retention, now)["observations"]
    seconds = time.perf_counter() - t0
    rate = f"{rows / seconds:,.0f} rows/s" if rows else ""
    print(f"  {name:<14} {rows:>10,} rows {seconds:>7.2f} s  {rate:>16}"
          f"  {size_mib(store, url):.1f} MiB on disk after")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kpis", type=int, default=10_000)
    parser.add_argument("--points", type=int, default=100)
    parser.add_argument("--store", choices=("sqlite", "postgres", "mariadb", "all"), default="all")
    parser.add_argument(
        "--admin-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--mariadb-url", default="mysql+pymysql://root@127.0.0.1:3306/test")
    args = parser.parse_args(argv)
    print(f"{args.kpis:,} KPIs x {args.points} points 5 minutes apart, retention 1h\n")
    if args.store in ("sqlite", "all"):
        with tempfile.TemporaryDirectory(prefix="kpiwatch-prune-") as tmp:
            print("SQLite:")
            run(f"sqlite:///{tmp}/state.db", args.kpis, args.points)
    servers = []
    if args.store in ("postgres", "all"):
        servers.append(("PostgreSQL", args.admin_url, " WITH (FORCE)"))
    if args.store in ("mariadb", "all"):
        servers.append(("MariaDB", args.mariadb_url, ""))
    for name, admin_url, force in servers:
        admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(sa.text(f"DROP DATABASE IF EXISTS {STATE_DB}{force}"))
            connection.execute(sa.text(f"CREATE DATABASE {STATE_DB}"))
        try:
            print(f"{name}:")
            url = admin.url.set(database=STATE_DB).render_as_string(hide_password=False)
            run(url, args.kpis, args.points)
        finally:
            with admin.connect() as connection:
                connection.execute(sa.text(f"DROP DATABASE IF EXISTS {STATE_DB}{force}"))
            admin.dispose()


if __name__ == "__main__":
    main()

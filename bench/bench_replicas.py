"""Replicas on one PostgreSQL: every due evaluation exactly once, the work spread,
nothing lost when one replica is killed mid-run.

Run:  .venv/bin/python bench/bench_replicas.py [--kpis 10000] [--every 60] [--minutes 10]
      [--replicas 3] [--kill-at 5] [--admin-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres]

Creates two throwaway PostgreSQL databases: the warehouse (one table, a row per
KPI) and the state store. Writes N SQL KPIs ``every: 60s`` (thresholds, a trend
rule) into a temporary rules directory and starts ``--replicas`` ``kpiwatch run``
processes on the one store, as replicas on separate hosts would run. After a
minute of warm-up it measures for ``--minutes``; at ``--kill-at`` minutes, three
seconds into a due minute (the replicas are evaluating), it SIGKILLs the last
replica and does not restart it.

Every evaluation of a SQL KPI stores its fetched value with the time of the
fetch, so the store's observations count the evaluations: per KPI and due
minute (the fetch time's minute), exactly one is right; none is a due time
missed, two or more is one done twice. A due time whose claim died with the
killed replica is taken over by another replica once the claim expires
(``KPIWATCH_LEASE_SECONDS``, 30 s here), together with the next due time: the
bench counts those separately. Each replica's share is its
``kpiwatch_evaluations_total`` (the killed one's from its last scrape).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import sqlalchemy as sa
from bench_sustained import counter, free_port, kpi_lines, rss_kib

STATE_DB = "bench_replicas_state"
WAREHOUSE_DB = "bench_replicas_wh"


def recreate(admin_url: str, name: str) -> str:
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        connection.execute(sa.text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return admin_url.rsplit("/", 1)[0] + "/" + name


def write_rules(rules: Path, warehouse_url: str, kpis: int, every: int) -> None:
    engine = sa.create_engine(warehouse_url)
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE readings (id int PRIMARY KEY, value float)"))
        connection.execute(sa.text("INSERT INTO readings SELECT n, 50 + n % 40 "
                                   f"FROM generate_series(0, {kpis - 1}) AS n"))  # fmt: skip
    engine.dispose()
    rules.mkdir()
    lines = ["sources:",
             f"  wh: {{type: sql, url: '{warehouse_url}', timeout: 30s, max_concurrency: 4,"
             " allow_privileged: true}",
             "kpis:"]  # fmt: skip
    lines.extend(kpi_lines(kpis, every))
    (rules / "kpis.yaml").write_text("\n".join(lines) + "\n")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kpis", type=int, default=10_000)
    parser.add_argument("--every", type=int, default=60)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--kill-at", type=float, default=5.0)
    parser.add_argument("--admin-url",
                        default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args(argv)

    state_url = recreate(args.admin_url, STATE_DB)
    warehouse_url = recreate(args.admin_url, WAREHOUSE_DB)
    with tempfile.TemporaryDirectory(prefix="kpiwatch-replicas-") as tmp:
        root = Path(tmp)
        write_rules(root / "rules", warehouse_url, args.kpis, args.every)
        replicas: list[tuple[subprocess.Popen[bytes], str, Path]] = []
        try:
            for n in range(args.replicas):
                port = free_port()
                env = {**{k: v for k, v in os.environ.items() if not k.startswith("KPIWATCH_")},
                       "KPIWATCH_DATABASE_URL": state_url,
                       "KPIWATCH_RULES_DIR": str(root / "rules"),
                       "KPIWATCH_HTTP_PORT": str(port), "KPIWATCH_LEASE_SECONDS": "30",
                       "KPIWATCH_LOG_FORMAT": "json", "MALLOC_ARENA_MAX": "2"}  # fmt: skip
                log_path = root / f"replica-{n}.log"
                process = subprocess.Popen([sys.executable, "-m", "kpiwatch", "run"], cwd=root,
                                           env=env, stdout=log_path.open("wb"),
                                           stderr=subprocess.STDOUT)  # fmt: skip
                replicas.append((process, f"http://127.0.0.1:{port}", log_path))
                wait_up(process, replicas[-1][1])
            report = run(args, replicas, state_url)
        finally:
            for process, _, _ in replicas:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for process, _, _ in replicas:
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
        takeovers = sum(path.read_text(errors="replace").count("taking over abandoned")
                        for _, _, path in replicas)  # fmt: skip
        report["takeover log lines"] = str(takeovers)
    print(f"\n{args.kpis} SQL KPIs every {args.every}s, {args.replicas} replicas on one "
          f"PostgreSQL, {args.minutes:g} min, replica {args.replicas - 1} killed at "
          f"{args.kill_at:g} min")  # fmt: skip
    width = max(len(k) for k in report)
    for key, value in report.items():
        print(f"  {key:<{width}}  {value}")


def wait_up(process: subprocess.Popen[bytes], base: str) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"a replica exited with {process.returncode}")
        try:
            if httpx.get(base + "/healthz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit("a replica did not come up within 180 s")


def run(args: argparse.Namespace, replicas: list[tuple[subprocess.Popen[bytes], str, Path]],
        state_url: str) -> dict[str, str]:  # fmt: skip
    client = httpx.Client(timeout=30)
    # start at a due minute, after a minute of warm-up (the first passes)
    time.sleep(60 - time.time() % 60 + 60)
    start = datetime.now(UTC).replace(microsecond=0)
    end = start + timedelta(minutes=args.minutes)
    before = {base: scrape(client, base) for _, base, _ in replicas}
    last = dict(before)
    peaks = [0] * len(replicas)
    killed_at: datetime | None = None
    victim = replicas[-1][0]
    while datetime.now(UTC) < end:
        for n, (process, base, _) in enumerate(replicas):
            if process.poll() is None:
                last[base] = scrape(client, base)
                peaks[n] = max(peaks[n], rss_kib(process.pid)[0])
        if killed_at is None and datetime.now(UTC) >= start + timedelta(minutes=args.kill_at):
            time.sleep(63 - time.time() % 60)  # three seconds into a due minute
            victim.kill()
            killed_at = datetime.now(UTC)
        time.sleep(5)
    time.sleep(args.every + 35)  # the last due times, and a takeover, finish
    for _, base, _ in replicas[:-1]:
        last[base] = scrape(client, base)
    engine = sa.create_engine(state_url)
    with engine.connect() as connection:
        rows = connection.execute(sa.text(
            "SELECT kpi_id, observed_at FROM observations WHERE observed_at >= :a "
            "AND observed_at < :b"), {"a": start, "b": end}).all()  # fmt: skip
    engine.dispose()
    per_slot: Counter[tuple[str, int]] = Counter()
    for kpi_id, observed_at in rows:
        per_slot[(kpi_id, int(observed_at.timestamp()) // args.every)] += 1
    slots = range(int(start.timestamp()) // args.every, int(end.timestamp()) // args.every)
    due = [(f"kpi_{n:05}", s) for n in range(args.kpis) for s in slots]
    counts = Counter(min(per_slot.get(key, 0), 2) for key in due)
    shares = {base: counter(last[base], "kpiwatch_evaluations_total")
              - counter(before[base], "kpiwatch_evaluations_total") for _, base, _ in replicas}
    total = sum(shares.values()) or 1
    killed_slot = int(killed_at.timestamp()) // args.every if killed_at else None
    missed = [key for key in due if per_slot.get(key, 0) == 0]
    return {
        "due evaluations (KPI x due minute)": f"{len(due):,}",
        "evaluated exactly once": f"{counts[1]:,}",
        "not evaluated in their minute": f"{counts[0]:,} (in the kill's minute: "
        f"{sum(1 for _, s in missed if s == killed_slot):,})",
        "evaluated twice or more": f"{counts[2]:,}",
        "shares": ", ".join(f"replica {n}: {100 * shares[base] / total:.1f} %"
                            for n, (_, base, _) in enumerate(replicas)),
        "peak RSS per replica": ", ".join(f"{p / 1024:.0f} MiB" for p in peaks),
        "load average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }  # fmt: skip


def scrape(client: httpx.Client, base: str) -> str:
    return client.get(base + "/metrics").text


if __name__ == "__main__":
    main()

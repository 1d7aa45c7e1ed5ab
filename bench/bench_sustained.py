"""Sustained load: the real daemon polling N SQL KPIs ``every: 10s`` for minutes.

Run:  .venv/bin/python bench/bench_sustained.py [--kpis 5000] [--every 10] [--minutes 4]
      [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/bench_sustained]
      [--workers 8] [--warmup 60]

Writes N KPIs (thresholds, a trend rule, ``every: 10s``), each with its own
query of one SQLite warehouse file (``SELECT value FROM readings WHERE id = n``),
into a temporary rules directory, and starts ``kpiwatch run`` as a user would
(a child process, its own store: an embedded SQLite file by default, or
``--database-url``, an empty database). After ``--warmup`` seconds (the first
pass; not counted) it measures for ``--minutes``:

* **share of due evaluations run**: the increase of ``kpiwatch_evaluations_total``
  over the window, against N x window / every;
* **lag p50/p99**: every 3 s the bench reads each KPI's ``last_evaluated``
  from the store; each new one is an evaluation, and its lag is how long after
  its due time (the ``every`` grid) its fetch started;
* **RSS** of the daemon (VmRSS, and VmHWM at the end) every 10 s;
* **board latency**: ``GET /`` (the first page) every 10 s, median and max;
* the daemon's **CPU per evaluation** (user + system over the window, board
  requests included), for sizing;
* the daemon's skipped-evaluation counter and how many log lines it wrote.

The machine's load average is printed too: the bench itself reads the store
and the board while the daemon runs (about one core-second in ten).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import httpx
import sqlalchemy as sa
from bench_metrics import percentile

from kpiwatch.store.schema import kpi_state

ANCHOR = datetime(2000, 1, 1, tzinfo=UTC)  # the scheduler's interval grid (INTERVAL_ANCHOR)


def write_warehouse(path: Path, kpis: int) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE readings (id INTEGER PRIMARY KEY, value REAL NOT NULL)")
        db.executemany("INSERT INTO readings VALUES (?, ?)",
                       [(n, 50.0 + n % 40) for n in range(kpis)])  # fmt: skip


def write_rules(rules: Path, warehouse: Path, kpis: int, every: int) -> None:
    rules.mkdir()
    lines = [
        "sources:",
        f"  wh: {{type: sql, url: 'sqlite:///{warehouse}', timeout: 30s}}",
        "kpis:",
    ]
    lines.extend(kpi_lines(kpis, every))
    (rules / "kpis.yaml").write_text("\n".join(lines) + "\n")


def kpi_lines(kpis: int, every: int) -> list[str]:
    """N KPIs of source ``wh``, each reading its row of ``readings`` (value 50-89)."""
    return [
        f"  - {{id: kpi_{n:05}, name: KPI {n}, owner: team{n % 20}@example.com, "
        f"direction: higher_is_better, source: wh, every: {every}s, "
        f"query: 'SELECT value FROM readings WHERE id = {n}', "
        "thresholds: {yellow: 55, red: 52}, trend: {worsening_streak: 3}}"
        for n in range(kpis)
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_kib(pid: int) -> tuple[int, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    hwm = int(re.search(r"VmHWM:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    return rss, hwm


def cpu_seconds(pid: int) -> float:
    """User plus system CPU of a process so far (/proc/<pid>/stat, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def counter(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))  # fmt: skip


def lag_of(at: datetime, every: int) -> float:
    elapsed = (at - ANCHOR).total_seconds()
    return elapsed % every


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kpis", type=int, default=5000)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="kpiwatch-sustained-") as tmp:
        root = Path(tmp)
        warehouse = root / "warehouse.db"
        write_warehouse(warehouse, args.kpis)
        write_rules(root / "rules", warehouse, args.kpis, args.every)
        url = args.database_url or f"sqlite:///{root}/state.db"
        port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("KPIWATCH_")},
            "KPIWATCH_DATABASE_URL": url,
            "KPIWATCH_RULES_DIR": str(root / "rules"),
            "KPIWATCH_HTTP_PORT": str(port),
            "KPIWATCH_MAX_WORKERS": str(args.workers),
            "KPIWATCH_LOG_FORMAT": "json",
        }
        log_path = root / "daemon.log"
        with log_path.open("wb") as log_file:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "kpiwatch", "run"], cwd=root, env=env,
                stdout=log_file, stderr=subprocess.STDOUT,
            )  # fmt: skip
            try:
                result = measure(args, daemon, port, url)
            finally:
                daemon.send_signal(signal.SIGTERM)
                try:
                    daemon.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    daemon.kill()
        log_text = log_path.read_text(errors="replace")
        result["log lines"] = str(len(log_text.splitlines()))
        result["APScheduler 'skipped' lines"] = str(log_text.count("maximum number of running"))
        result["'falling behind' lines"] = str(log_text.count("falling behind the schedule"))
    width = max(len(k) for k in result)
    print(f"\n{args.kpis} SQL KPIs every {args.every}s, {args.minutes:g} min after "
          f"{args.warmup:g} s warm-up, store {url.split(':')[0]}")  # fmt: skip
    for key, value in result.items():
        print(f"  {key:<{width}}  {value}")


def measure(args: argparse.Namespace, daemon: subprocess.Popen[bytes], port: int,
            url: str) -> dict[str, str]:  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    client = httpx.Client(timeout=30)
    deadline = time.monotonic() + 120
    while True:
        if daemon.poll() is not None:
            raise SystemExit(f"the daemon exited with {daemon.returncode}")
        try:
            if client.get(base + "/healthz").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("the daemon did not come up within 120 s")
        time.sleep(0.5)
    time.sleep(args.warmup)
    engine = sa.create_engine(url)
    query = sa.select(kpi_state.c.kpi_id, kpi_state.c.last_evaluated)

    def read() -> dict[str, datetime]:
        with engine.connect() as connection:
            return {row.kpi_id: row.last_evaluated for row in connection.execute(query)
                    if row.last_evaluated is not None}  # fmt: skip

    metrics_before = client.get(base + "/metrics").text
    cpu_before = cpu_seconds(daemon.pid)
    seen = read()
    start = time.monotonic()
    lags: list[float] = []
    rss: list[int] = []
    board: list[float] = []
    next_sample = start
    while time.monotonic() - start < args.minutes * 60:
        if time.monotonic() >= next_sample:
            rss.append(rss_kib(daemon.pid)[0])
            began = time.perf_counter()
            client.get(base + "/").raise_for_status()
            board.append((time.perf_counter() - began) * 1000)
            next_sample += 10
        now = read()
        for kpi_id, at in now.items():
            if seen.get(kpi_id) != at:
                lags.append(lag_of(at, args.every))
        seen = now
        time.sleep(3)
    elapsed = time.monotonic() - start
    metrics_after = client.get(base + "/metrics").text
    cpu = cpu_seconds(daemon.pid) - cpu_before
    _, hwm = rss_kib(daemon.pid)
    engine.dispose()
    ran = counter(metrics_after, "kpiwatch_evaluations_total") - counter(
        metrics_before, "kpiwatch_evaluations_total"
    )
    skipped = counter(metrics_after, "kpiwatch_evaluations_skipped_total") - counter(
        metrics_before, "kpiwatch_evaluations_skipped_total"
    )
    due = args.kpis * elapsed / args.every
    return {
        "due evaluations": f"{due:,.0f}",
        "run": f"{ran:,.0f} ({100 * ran / due:.1f} %)",
        "skipped (counter)": f"{skipped:,.0f}",
        "daemon CPU per evaluation": f"{1000 * cpu / max(ran, 1):.2f} ms ({cpu:.0f} s CPU, "
                                     f"{100 * cpu / elapsed:.0f} % of a core)",
        "lag p50 / p99 / max": (f"{percentile(lags, 50):.1f} / {percentile(lags, 99):.1f} / "
                                f"{max(lags):.1f} s ({len(lags):,} seen)") if lags else "none",
        "RSS first / last / peak": f"{rss[0] / 1024:.0f} / {rss[-1] / 1024:.0f} / "
                                   f"{hwm / 1024:.0f} MiB",
        "board GET / median / max": f"{statistics.median(board):.0f} / {max(board):.0f} ms",
        "load average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }  # fmt: skip


if __name__ == "__main__":
    main()

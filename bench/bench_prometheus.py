"""Measured Prometheus baseline: the same threshold checks for N KPIs as alerting rules.

Run:  .venv/bin/python bench/bench_prometheus.py [--kpis 10000] [--mode joined|per-kpi|both]
      [--kind alert|record|both] [--seconds 60] [--prometheus prometheus]

A stdlib HTTP exporter on 127.0.0.1 serves, in the text exposition format,
``kpi_value{kpi="kpi_N"}`` (random, 0-100, lower is better) and
``kpi_threshold{kpi="kpi_N",severity="yellow"|"red"}`` for every KPI. A real
``prometheus`` (fresh TSDB in a temp dir, scrape every 5 s, rule evaluation
every 2 s) evaluates one of two rule files:

* **joined** (Prometheus at its best): thresholds are series, one group of two
  alerting rules, ``kpi_value > on(kpi) kpi_threshold{severity="red"}`` and the
  same for yellow;
* **per-kpi**: one alerting rule per KPI, ``kpi_value{kpi="kpi_N"} > <red_N>``,
  all in one group.

``--kind record`` makes the same expressions recording rules (no alert state,
only the matching series written back), the cheapest way to evaluate them.

Once every series is scraped and the group has run a few times, it samples
Prometheus' own ``/metrics`` every 0.5 s for ``--seconds``, keeping each
evaluation once (keyed by ``prometheus_rule_group_last_evaluation_timestamp_seconds``)
with its ``prometheus_rule_group_last_duration_seconds``, then reads the resident
memory (``process_resident_memory_bytes``, and VmRSS/VmHWM from /proc). Prints
median and p90 group evaluation time and RSS. For the joined rules it also
times their PromQL alone through the query API (``stats=all``, median of 7):
the query cost without the rule's bookkeeping and write-back. Prometheus and the exporter are
always stopped and the temp dir removed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

# the tests' helpers for running Prometheus: one way to start and stop it
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "integration"))
from processes import stop
from prometheus_server import free_port, prometheus_command

SCRAPE_INTERVAL_S = 5
EVALUATION_INTERVAL_S = 2
READY_WITHIN_S = 90.0  # start-up, loading the rules and the first full scrape
WARMUP_EVALUATIONS = 3  # evaluations on full data before the window opens
GROUP = "kpi_thresholds"


# --- the exporter ------------------------------------------------------------------


def exposition(kpis: int, seed: int = 42) -> tuple[bytes, list[float]]:
    """The /metrics body, and the red threshold of each KPI (for the per-KPI rules)."""
    rng = random.Random(seed)
    values, yellow, red = [], [], []
    for _ in range(kpis):
        values.append(round(rng.uniform(0, 100), 3))
        low = round(rng.uniform(50, 70), 3)
        yellow.append(low)
        red.append(round(low + 15, 3))
    lines = ["# TYPE kpi_value gauge"]
    lines += [f'kpi_value{{kpi="kpi_{i}"}} {v!r}' for i, v in enumerate(values)]
    lines.append("# TYPE kpi_threshold gauge")
    for i in range(kpis):
        lines.append(f'kpi_threshold{{kpi="kpi_{i}",severity="yellow"}} {yellow[i]!r}')
        lines.append(f'kpi_threshold{{kpi="kpi_{i}",severity="red"}} {red[i]!r}')
    return ("\n".join(lines) + "\n").encode(), red


class Exporter(ThreadingHTTPServer):
    """Serves one fixed body: built once so the exporter costs no CPU per scrape."""

    daemon_threads = True

    def __init__(self, body: bytes) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.body = body

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _Handler(BaseHTTPRequestHandler):
    server: Exporter

    def do_GET(self) -> None:
        body = self.server.body if self.path.startswith("/metrics") else b""
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


# --- configuration -----------------------------------------------------------------


def rules_yaml(mode: str, kind: str, red: list[float]) -> str:
    """The rule file (JSON is valid YAML, and needs no quoting rules of its own)."""
    if mode == "joined":
        rules = [
            {
                "expr": f'kpi_value > on(kpi) kpi_threshold{{severity="{severity}"}}',
                "labels": {"severity": severity},
                **_name(kind, f"Kpi{severity.title()}", f"kpi:{severity}:breached"),
            }
            for severity in ("red", "yellow")
        ]
    else:
        rules = [
            {
                "expr": f'kpi_value{{kpi="kpi_{i}"}} > {threshold!r}',
                "labels": {"severity": "red"},
                **_name(kind, "KpiRed", "kpi:red:breached"),
            }
            for i, threshold in enumerate(red)
        ]
    return json.dumps({"groups": [{"name": GROUP, "rules": rules}]})


def _name(kind: str, alert: str, record: str) -> dict[str, str]:
    return {"alert": alert} if kind == "alert" else {"record": record}


def prometheus_yml(target: str, rule_file: Path) -> str:
    return (
        "global:\n"
        f"  scrape_interval: {SCRAPE_INTERVAL_S}s\n"
        f"  scrape_timeout: {SCRAPE_INTERVAL_S - 1}s\n"
        f"  evaluation_interval: {EVALUATION_INTERVAL_S}s\n"
        f"rule_files: ['{rule_file}']\n"
        "scrape_configs:\n"
        "  - job_name: kpi\n"
        "    static_configs:\n"
        f"      - targets: ['{target}']\n"
    )


# --- talking to Prometheus -----------------------------------------------------------


def get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body: bytes = response.read()
        return body


def query_scalar(url: str, promql: str) -> float | None:
    """The single value of an instant query, or None when it returns nothing."""
    answer = json.loads(get(f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})))
    result = answer["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def query_ms(url: str, promql: str, rounds: int = 7) -> float:
    """Median PromQL evaluation time of an instant query, as Prometheus reports it
    (``stats=all``): the query alone, without writing rule results back."""
    times = []
    for _ in range(rounds):
        params = urllib.parse.urlencode({"query": promql, "stats": "all"})
        answer = json.loads(get(f"{url}/api/v1/query?{params}", timeout=30))
        times.append(float(answer["data"]["stats"]["timings"]["evalTotalTime"]) * 1000)
    return statistics.median(times)


def own_metrics(url: str) -> dict[str, float]:
    """Prometheus' /metrics as ``name{labels}`` -> value (the lines we need are simple)."""
    samples = {}
    for line in get(f"{url}/metrics").decode().splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            samples[series] = float(value)
    return samples


def group_sample(metrics: dict[str, float]) -> tuple[float, float] | None:
    """(last evaluation timestamp, last duration in s) of our rule group."""
    stamp = duration = None
    for series, value in metrics.items():
        if 'rule_group="' in series and f";{GROUP}" in series:
            if series.startswith("prometheus_rule_group_last_evaluation_timestamp_seconds{"):
                stamp = value
            elif series.startswith("prometheus_rule_group_last_duration_seconds{"):
                duration = value
    return (stamp, duration) if stamp and duration is not None else None


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in bytes."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(rest.split()[0]) * 1024
    return found


# --- one measurement -----------------------------------------------------------------


@dataclass
class Result:
    mode: str
    kind: str
    kpis: int
    rules: int
    evaluations: int
    median_ms: float
    p90_ms: float
    max_ms: float
    query_ms: float | None
    missed: float
    firing: float
    rss_mib: float
    vm_rss_mib: float
    vm_hwm_mib: float
    minutes: float


def wait_until(condition: Any, within: float, what: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prometheus exited with {process.returncode} while {what}")
        try:
            if condition():
                return
        except (OSError, ValueError, KeyError):
            pass  # not listening yet
        time.sleep(0.5)
    raise RuntimeError(f"timed out after {within:g}s {what}")


def measure(
    binary: str,
    mode: str,
    kind: str,
    kpis: int,
    seconds: float,
    exporter: Exporter,
    red: list[float],
) -> Result:
    workdir = Path(tempfile.mkdtemp(prefix="bench-prometheus-"))
    try:
        rule_file = workdir / "rules.yml"
        rule_file.write_text(rules_yaml(mode, kind, red))
        config = workdir / "prometheus.yml"
        config.write_text(prometheus_yml(f"127.0.0.1:{exporter.port}", rule_file))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with (workdir / "prometheus.log").open("wb") as log:
            started = time.monotonic()
            process = subprocess.Popen(prometheus_command(binary, config, workdir, port),
                                       stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
            try:
                return _observe(url, process, mode, kind, kpis, seconds, started, len(red))
            except RuntimeError as error:
                tail = (workdir / "prometheus.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{error}\n{tail}") from error
            finally:
                stop(process)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _observe(
    url: str,
    process: subprocess.Popen[bytes],
    mode: str,
    kind: str,
    kpis: int,
    seconds: float,
    started: float,
    red_rules: int,
) -> Result:
    wait_until(
        lambda: query_scalar(url, "count(kpi_value)") == kpis,
        READY_WITHIN_S,
        "waiting for the first full scrape",
        process,
    )
    full_at = time.time()
    stamps: dict[float, float] = {}

    def warmed_up() -> bool:
        sample = group_sample(own_metrics(url))
        if sample and sample[0] > full_at:
            stamps[sample[0]] = sample[1]
        return len(stamps) >= WARMUP_EVALUATIONS

    wait_until(warmed_up, READY_WITHIN_S, "waiting for rule evaluations", process)
    missed_before = _missed(own_metrics(url))
    durations: dict[float, float] = {}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prometheus exited with {process.returncode} while measuring")
        metrics = own_metrics(url)
        sample = group_sample(metrics)
        if sample:
            durations[sample[0]] = sample[1]
        time.sleep(0.5)
    metrics = own_metrics(url)
    vm = proc_status(process.pid)
    # The joined rules' PromQL alone (per-KPI would be 10,000 HTTP round trips).
    joined_query_ms = (
        sum(
            query_ms(url, f'kpi_value > on(kpi) kpi_threshold{{severity="{severity}"}}')
            for severity in ("red", "yellow")
        )
        if mode == "joined"
        else None
    )
    matches = 'ALERTS{alertstate="firing"}' if kind == "alert" else '{__name__=~"kpi:.+"}'
    firing = query_scalar(url, f"count({matches})") or 0.0
    values = sorted(v * 1000 for v in durations.values())
    if not values:
        raise RuntimeError("no rule group evaluation seen in the window")
    p90 = (
        statistics.quantiles(values, n=10, method="inclusive")[-1] if len(values) > 1 else values[0]
    )
    return Result(
        mode=mode,
        kind=kind,
        kpis=kpis,
        rules=2 if mode == "joined" else red_rules,
        evaluations=len(values),
        median_ms=statistics.median(values),
        p90_ms=p90,
        max_ms=values[-1],
        query_ms=joined_query_ms,
        missed=_missed(metrics) - missed_before,
        firing=firing,
        rss_mib=metrics["process_resident_memory_bytes"] / 2**20,
        vm_rss_mib=vm["VmRSS"] / 2**20,
        vm_hwm_mib=vm["VmHWM"] / 2**20,
        minutes=(time.monotonic() - started) / 60,
    )


def _missed(metrics: dict[str, float]) -> float:
    return sum(
        value
        for series, value in metrics.items()
        if series.startswith("prometheus_rule_group_iterations_missed_total{")
        and f";{GROUP}" in series
    )


# --- main ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kpis", type=int, default=10_000)
    parser.add_argument("--mode", choices=("joined", "per-kpi", "both"), default="both")
    parser.add_argument("--kind", choices=("alert", "record", "both"), default="alert")
    parser.add_argument("--seconds", type=float, default=60.0, help="measurement window")
    parser.add_argument(
        "--prometheus", default=os.environ.get("KPIWATCH_TEST_PROMETHEUS", "prometheus")
    )
    args = parser.parse_args(argv)
    binary = shutil.which(args.prometheus)
    if binary is None:
        print(f"{args.prometheus} not found (apt-get install prometheus)", file=sys.stderr)
        return 2
    version = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=10
    ).stdout.splitlines()[0]
    body, red = exposition(args.kpis)
    exporter = Exporter(body)
    threading.Thread(target=exporter.serve_forever, daemon=True).start()
    results = []
    try:
        modes = ("joined", "per-kpi") if args.mode == "both" else (args.mode,)
        kinds = ("alert", "record") if args.kind == "both" else (args.kind,)
        for mode, kind in [(m, k) for k in kinds for m in modes]:
            print(
                f"measuring {mode} {kind} ({args.kpis} KPIs, {args.seconds:g}s window)...",
                file=sys.stderr,
                flush=True,
            )
            results.append(measure(binary, mode, kind, args.kpis, args.seconds, exporter, red))
    finally:
        exporter.shutdown()
        exporter.server_close()
    print(
        f"{version}; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
        f"scrape {SCRAPE_INTERVAL_S}s, evaluation {EVALUATION_INTERVAL_S}s; "
        f"{len(body) / 2**20:.1f} MiB exposition"
    )
    print(
        "| mode    | kind   |   KPIs | rules | evals | median ms | p90 ms | max ms | query ms "
        "| missed | matches | RSS MiB | VmRSS MiB | VmHWM MiB | after min |"
    )
    print(
        "|---------|--------|-------:|------:|------:|----------:|-------:|-------:|---------:|-------:"
        "|--------:|--------:|----------:|----------:|----------:|"
    )
    for r in results:
        query = "-" if r.query_ms is None else f"{r.query_ms:.1f}"
        print(
            f"| {r.mode:<7} | {r.kind:<6} | {r.kpis:>6} | {r.rules:>5} | {r.evaluations:>5} "
            f"| {r.median_ms:>9.1f} | {r.p90_ms:>6.1f} | {r.max_ms:>6.1f} | {query:>8} "
            f"| {r.missed:>6.0f} | {r.firing:>7.0f} | {r.rss_mib:>7.1f} | {r.vm_rss_mib:>9.1f} "
            f"| {r.vm_hwm_mib:>9.1f} | {r.minutes:>9.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

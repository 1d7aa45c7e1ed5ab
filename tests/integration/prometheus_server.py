"""A real Prometheus for tests: a tiny exporter on 127.0.0.1 and the server scraping it.

``running_prometheus()`` starts both on free ports and yields once Prometheus
has scraped the exporter; without the ``prometheus`` binary it skips, or fails
when ``CI`` is set (as tests/conftest.py does for the database servers).
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests
from processes import require_tool, stop

PROMETHEUS = os.environ.get("KPIWATCH_TEST_PROMETHEUS", "prometheus")
READY_WITHIN = 30.0  # seconds for start-up plus the first scrape


class Exporter(ThreadingHTTPServer):
    """Serves ``/metrics`` in the text exposition format; ``values`` may be changed."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _MetricsHandler)
        self.lock = threading.Lock()
        # series (metric name with labels) -> value, as it appears in the exposition
        self.values: dict[str, float] = {
            'kpi_demo_value{team="a"}': 42.5,
            'kpi_multi{instance="a"}': 1,
            'kpi_multi{instance="b"}': 2,
            'kpi_multi{instance="c"}': 3,
            'kpi_multi{instance="d"}': 4,
            "kpi_changing": 1,
        }

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def set(self, series: str, value: float) -> None:
        with self.lock:
            self.values[series] = value

    def exposition(self) -> bytes:
        with self.lock:
            lines = [f"{series} {value!r}" for series, value in self.values.items()]
        return ("\n".join(lines) + "\n").encode()


class _MetricsHandler(BaseHTTPRequestHandler):
    server: Exporter

    def do_GET(self) -> None:
        body = self.server.exposition() if self.path.startswith("/metrics") else b""
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # Prometheus scrapes every second: keep the output clean


@dataclass
class Prometheus:
    url: str
    exporter: Exporter


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prometheus_command(binary: str, config: Path, workdir: Path, port: int) -> list[str]:
    """How the tests and bench/bench_prometheus.py start Prometheus: a TSDB of its own
    in ``workdir``, listening on 127.0.0.1 only."""
    return [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]


@contextmanager
def running_prometheus(workdir: Path) -> Iterator[Prometheus]:
    """Exporter plus Prometheus (scrape interval 1s), stopped on exit."""
    exporter = Exporter()
    threading.Thread(target=exporter.serve_forever, daemon=True).start()
    try:
        with scraping_prometheus(
            workdir, f"127.0.0.1:{exporter.port}", job="kpi", ready_query="kpi_demo_value"
        ) as url:
            yield Prometheus(url, exporter)
    finally:
        exporter.shutdown()
        exporter.server_close()


@contextmanager
def scraping_prometheus(workdir: Path, target: str, *, job: str, ready_query: str) -> Iterator[str]:
    """A Prometheus scraping ``target`` every second; yields its URL once ``ready_query``
    returns samples. Stopped on exit."""
    binary = require_tool(PROMETHEUS, "apt-get install prometheus, or set KPIWATCH_TEST_PROMETHEUS")
    config = workdir / "prometheus.yml"
    config.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        f"  - job_name: {job}\n"
        "    honor_labels: true  # keep the exporter's own instance labels\n"
        "    static_configs:\n"
        f"      - targets: ['{target}']\n"
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (workdir / "prometheus.log").open("wb")
    process = subprocess.Popen(prometheus_command(binary, config, workdir, port), stdout=log,
                               stderr=subprocess.STDOUT)  # fmt: skip
    try:
        _wait_ready(url, process, workdir / "prometheus.log", ready_query)
        yield url
    finally:
        stop(process)
        log.close()


def query(url: str, promql: str) -> list[dict[str, Any]]:
    """The result vector of an instant query."""
    answer = requests.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5).json()
    assert answer["status"] == "success", answer
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, ready_query: str) -> None:
    """Until ``ready_query`` finds samples, at most READY_WITHIN seconds."""
    deadline = time.monotonic() + READY_WITHIN
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"prometheus exited with {process.returncode}:\n{tail}")
        try:
            if query(url, ready_query):
                return
        except (requests.RequestException, ValueError, KeyError, AssertionError):
            pass  # not listening yet
        time.sleep(0.2)
    raise RuntimeError(f"prometheus at {url} had no samples after {READY_WITHIN:g}s")

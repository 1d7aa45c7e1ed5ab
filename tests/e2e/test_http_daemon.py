"""The daemon's HTTP side as people meet it.

The demo daemon (a year of sample data, 12 KPIs, 3 teams) is scraped by a real
Prometheus, its pages are read in headless Chromium and its API is used with a
token. Smaller daemons show systemd readiness and watchdog, a removed KPI
leaving /metrics, and a taken port.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from browser import chromium_binary, keep_screenshot, run_chromium, visible_text
from helpers import KPIWATCH, environment, wait_until
from prometheus_client.parser import text_string_to_metric_families

from kpiwatch.testing import chunked, raw_request

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from prometheus_server import free_port, query, scraping_prometheus
from pushgateway_server import running_pushgateway

pytestmark = pytest.mark.slow

TOKEN = "e2e-secret-token"
START_WITHIN = 90.0  # the demo writes a year of sample data first


class Process:
    """A `kpiwatch` process with its output in a file; killed if a test leaves it running."""

    def __init__(self, workdir: Path, args: list[str], env: dict[str, str]) -> None:
        self.log = workdir / "daemon.log"
        self._log_file = self.log.open("w")
        self.process = subprocess.Popen(
            [*KPIWATCH, *args], cwd=workdir, env=env,
            stdout=self._log_file, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def output(self) -> str:
        return self.log.read_text()

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 20) -> int:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10)
        finally:
            self._log_file.close()


def _get(url: str, **kwargs: Any) -> requests.Response:
    return requests.get(url, timeout=10, **kwargs)


def _answers(url: str, daemon: Process, **kwargs: Any) -> bool:
    if not daemon.alive():
        raise AssertionError(f"the daemon exited:\n{daemon.output()[-3000:]}")
    try:
        return _get(url, **kwargs).status_code == 200
    except requests.ConnectionError:
        return False


# ------------------------------------------------------------------ the demo daemon


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    workdir = tmp_path_factory.mktemp("demo-http")
    port = free_port()
    env = environment(workdir, KPIWATCH_HTTP_PORT=str(port), KPIWATCH_API_TOKEN=TOKEN)
    daemon = Process(workdir, ["demo", "--dir", "demo"], env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(base + "/readyz", daemon), START_WITHIN, "the demo to serve")

        def all_evaluated() -> bool:
            rows = _get(base + "/api/v1/kpis").json()
            return len(rows) == 12 and all(row["last_evaluated"] for row in rows)

        wait_until(all_evaluated, 60, "the demo to evaluate its 12 KPIs")
        yield base, workdir
    finally:
        assert daemon.stop() == 0, daemon.output()[-3000:]


def test_health_ready_and_metrics_content_type(demo: tuple[str, Path]) -> None:
    base, _ = demo
    health = _get(base + "/healthz")
    assert health.status_code == 200, health.text
    assert health.json()["status"] == "ok"
    assert _get(base + "/readyz").status_code == 200
    metrics = _get(base + "/metrics")
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name for f in text_string_to_metric_families(metrics.text)}
    assert {"kpiwatch_kpi_value", "kpiwatch_kpi_status", "kpiwatch_build_info"} <= families
    assert not any(name.startswith(("python_", "process_")) for name in families)


def test_prometheus_scrapes_kpi_values_and_statuses(demo: tuple[str, Path]) -> None:
    base, workdir = demo
    target = base.removeprefix("http://")
    prom_dir = workdir / "prometheus"
    prom_dir.mkdir()
    with scraping_prometheus(
        prom_dir, target, job="kpiwatch", ready_query="count(kpiwatch_kpi_status == 1) == 12"
    ) as prometheus:
        red_now = query(prometheus, 'kpiwatch_kpi_status{status="red"} == 1')
        assert [r["metric"]["kpi"] for r in red_now] == ["churn_rate"]
        statuses = {
            r["metric"]["kpi"]: r["metric"]["status"]
            for r in query(prometheus, "kpiwatch_kpi_status == 1")
        }
        api = {row["id"]: row for row in _get(base + "/api/v1/kpis").json()}
        assert statuses == {kpi_id: row["status"] for kpi_id, row in api.items()}
        samples = query(prometheus, "kpiwatch_kpi_value")
        values = {r["metric"]["kpi"]: float(r["value"][1]) for r in samples}
        for kpi_id, row in api.items():
            if row["status"] == "unknown":  # a blind KPI's kept value is not exported
                assert kpi_id not in values, kpi_id
            elif row["value"] is not None:
                assert values[kpi_id] == pytest.approx(row["value"]), kpi_id
        churn = query(prometheus, 'kpiwatch_kpi_escalated{kpi="churn_rate"}')
        assert churn[0]["value"][1] == "1"
        assert churn[0]["metric"]["team"] == "customer-success"
        weekly = query(prometheus, 'kpiwatch_kpi_review_interval_seconds{kpi="churn_rate"}')
        assert weekly[0]["value"][1] == "604800"
        red = query(prometheus, 'kpiwatch_kpi_threshold{kpi="churn_rate",severity="red"}')
        assert float(red[0]["value"][1]) == 5.5
        info = query(prometheus, 'kpiwatch_kpi_info{kpi="churn_rate"}')[0]["metric"]
        assert info["direction"] == "lower_is_better"
        assert info["unit"] == "%"
        assert query(prometheus, 'up{job="kpiwatch"} == 1')
        # the alert rules' own expression: nothing stale right after a cycle
        stale = "time() - kpiwatch_kpi_last_evaluation_timestamp_seconds > 26 * 3600"
        assert query(prometheus, stale) == []


def test_board_and_kpi_page_in_chromium(demo: tuple[str, Path], tmp_path: Path) -> None:
    base, _ = demo
    chromium = chromium_binary()
    board = visible_text(run_chromium(chromium, tmp_path / "p1", "--dump-dom", base + "/"))
    assert "12 KPIs: 1 red 1 yellow 1 unknown 9 green" in board
    for team in ("growth", "customer-success", "finance"):
        assert team in board
    assert "Rolling 30-day churn rate Red" in board
    assert "escalated" in board
    page_dom = run_chromium(chromium, tmp_path / "p2", "--dump-dom", base + "/kpis/churn_rate")
    page = visible_text(page_dom)
    assert "Rolling 30-day churn rate Red escalated" in page
    assert "> red 5.5 %" in page
    assert '<svg class="chart"' in page_dom
    for path, name, size in (
        ("/", "status-board.png", "1280,1100"),
        ("/kpis/churn_rate", "kpi-page.png", "1280,1100"),
        ("/", "status-board-phone.png", "390,1600"),
    ):
        shot = tmp_path / name
        run_chromium(chromium, tmp_path / "p3", f"--screenshot={shot}", f"--window-size={size}",
                     base + path)  # fmt: skip
        keep_screenshot(shot)


def test_api_writes_need_the_token_and_show_escaped_on_the_page(
    demo: tuple[str, Path], tmp_path: Path
) -> None:
    base, _ = demo
    note = {"text": "<img src=x onerror=alert(1)> EU price change", "author": "ben"}
    url = base + "/api/v1/kpis/churn_rate/annotations"
    assert requests.post(url, json=note, timeout=10).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert requests.post(url, json=note, headers=wrong, timeout=10).status_code == 401
    right = {"Authorization": f"Bearer {TOKEN}"}
    created = requests.post(url, json=note, headers=right, timeout=10)
    assert created.status_code == 201, created.text
    detail = _get(base + "/api/v1/kpis/churn_rate").json()
    assert note["text"] in [a["text"] for a in detail["annotations"]]
    dom = run_chromium(chromium_binary(), tmp_path / "p", "--dump-dom", base + "/kpis/churn_rate")
    assert "&lt;img src=x onerror=alert(1)&gt; EU price change" in dom
    assert "<img src=" not in dom
    openapi = _get(base + "/api/v1/openapi.json").json()
    assert "/api/v1/kpis/{kpi_id}/observations" in openapi["paths"]


# ------------------------------------------------------------------ small daemons

RULES = """
sources:
  wh: {type: sql, url: "sqlite:///WAREHOUSE"}
kpis:
  - {id: errors, name: Error rate, owner: dana@example.com, unit: "%",
     direction: lower_is_better, source: wh, query: SELECT value FROM errors,
     every: 1s, thresholds: {yellow: 10, red: 20}}
  - {id: orders, name: Orders, owner: dana@example.com, direction: higher_is_better,
     source: wh, query: SELECT value FROM errors, every: 1s}
"""


def _small(workdir: Path, rules: str = RULES) -> None:
    with sqlite3.connect(workdir / "warehouse.db") as db:
        db.execute("CREATE TABLE IF NOT EXISTS errors (value REAL)")
        db.execute("INSERT INTO errors VALUES (25)")
    (workdir / "rules").mkdir(exist_ok=True)
    text = rules.replace("WAREHOUSE", str(workdir / "warehouse.db"))
    (workdir / "rules" / "kpis.yaml").write_text(text)


def test_removed_kpi_leaves_metrics_after_reload(tmp_path: Path) -> None:
    _small(tmp_path)
    port = free_port()
    daemon = Process(tmp_path, ["run"], environment(tmp_path, KPIWATCH_HTTP_PORT=str(port)))
    metrics = f"http://127.0.0.1:{port}/metrics"
    try:
        wait_until(lambda: _answers(metrics, daemon), 30, "/metrics")
        # kpiwatch_kpi_info names every KPI from the start: wait for the evaluation itself
        red = 'kpiwatch_kpi_status{kpi="errors",status="red",team=""} 1.0'
        wait_until(lambda: red in _get(metrics).text, 30, "errors evaluated red in /metrics")
        assert 'kpi="orders"' in _get(metrics).text
        _small(tmp_path, RULES[: RULES.index("  - {id: orders")])
        daemon.process.send_signal(signal.SIGHUP)
        wait_until(lambda: 'kpi="orders"' not in _get(metrics).text, 20, "orders to leave")
        assert 'kpi="errors"' in _get(metrics).text
    finally:
        assert daemon.stop() == 0, daemon.output()[-3000:]


def test_systemd_ready_watchdog_reload_and_stopping(tmp_path: Path) -> None:
    _small(tmp_path)
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(address)
        notify.settimeout(1.0)
        env = environment(tmp_path, NOTIFY_SOCKET=address, WATCHDOG_USEC="1000000",
                          KPIWATCH_HTTP_PORT="0")  # fmt: skip
        daemon = Process(tmp_path, ["run"], env)
        received: list[str] = []

        def receive() -> None:
            with contextlib.suppress(TimeoutError):
                received.append(notify.recv(4096).decode())

        def got(line: str) -> bool:
            receive()
            return any(line in message.splitlines() for message in received)

        def pings() -> int:
            receive()
            return sum(message == "WATCHDOG=1" for message in received)

        try:
            wait_until(lambda: got("READY=1"), 30, "READY=1")
            ready = next(m for m in received if "READY=1" in m)
            assert "STATUS=watching 2 KPIs; serving http://127.0.0.1:" in ready
            received.clear()
            wait_until(lambda: pings() >= 3, 10, "three watchdog pings (every 0.5 s)")
            daemon.process.send_signal(signal.SIGHUP)
            wait_until(lambda: got("RELOADING=1"), 10, "RELOADING=1")
            wait_until(lambda: got("READY=1"), 10, "READY=1 after the reload")
            daemon.process.send_signal(signal.SIGTERM)
            wait_until(lambda: got("STOPPING=1"), 10, "STOPPING=1")
            assert daemon.process.wait(20) == 0
        finally:
            assert daemon.stop() == 0, daemon.output()[-3000:]


def test_taken_port_is_a_clear_configuration_error(tmp_path: Path) -> None:
    _small(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        done = subprocess.run(
            [*KPIWATCH, "run"], cwd=tmp_path, capture_output=True, text=True, timeout=60,
            env=environment(tmp_path, KPIWATCH_HTTP_PORT=str(port)), check=False,
        )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "KPIWATCH_HTTP_PORT" in done.stderr
    assert time.monotonic() - started < 60


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024  # the kernel writes kB
    raise AssertionError(f"no VmRSS for process {pid}")


HUNDRED_MB = 100 * 1024 * 1024


def _hundred_mb() -> Iterator[bytes]:
    """100 MB of JSON-ish bytes, made as they are sent (the test holds 64 KiB at a time)."""
    piece = b"x" * 65536
    for _ in range(HUNDRED_MB // len(piece)):
        yield piece


def test_100_mb_bodies_do_not_grow_the_daemon(tmp_path: Path) -> None:
    _small(tmp_path)
    port = free_port()
    env = environment(tmp_path, KPIWATCH_HTTP_PORT=str(port), KPIWATCH_API_TOKEN=TOKEN)
    daemon = Process(tmp_path, ["run"], env)
    address = ("127.0.0.1", port)

    sent: list[int] = []

    def post(path: str, *lines: str, body: Iterator[bytes]) -> int | None:
        head = "\r\n".join([f"POST {path} HTTP/1.1", "Host: kpiwatch",
                             "Content-Type: application/json", *lines, "", ""])  # fmt: skip
        # push_on: keep sending after the answer, as an attacker would, until the server
        # hangs up or has taken all 100 MB (and must have thrown it away)
        answer = raw_request(address, head.encode(), body, timeout=10, push_on=True)
        sent.append(answer.sent)
        return answer.status

    try:
        wait_until(lambda: _answers(f"http://127.0.0.1:{port}/readyz", daemon), 30, "/readyz")
        # warm up: the write path's imports and the thread pool exist before measuring
        small = b'{"errors": "x"}'
        assert post("/api/v1/silences", f"Content-Length: {len(small)}", body=iter([small])) == 401
        before = _rss_bytes(daemon.process.pid)
        started = time.monotonic()
        statuses = [
            post("/api/v1/silences", f"Content-Length: {HUNDRED_MB}", body=_hundred_mb()),
            post("/api/v1/silences", "Transfer-Encoding: chunked", body=chunked(_hundred_mb())),
            post("/api/v1/kpis/errors/observations", f"Content-Length: {HUNDRED_MB}",
                 body=_hundred_mb()),
            post("/api/v1/kpis/errors/observations", "Transfer-Encoding: chunked",
                 f"Authorization: Bearer {TOKEN}", body=chunked(_hundred_mb())),
        ]  # fmt: skip
        elapsed = time.monotonic() - started
        after = _rss_bytes(daemon.process.pid)
        grown = after - before
        print(f"daemon RSS {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB "
              f"({grown / 2**20:+.1f} MiB) in {elapsed:.1f} s; the server took "
              f"{[f'{n / 2**20:.1f} MiB' for n in sent[1:]]} of the 100 MB bodies")  # fmt: skip
        # too large by its header; unauthenticated; too large by its header; too large, counted
        assert statuses == [413, 401, 413, 413]
        assert grown < 20 * 2**20
        assert elapsed < 30
        assert daemon.alive()
    finally:
        assert daemon.stop() == 0, daemon.output()[-3000:]


def _dockerfile_healthcheck() -> list[str]:
    """The HEALTHCHECK command of deploy/docker/Dockerfile, as Docker would run it."""
    text = (Path(__file__).parents[2] / "deploy" / "docker" / "Dockerfile").read_text()
    found = re.search(r"^HEALTHCHECK .*?\\\n\s+CMD (\[.*\])$", text, flags=re.M)
    assert found, "no HEALTHCHECK ... CMD [...] in the Dockerfile"
    command: list[str] = json.loads(found.group(1))
    return [sys.executable if command[0] == "python" else command[0], *command[1:]]


def test_read_and_metrics_tokens_on_a_real_daemon(tmp_path: Path) -> None:
    _small(tmp_path)
    port = free_port()
    tokens = {"KPIWATCH_READ_TOKEN": "e2e-read", "KPIWATCH_METRICS_TOKEN": "e2e-scrape"}
    daemon = Process(tmp_path, ["run"], environment(tmp_path, KPIWATCH_HTTP_PORT=str(port),
                                                     **tokens))  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    scrape = {"Authorization": "Bearer e2e-scrape"}
    try:
        wait_until(lambda: _answers(base + "/readyz", daemon, headers=scrape), 30, "/readyz")
        assert _get(base + "/readyz").status_code == 401
        assert _get(base + "/metrics", headers=scrape).status_code == 200
        healthcheck = _dockerfile_healthcheck()
        probe_env = {"PATH": "/usr/bin:/bin", "KPIWATCH_HTTP_PORT": str(port)}
        with_token = subprocess.run(healthcheck, env={**probe_env, **tokens}, timeout=20,
                                    capture_output=True, check=False)  # fmt: skip
        without = subprocess.run(healthcheck, env=probe_env, timeout=20, capture_output=True,
                                 check=False)  # fmt: skip
        assert with_token.returncode == 0, with_token.stderr
        assert without.returncode != 0
        assert b"401" in without.stderr

        assert _get(base + "/api/v1/kpis").status_code == 401
        board = requests.get(base + "/", allow_redirects=False, timeout=10)
        assert board.status_code == 303
        assert board.headers["location"] == "/login?next=%2F"
        with requests.Session() as browser:
            wrong = browser.post(base + "/login", data={"token": "nope", "next": "/"}, timeout=10)
            assert wrong.status_code == 403
            page = browser.post(base + "/login", data={"token": "e2e-read", "next": "/kpis/errors"},
                                timeout=10)  # follows the 303  # fmt: skip
            assert page.status_code == 200
            assert page.url == base + "/kpis/errors"
            assert "Error rate" in page.text
            assert browser.get(base + "/api/v1/kpis", timeout=10).status_code == 200
            browser.post(base + "/logout", timeout=10)
            assert browser.get(base + "/api/v1/kpis", timeout=10).status_code == 401
    finally:
        assert daemon.stop() == 0, daemon.output()[-3000:]


# ------------------------------------------------------------------ run --once and the Pushgateway


def _run_once(workdir: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KPIWATCH, "run", "--once"], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip


def test_run_once_pushes_to_the_pushgateway_under_a_stable_group(tmp_path: Path) -> None:
    _small(tmp_path)
    with running_pushgateway(tmp_path) as gateway:
        env = environment(tmp_path, KPIWATCH_PUSHGATEWAY_URL=gateway)
        for _ in range(2):  # the second run replaces the first run's group
            done = _run_once(tmp_path, env)
            assert done.returncode == 0, done.stdout + done.stderr
        pushed = _get(gateway + "/metrics").text
        status = {
            (s.labels["kpi"], s.labels["status"]): s.value
            for family in text_string_to_metric_families(pushed)
            if family.name == "kpiwatch_kpi_status"
            for s in family.samples
        }
        assert status[("errors", "red")] == 1.0
        assert status[("errors", "green")] == 0.0
        value = 'kpiwatch_kpi_value{instance="default",job="kpiwatch",kpi="errors",team=""} 25'
        assert value in pushed
        groups = _get(gateway + "/api/v1/metrics").json()["data"]
        assert [g["labels"] for g in groups] == [{"instance": "default", "job": "kpiwatch"}]

        _small(tmp_path, RULES[: RULES.index("  - {id: orders")])
        done = _run_once(tmp_path, env)
        assert done.returncode == 0, done.stdout + done.stderr
        pushed = _get(gateway + "/metrics").text
        assert 'kpi="orders"' not in pushed
        assert 'kpi="errors"' in pushed


def test_run_once_with_an_unreachable_pushgateway_says_so_and_fails(tmp_path: Path) -> None:
    _small(tmp_path)
    url = f"http://127.0.0.1:{free_port()}"
    env = environment(tmp_path, KPIWATCH_PUSHGATEWAY_URL=url)
    done = _run_once(tmp_path, env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "evaluated 2 KPIs" in done.stdout
    assert "push to the Pushgateway failed: " in done.stderr
    assert url in done.stderr

"""The daemon as a process: polls, notifies, reloads, refuses a second instance, stops cleanly."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import KPIWATCH, environment, kpiwatch, status_json, wait_until

pytestmark = pytest.mark.slow

RULES = """
sources:
  wh: {type: sql, url: "sqlite:///WAREHOUSE", timeout: 20s}
kpis:
  - id: errors
    name: Error rate
    owner: dana@example.com
    unit: "%"
    direction: lower_is_better
    source: wh
    query: SELECT value FROM errors
    every: 1s
    thresholds: {yellow: 10, red: 20}
"""


def _warehouse(workdir: Path, value: float) -> Path:
    path = workdir / "warehouse.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE IF NOT EXISTS errors (value REAL)")
        db.execute("DELETE FROM errors")
        db.execute("INSERT INTO errors VALUES (?)", (value,))
    return path


def _write_rules(workdir: Path, text: str = RULES, name: str = "kpis.yaml") -> None:
    rules = workdir / "rules"
    rules.mkdir(exist_ok=True)
    (rules / name).write_text(text.replace("WAREHOUSE", str(workdir / "warehouse.db")))


class Daemon:
    def __init__(self, workdir: Path) -> None:
        self.log = workdir / "daemon.log"
        self._log_file = self.log.open("w")
        self.process = subprocess.Popen(
            [*KPIWATCH, "run"],
            cwd=workdir,
            env=environment(workdir),
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        wait_until(lambda: "daemon started" in self.output(), 30, "the daemon to start")

    def output(self) -> str:
        return self.log.read_text()

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self, timeout: float = 20) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            self._log_file.close()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    _warehouse(tmp_path, 5.0)
    _write_rules(tmp_path)
    running = Daemon(tmp_path)
    yield running
    if running.process.poll() is None:
        running.process.kill()
        running.process.wait(10)


def _status(workdir: Path, kpi: str) -> str | None:
    """The stored effective status (read directly: the rules on disk may be broken on purpose)."""
    state_db = workdir / "state.db"
    if not state_db.exists():
        return None
    with sqlite3.connect(state_db) as db:
        try:
            row = db.execute("SELECT status FROM kpi_state WHERE kpi_id = ?", (kpi,)).fetchone()
        except sqlite3.OperationalError:  # tables not created yet
            return None
    return row[0] if row else None


def test_polls_notifies_reloads_and_stops_cleanly(tmp_path: Path, daemon: Daemon) -> None:
    wait_until(lambda: _status(tmp_path, "errors") == "green", 20, "errors to be green")
    _warehouse(tmp_path, 25.0)
    wait_until(lambda: _status(tmp_path, "errors") == "red", 20, "errors to turn red")
    wait_until(
        lambda: '"notification": "status_changed"' in daemon.output(),
        20,
        "the status change notification in the log",
    )
    assert "value 25 % > red 20 %" in daemon.output()

    # invalid rules are refused; the running rules stay
    _write_rules(tmp_path, RULES.replace("every: 1s", "every: often"), "broken.yaml")
    daemon.signal(signal.SIGHUP)
    wait_until(lambda: "rules not reloaded" in daemon.output(), 20, "the reload to be refused")
    assert "broken.yaml:" in daemon.output()
    _warehouse(tmp_path, 5.0)
    wait_until(
        lambda: _status(tmp_path, "errors") == "green", 20, "errors to recover with the old rules"
    )

    # a fixed file is picked up without a signal
    fixed = (
        RULES.replace("  wh:", "  other:")
        .replace("id: errors", "id: errors_copy")
        .replace("source: wh", "source: other")
    )
    _write_rules(tmp_path, fixed, "broken.yaml")
    wait_until(lambda: _status(tmp_path, "errors_copy") == "green", 30, "the new KPI to run")

    assert daemon.stop() == 0
    assert '"stopped"' in daemon.output() or "stopped" in daemon.output()


def test_a_second_instance_on_the_same_database_refuses(tmp_path: Path, daemon: Daemon) -> None:
    second = kpiwatch(tmp_path, "run", "--once")
    assert second.returncode == 2
    assert "another kpiwatch instance" in second.stderr
    assert daemon.process.poll() is None
    assert daemon.stop() == 0


def test_a_kpi_that_fell_due_while_down_runs_once_at_start(tmp_path: Path) -> None:
    _warehouse(tmp_path, 5.0)
    _write_rules(tmp_path, RULES.replace("every: 1s", "every: 1h"))
    assert kpiwatch(tmp_path, "run", "--once").returncode == 0
    first = status_json(tmp_path)["errors"]["last_evaluated"]

    # restarted within the hour: not due, not evaluated at start
    daemon = Daemon(tmp_path)
    time.sleep(2)
    assert daemon.stop() == 0
    assert status_json(tmp_path)["errors"]["last_evaluated"] == first

    # as if the daemon had been down for two hours: due, evaluated once at start
    with sqlite3.connect(tmp_path / "state.db") as db:
        db.execute("UPDATE kpi_state SET last_evaluated = datetime(last_evaluated, '-2 hours')")
    daemon = Daemon(tmp_path)
    wait_until(
        lambda: status_json(tmp_path)["errors"]["last_evaluated"] > first,
        20,
        "the overdue KPI to be evaluated at start",
    )
    assert daemon.stop() == 0


def test_second_signal_exits_at_once(tmp_path: Path) -> None:
    _warehouse(tmp_path, 5.0)
    slow = RULES.replace(
        "SELECT value FROM errors",
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300000000) "
        "SELECT count(*) FROM n",
    )
    _write_rules(tmp_path, slow)
    daemon = Daemon(tmp_path)
    time.sleep(1.5)  # the first poll is running its slow query
    daemon.signal(signal.SIGTERM)
    time.sleep(1.0)
    assert daemon.process.poll() is None, "the first signal lets current work finish"
    assert "finishing current work" in daemon.output()
    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.stop(timeout=10) == 128 + signal.SIGTERM
    assert time.monotonic() - started < 5

"""Faults with real processes: replicas killed and restarted, PostgreSQL restarted
under the daemon, `run --once` killed at random points.

Every KPI flips between green and red with a value it never had before, so each
transition's Slack message is unique (channel, text, thread): a message that
arrives twice is a duplicate, one that never arrives is lost. What the state
database recorded (status changes, events, outbox rows) is checked against
what the local Slack Web API received.
"""

from __future__ import annotations

import itertools
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from helpers import KPIWATCH, environment, kpiwatch, wait_until
from pg_cluster import private_postgres

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from slack_api import SlackApi, slack_api

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

KPIS = 6
LEASE_SECONDS = 3  # how long a dead replica's claims block the others


def _rules(warehouse: Path, every: str | None) -> str:
    schedule = f", every: {every}" if every else ""
    teams = "\n".join(f'  t{i}: {{slack: "#t{i}"}}' for i in range(KPIS))
    kpis = "\n".join(
        f"  - {{id: k{i}, name: KPI {i}, owner: o{i}@example.com, team: t{i},"
        f" direction: lower_is_better, source: wh,"
        f" query: \"SELECT value FROM kpis WHERE id = 'k{i}'\"{schedule},"
        f" thresholds: {{yellow: 10, red: 20}}}}"
        for i in range(KPIS)
    )
    return f'sources: {{wh: {{type: sql, url: "sqlite:///{warehouse}"}}}}\n' \
           f"teams:\n{teams}\nkpis:\n{kpis}\n"  # fmt: skip


class Warehouse:
    """The KPIs' values: green ones below 10, red ones above 20, never repeated."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.values = {f"k{i}": 1.0 + i / 10 for i in range(KPIS)}
        self._flips = 0
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE kpis (id TEXT PRIMARY KEY, value REAL)")
            db.executemany("INSERT INTO kpis VALUES (?, ?)", self.values.items())

    def flip(self, kpi: str) -> None:
        self._flips += 1
        red = self.values[kpi] < 10
        self.values[kpi] = (21 if red else 0.5) + self._flips / 100
        with sqlite3.connect(self.path) as db:
            db.execute("UPDATE kpis SET value = ? WHERE id = ?", (self.values[kpi], kpi))

    def expected(self) -> dict[str, str]:
        return {kpi: "red" if value > 20 else "green" for kpi, value in self.values.items()}


def _workdir(tmp_path: Path, every: str | None) -> Warehouse:
    warehouse = Warehouse(tmp_path / "warehouse.db")
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "kpis.yaml").write_text(_rules(warehouse.path, every))
    return warehouse


def _env(tmp_path: Path, url: str, slack: SlackApi) -> dict[str, str]:
    return environment(tmp_path, KPIWATCH_DATABASE_URL=url, KPIWATCH_SLACK_TOKEN=slack.token,
                       KPIWATCH_SLACK_API_URL=slack.base_url,
                       KPIWATCH_LEASE_SECONDS=str(LEASE_SECONDS))  # fmt: skip


class Replicas:
    """`kpiwatch run` processes on one database, each logging to its own file."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self._workdir = workdir
        self._env = env
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.kills: list[float] = []  # monotonic times of SIGKILLs
        self._starts = Counter[int]()

    def start(self, n: int) -> None:
        self._starts[n] += 1
        log = (self._workdir / f"replica-{n}-{self._starts[n]}.log").open("wb")
        self.processes[n] = subprocess.Popen([*KPIWATCH, "run"], cwd=self._workdir,
                                             env=self._env, stdout=log,
                                             stderr=subprocess.STDOUT)  # fmt: skip
        log.close()

    def kill(self, n: int) -> None:
        self.kills.append(time.monotonic())
        self.processes[n].send_signal(signal.SIGKILL)
        self.processes[n].wait(10)

    def stop_all(self) -> list[int | None]:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes = []
        for process in self.processes.values():
            try:
                codes.append(process.wait(20))
            except subprocess.TimeoutExpired:
                process.kill()
                codes.append(process.wait(10))
        return codes

    def logs(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self._workdir.glob("replica-*.log")))


@contextmanager
def _replicas(workdir: Path, env: dict[str, str], count: int) -> Iterator[Replicas]:
    replicas = Replicas(workdir, env)
    try:
        for n in range(count):
            replicas.start(n)
        yield replicas
    finally:
        replicas.stop_all()


# ------------------------------------------------------------------ what the database says


def _query(url: str, sql: str) -> list[sa.Row[Any]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return list(connection.execute(sa.text(sql)))
    finally:
        engine.dispose()


def _states(url: str) -> dict[str, str]:
    try:
        found = _query(url, "SELECT kpi_id, status FROM kpi_state")
    except sa.exc.ProgrammingError:  # not migrated yet: the daemon is starting
        return {}
    return {row.kpi_id: row.status for row in found}


def _pending(url: str) -> int:
    rows = _query(url, "SELECT count(*) AS n FROM outbox WHERE state = 'pending'")
    return int(rows[0].n)


def _assert_consistent(url: str) -> None:
    """Each KPI's status changes form one chain ending in its state (no transition
    recorded twice, which two replicas evaluating at once would do), and every
    status change has its event and its Slack row."""
    changes = _query(url, "SELECT kpi_id, at, from_status, to_status FROM status_changes"
                          " ORDER BY kpi_id, at, id")  # fmt: skip
    states = _states(url)
    by_kpi: dict[str, list[sa.Row[Any]]] = {}
    for row in changes:
        by_kpi.setdefault(row.kpi_id, []).append(row)
    assert set(by_kpi) == set(states)
    for kpi, rows in by_kpi.items():
        assert rows[0].from_status is None, kpi
        for before, after in itertools.pairwise(rows):
            assert after.from_status == before.to_status, (kpi, before, after)
        assert rows[-1].to_status == states[kpi], kpi
    events = _query(url, "SELECT e.kpi_id, e.at, o.channel, o.state FROM events e"
                         " JOIN outbox o ON o.event_id = e.id"
                         " WHERE e.kind = 'status_changed'")  # fmt: skip
    notified = {(row.kpi_id, row.at) for row in events if row.channel == "slack"}
    transitions = {(r.kpi_id, r.at) for rows in by_kpi.values() for r in rows[1:]}
    assert transitions <= notified, sorted(transitions - notified)[:5]


def _slack_rows(url: str) -> list[sa.Row[Any]]:
    return _query(url, "SELECT id, target, state FROM outbox WHERE channel = 'slack'")


def _post_key(post: dict[str, Any]) -> tuple[str, str, str]:
    return (str(post.get("channel")), str(post.get("text")), str(post.get("thread_ts", "")))


def _delivered(slack: SlackApi) -> list[dict[str, Any]]:
    return [post for post in slack.posts() if "ts" in post]


def _duplicates(slack: SlackApi) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(first, second) for every message Slack received more than once."""
    first: dict[tuple[str, str, str], dict[str, Any]] = {}
    doubles = []
    for post in _delivered(slack):
        key = _post_key(post)
        if key in first:
            doubles.append((first[key], post))
        else:
            first[key] = post
    return doubles


def _in_flight_at_a_kill(post: dict[str, Any], kills: list[float]) -> bool:
    """Sent just before a SIGKILL: Slack had it, the killed process had not yet
    recorded it. At-least-once delivery resends exactly such a message."""
    return any(0 <= kill - post["received"] <= 1.0 for kill in kills)


# ------------------------------------------------------------------ the tests


def test_three_replicas_one_killed_and_restarted_notify_each_transition_once(
    tmp_path: Path, postgres_url: str
) -> None:
    warehouse = _workdir(tmp_path, every="1s")
    rng = random.Random(6)
    with slack_api() as slack, ExitStack() as stack:
        env = _env(tmp_path, postgres_url, slack)
        assert kpiwatch(tmp_path, "check", env=env).returncode == 0
        replicas = stack.enter_context(_replicas(tmp_path, env, 3))
        wait_until(lambda: len(_states(postgres_url)) == KPIS, 60, "every KPI evaluated")
        plan = {8: ("kill", 0), 16: ("start", 0), 24: ("kill", 1), 32: ("start", 1),
                40: ("kill", 2)}  # fmt: skip
        for step in range(48):  # a flip every 0.4 s: each KPI every ~2.4 s
            if step in plan:
                action, n = plan[step]
                getattr(replicas, action)(n)
            warehouse.flip(f"k{rng.randrange(KPIS)}")
            time.sleep(0.4)
        expected = warehouse.expected()
        wait_until(lambda: _states(postgres_url) == expected and _pending(postgres_url) == 0,
                   60, "the last values evaluated and every message sent")  # fmt: skip
        time.sleep(1.5)  # anything sent twice by now would show
        codes = replicas.stop_all()
        logs = replicas.logs()
        kills = replicas.kills

    assert [code for code in codes if code not in (0, -9)] == [], logs[-3000:]
    assert "Traceback" not in logs, logs[-3000:]
    _assert_consistent(postgres_url)
    rows = _slack_rows(postgres_url)
    assert {row.state for row in rows} == {"sent"}
    changes = _query(postgres_url, "SELECT count(*) AS n FROM status_changes")[0].n
    assert changes >= KPIS + 20  # the flips became transitions, not a quiet run
    delivered = _delivered(slack)
    doubles = _duplicates(slack)
    assert len(delivered) - len(doubles) == len(rows)  # each message arrived
    unexplained = [d for d in doubles if not _in_flight_at_a_kill(d[0], kills)]
    assert unexplained == [], unexplained
    print(f"replicas: {changes} status changes, {len(rows)} messages, "
          f"{len(delivered)} received, {len(doubles)} in flight at a kill and resent")


def test_postgres_restarted_under_the_daemon_loses_nothing(tmp_path: Path) -> None:
    warehouse = _workdir(tmp_path, every="1s")
    with private_postgres() as cluster, slack_api() as slack, ExitStack() as stack:
        env = _env(tmp_path, cluster.url, slack)
        replicas = stack.enter_context(_replicas(tmp_path, env, 1))
        wait_until(lambda: len(_states(cluster.url)) == KPIS, 60, "every KPI evaluated")
        warehouse.flip("k0")
        # red and told: a message sent in the instant the database stops could not be
        # marked sent and would be sent again (delivery is at-least-once, by design)
        wait_until(lambda: _states(cluster.url)["k0"] == "red" and _pending(cluster.url) == 0,
                   30, "k0 red and its message marked sent")  # fmt: skip
        cluster.stop()
        for kpi in ("k1", "k2", "k0"):  # changes while the database is down
            warehouse.flip(kpi)
        time.sleep(3)
        cluster.start()
        warehouse.flip("k3")
        expected = warehouse.expected()
        wait_until(lambda: _states(cluster.url) == expected and _pending(cluster.url) == 0,
                   60, "the daemon back at work after the restart")  # fmt: skip
        assert replicas.processes[0].poll() is None  # it rode out the outage
        codes = replicas.stop_all()
        logs = replicas.logs()
        _assert_consistent(cluster.url)
        rows = _slack_rows(cluster.url)

    assert codes == [0], logs[-3000:]
    assert "cannot claim work" in logs  # it noticed the outage, and carried on
    assert {row.state for row in rows} == {"sent"}
    delivered = _delivered(slack)
    assert _duplicates(slack) == []
    assert len(delivered) == len(rows)
    texts = " ".join(str(post["text"]) for post in delivered)
    for kpi in ("KPI 0", "KPI 1", "KPI 2", "KPI 3"):
        assert kpi in texts


def test_run_once_killed_at_random_points_keeps_state_and_forgets_nothing(
    tmp_path: Path, postgres_url: str
) -> None:
    warehouse = _workdir(tmp_path, every=None)
    rng = random.Random(42)
    kills: list[float] = []
    with slack_api() as slack:
        env = _env(tmp_path, postgres_url, slack)
        env["KPIWATCH_LEASE_SECONDS"] = "1"
        # how long a whole run takes on this machine now: the kills fall inside runs
        # whatever the machine's speed (fixed waits of 0.5-3 s let a fast run finish)
        started = time.monotonic()
        first = kpiwatch(tmp_path, "run", "--once", env=env, timeout=120)
        assert first.returncode == 0, first.stderr
        whole = time.monotonic() - started
        for _ in range(10):
            for kpi in rng.sample(sorted(warehouse.values), 3):
                warehouse.flip(kpi)
            run = subprocess.Popen([*KPIWATCH, "run", "--once"], cwd=tmp_path, env=env,
                                   stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)  # fmt: skip
            try:
                run.wait(rng.uniform(0.1, 0.9) * whole)
            except subprocess.TimeoutExpired:
                kills.append(time.monotonic())
                run.send_signal(signal.SIGKILL)
                run.wait(10)
        time.sleep(1.5)  # the killed runs' claims expire
        for _ in range(2):
            result = kpiwatch(tmp_path, "run", "--once", env=env, timeout=120)
            assert result.returncode == 0, result.stderr
        assert _states(postgres_url) == warehouse.expected()
        _assert_consistent(postgres_url)
        rows = _slack_rows(postgres_url)
        delivered = _delivered(slack)
        doubles = _duplicates(slack)

    print(f"run --once: {len(kills)} of 10 runs killed, {len(rows)} messages, "
          f"{len(delivered)} received, {len(doubles)} in flight at a kill and resent")
    assert len(kills) >= 5  # most runs really were killed
    assert {row.state for row in rows} == {"sent"}  # nothing left behind
    assert len(delivered) - len(doubles) == len(rows)  # each message arrived
    unexplained = [d for d in doubles if not _in_flight_at_a_kill(d[0], kills)]
    assert unexplained == [], unexplained

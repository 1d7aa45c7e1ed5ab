"""The daemon with Slack configured, killed while Slack is down: after a restart every
notification arrives, each once."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import KPIWATCH, environment, kpiwatch, wait_until

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from slack_api import Fault, slack_api

pytestmark = pytest.mark.slow

RULES = """
sources: {wh: {type: sql, url: "sqlite:///WAREHOUSE"}}
teams: {cs: {slack: "#cs-kpis"}}
kpis:
  - {id: errors, name: Error rate, owner: dana@example.com, team: cs, unit: "%",
     direction: lower_is_better, source: wh, query: SELECT value FROM errors, every: 1s,
     thresholds: {yellow: 10, red: 20}}
"""


def _setup(workdir: Path, value: float) -> None:
    with sqlite3.connect(workdir / "warehouse.db") as db:
        db.execute("CREATE TABLE IF NOT EXISTS errors (value REAL)")
        db.execute("DELETE FROM errors")
        db.execute("INSERT INTO errors VALUES (?)", (value,))
    (workdir / "rules").mkdir(exist_ok=True)
    (workdir / "rules" / "kpis.yaml").write_text(
        RULES.replace("WAREHOUSE", str(workdir / "warehouse.db"))
    )


def _outbox(workdir: Path, env: dict[str, str]) -> list[dict[str, object]]:
    result = kpiwatch(workdir, "outbox", "list", "--json", env=env)
    if "no state database" in result.stderr:  # the daemon has not created it yet
        return []
    assert result.returncode == 0, result.stderr
    rows: list[dict[str, object]] = json.loads(result.stdout)
    return rows


def test_killed_while_slack_is_down_then_everything_arrives_once(tmp_path: Path) -> None:
    _setup(tmp_path, 25.0)
    with slack_api() as slack:
        env = environment(tmp_path, KPIWATCH_SLACK_TOKEN=slack.token,
                          KPIWATCH_SLACK_API_URL=slack.base_url)  # fmt: skip
        slack.fail("chat.postMessage", *[Fault(status=503)] * 50)
        log = (tmp_path / "daemon.log").open("w")
        daemon = subprocess.Popen([*KPIWATCH, "run"], cwd=tmp_path, env=env, stdout=log,
                                  stderr=subprocess.STDOUT)  # fmt: skip
        try:
            # bounded, and returns at the first attempt (about 1.5 s on a quiet machine);
            # a CI run under load once needed more than 30 s
            wait_until(lambda: any(m["attempts"] for m in _outbox(tmp_path, env)), 90,
                       "a failed delivery attempt")  # fmt: skip
        except AssertionError as exc:  # say why: the daemon's own account
            raise AssertionError(f"{exc}; daemon exit code {daemon.poll()}, its log:\n"
                                 f"{(tmp_path / 'daemon.log').read_text()[-3000:]}") from None
        finally:
            daemon.send_signal(signal.SIGKILL)  # no clean stop: mid-retry
            daemon.wait(10)
            log.close()
        assert "Slack token verified" in (tmp_path / "daemon.log").read_text()
        pending = _outbox(tmp_path, env)
        assert {m["event"] for m in pending} == {"status_changed", "escalated"}
        assert all(m["state"] == "pending" for m in pending)

        slack._faults.clear()  # healthy again: no more faults queued
        slack.calls.clear()
        latest = max(m["next_attempt_at"] for m in pending)
        wait_until(lambda: time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) > str(latest)[:19],
                   120, "the retry time")  # fmt: skip
        result = kpiwatch(tmp_path, "run", "--once", env=env)
        assert result.returncode == 0, result.stderr
        delivered = [p for p in slack.posts() if "ts" in p]
        assert len(delivered) == 2
        assert delivered[1]["thread_ts"] == delivered[0]["ts"]
        assert all(m["state"] == "sent" for m in _outbox(tmp_path, env))
        # another run sends nothing again
        assert kpiwatch(tmp_path, "run", "--once", env=env).returncode == 0
        assert len([p for p in slack.posts() if "ts" in p]) == 2

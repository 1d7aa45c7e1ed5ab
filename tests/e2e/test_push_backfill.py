"""`kpiwatch push` and `kpiwatch backfill` as a user runs them."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from helpers import environment, kpiwatch, status_json

RULES = """
sources:
  wh: {type: sql, url: "sqlite:///WAREHOUSE"}
kpis:
  - {id: nps, name: NPS, owner: sam@example.com, direction: higher_is_better, source: push,
     thresholds: {yellow: 40, red: 30}}
  - {id: nps_gap, name: NPS gap, owner: sam@example.com, direction: lower_is_better,
     source: formula, query: 50 - nps, thresholds: {red: 25}}
  - {id: daily, name: Daily, owner: sam@example.com, direction: lower_is_better, source: wh,
     query: "SELECT day, value FROM daily ORDER BY day", thresholds: {red: 100}}
  - {id: scalar, name: Scalar, owner: sam@example.com, direction: lower_is_better, source: wh,
     query: "SELECT 1", thresholds: {red: 100}}
"""


def _setup(workdir: Path) -> None:
    today = datetime.now(UTC).date()
    with sqlite3.connect(workdir / "warehouse.db") as db:
        db.execute("CREATE TABLE daily (day DATE, value REAL)")
        db.executemany(
            "INSERT INTO daily VALUES (?, ?)",
            [((today - timedelta(days=d)).isoformat(), float(d)) for d in range(30)],
        )
    (workdir / "rules").mkdir()
    (workdir / "rules" / "kpis.yaml").write_text(
        RULES.replace("WAREHOUSE", str(workdir / "warehouse.db"))
    )


def test_push_records_evaluates_and_follows_into_formulas(tmp_path: Path) -> None:
    _setup(tmp_path)
    result = kpiwatch(tmp_path, "push", "nps", "25", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "red"
    rows = status_json(tmp_path)
    assert rows["nps"]["status"] == "red"
    assert rows["nps"]["value"] == 25.0
    assert rows["nps_gap"]["value"] == 25.0
    earlier = (datetime.now(UTC) - timedelta(days=2)).replace(microsecond=0).isoformat()
    assert kpiwatch(tmp_path, "push", "nps", "20", "--at", earlier).returncode == 0
    history = json.loads(kpiwatch(tmp_path, "history", "nps", "--json").stdout)
    assert [o["value"] for o in history["observations"]] == [20.0, 25.0]
    assert status_json(tmp_path)["nps"]["value"] == 25.0  # the latest value is still judged


def test_push_refuses_bad_input_and_stores_nothing(tmp_path: Path) -> None:
    _setup(tmp_path)
    not_push = kpiwatch(tmp_path, "push", "daily", "5")
    assert not_push.returncode == 2
    assert "takes its values from source 'wh', not from pushes" in not_push.stderr
    nan = kpiwatch(tmp_path, "push", "nps", "nan")
    assert nan.returncode == 2
    assert "not a finite number" in nan.stderr
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert "in the future" in kpiwatch(tmp_path, "push", "nps", "5", "--at", future).stderr
    assert (
        "invalid time 'yesterday'"
        in kpiwatch(tmp_path, "push", "nps", "5", "--at", "yesterday").stderr
    )
    history = json.loads(kpiwatch(tmp_path, "history", "nps", "--json").stdout)
    assert history["observations"] == []


def test_push_at_a_stored_time_is_refused_not_ignored(tmp_path: Path) -> None:
    _setup(tmp_path)
    at = "2026-10-01T09:00:00+00:00"
    assert kpiwatch(tmp_path, "push", "nps", "41", "--at", at).returncode == 0
    again = kpiwatch(tmp_path, "push", "nps", "12", "--at", at)
    assert again.returncode == 2
    assert f"'nps' already has a value at {at} (41); nothing changed" in again.stderr
    history = json.loads(kpiwatch(tmp_path, "history", "nps", "--json").stdout)
    assert [o["value"] for o in history["observations"]] == [41]


def test_backfill_loads_history_once(tmp_path: Path) -> None:
    _setup(tmp_path)
    since = (datetime.now(UTC).date() - timedelta(days=9)).isoformat()  # today and 9 days back
    first = kpiwatch(tmp_path, "backfill", "daily", "--from", since)
    assert first.returncode == 0, first.stderr
    assert "daily: 10 points" in first.stdout
    assert "10 new, 0 already stored" in first.stdout
    again = kpiwatch(tmp_path, "backfill", "daily")
    assert again.returncode == 0, again.stderr
    assert "30 points" in again.stdout
    assert "20 new, 10 already stored" in again.stdout
    history = json.loads(kpiwatch(tmp_path, "history", "daily", "--json", "--limit", "100").stdout)
    assert len(history["observations"]) == 30


def test_backfill_of_a_scalar_query_explains_why_not(tmp_path: Path) -> None:
    _setup(tmp_path)
    result = kpiwatch(tmp_path, "backfill", "scalar")
    assert result.returncode == 1
    assert "gives one current value, not a history" in result.stderr
    assert kpiwatch(tmp_path, "backfill", "nps").returncode == 2


def test_backfill_says_which_points_the_retention_will_delete(tmp_path: Path) -> None:
    _setup(tmp_path)
    since = (datetime.now(UTC).date() - timedelta(days=9)).isoformat()
    default = kpiwatch(tmp_path, "backfill", "daily", "--from", since)
    assert default.returncode == 0, default.stderr
    assert "note:" not in default.stderr  # the default retention, 400d, keeps them
    env = environment(tmp_path, KPIWATCH_RETENTION="5d")
    short = kpiwatch(tmp_path, "backfill", "daily", "--from", since, env=env)
    assert short.returncode == 0, short.stderr
    cut = (datetime.now(UTC) - timedelta(days=5)).date()
    assert (f"note: points before {cut} are older than the retention "
            "(KPIWATCH_RETENTION=5d); the next prune deletes them") in short.stderr  # fmt: skip
    # the days 5 to 9 back: each point is the day's midnight, older than now - 5d
    assert "deleted 5 observations of 4 KPIs," in kpiwatch(tmp_path, "prune", env=env).stdout

"""`kpiwatch backtest` as a user runs it, and faithful to what the daemon did.

The faithfulness test lives the demo's ten KPIs through 60 days: each day at
00:00 the day's warehouse rows appear, the real runner (SQL source, SQLite store,
fixed clock) ticks reviews and evaluates every KPI. Replaying the stored history
then ends in exactly the state `status --json` shows. (History loaded before the
daemon's first evaluation, a backfill or a first poll's series, is replayed too:
its episodes, which the daemon never judged, can then start earlier than
`status` says. The README says so.)
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from helpers import environment, kpiwatch

from kpiwatch.config.loader import load_rules
from kpiwatch.config.settings import Settings
from kpiwatch.demo import copy_rules, demo_environment
from kpiwatch.demo.warehouse import SCHEMA, build_warehouse
from kpiwatch.runtime.standalone import standalone_runner
from kpiwatch.testing import FixedClock

END = datetime(2026, 11, 30, tzinfo=UTC)
DAYS = 60
TABLES = {  # table -> its date column
    "daily_growth": "day", "marketing": "day", "churn": "day", "nps": "week",
    "support": "day", "revenue": "day", "invoices": "day", "orders": "day",
    "revenue_plan": "month", "visits": "day",
}  # fmt: skip


def _live_the_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Run the demo's KPIs (polled daily) through DAYS days; the CLI's environment."""
    full = tmp_path / "full.db"
    build_warehouse(full, END.date())
    live = tmp_path / "warehouse.db"
    with sqlite3.connect(live) as db:
        db.executescript(SCHEMA)
    rules = tmp_path / "rules"
    for path in copy_rules(rules):
        path.write_text(path.read_text().replace("every: 5m", "every: 1d"))
    env = demo_environment(tmp_path, END)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    state = f"sqlite:///{tmp_path}/state.db"
    settings = Settings(rules_dir=rules, database_url=state, _env_file=None)  # type: ignore[call-arg]
    loaded = load_rules(rules)
    clock = FixedClock()
    first = END - timedelta(days=DAYS - 1)
    with standalone_runner(settings, loaded, clock) as (_, runner):
        for day in range(DAYS):
            now = first + timedelta(days=day)
            _reveal(full, live, now.date() - timedelta(days=1), now.date())
            clock.set(now)
            runner.tick_reviews()
            stats = runner.evaluate_all()
            assert stats.evaluated == 12
    return environment(tmp_path, KPIWATCH_DATABASE_URL=state, **env)


def _reveal(full: Path, live: Path, after: date, until: date) -> None:
    """Copy the rows dated (after, until] of every table: the warehouse as of ``until``."""
    with sqlite3.connect(live) as db:
        db.execute("ATTACH DATABASE ? AS full", (str(full),))
        for table, column in TABLES.items():
            db.execute(
                f"INSERT INTO {table} SELECT * FROM full.{table} "
                f"WHERE {column} > ? AND {column} <= ?",
                (after.isoformat(), until.isoformat()),
            )


@pytest.mark.slow
def test_replaying_the_whole_history_ends_in_the_state_status_shows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _live_the_demo(tmp_path, monkeypatch)
    status = kpiwatch(tmp_path, "status", "--json", env=env)
    assert status.returncode == 0, status.stderr
    shown = {row["id"]: row for row in json.loads(status.stdout)}
    replayed = kpiwatch(
        tmp_path, "backtest", "--all", "--to", END.isoformat(), "--json", env=env, timeout=120
    )
    assert replayed.returncode == 0, replayed.stderr
    report = json.loads(replayed.stdout)
    finals = {kpi["id"]: kpi["final"] for kpi in report["kpis"]}
    assert set(finals) == set(shown)
    assert len(finals) == 12
    for kpi_id, final in finals.items():
        row = shown[kpi_id]
        assert (final["status"], final["since"], final["escalated"], final["review"]) == (
            row["status"], row["since"], row["escalated"], row["review"],
        ), kpi_id  # fmt: skip
    # not a trivial history: the demo's KPIs changed status and escalated meanwhile
    assert sum(len(kpi["transitions"]) for kpi in report["kpis"]) >= 5
    assert any(e["kind"] == "escalated" for kpi in report["kpis"] for e in kpi["events"])
    assert {row["status"] for row in shown.values()} >= {"green", "red", "yellow", "unknown"}


# -- the command on a small, known history -------------------------------------------

SMALL_RULES = """
sources:
  wh: {type: sql, url: "sqlite:///WAREHOUSE"}
teams:
  cs: {slack: "#cs-kpis"}
kpis:
  - id: churn
    name: Churn
    owner: dana@example.com
    team: cs
    unit: "%"
    direction: lower_is_better
    source: wh
    query: SELECT day, pct FROM churn ORDER BY day
    every: 1d
    review: monthly
    thresholds: {yellow: 4.5, red: 5.5}
"""
DAY0 = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
VALUES = [4.0, 4.8, 5.8, 5.9, 4.2, 4.1]  # green, yellow, red, red, green, green


def _small(tmp_path: Path, *, store: bool = True) -> dict[str, str]:
    warehouse = tmp_path / "warehouse.db"
    with sqlite3.connect(warehouse) as db:
        db.execute("CREATE TABLE churn (day TEXT, pct REAL)")
        db.executemany(
            "INSERT INTO churn VALUES (?, ?)",
            [((DAY0 + timedelta(days=i)).date().isoformat(), v) for i, v in enumerate(VALUES)],
        )
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "kpis.yaml").write_text(SMALL_RULES.replace("WAREHOUSE", str(warehouse)))
    env = environment(tmp_path)
    if store:  # the observations, as polls would have stored them
        from kpiwatch.model import Observation
        from kpiwatch.store.repository import Store

        opened = Store.open(env["KPIWATCH_DATABASE_URL"])
        opened.add_observations(
            Observation("churn", DAY0 + timedelta(days=i), v) for i, v in enumerate(VALUES)
        )
        opened.close()
    return env


TO = (DAY0 + timedelta(days=5)).isoformat()


def test_backtest_prints_transitions_notifications_and_a_summary(tmp_path: Path) -> None:
    env = _small(tmp_path)
    result = kpiwatch(tmp_path, "backtest", "churn", "--to", TO, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "churn (Churn): 6 evaluations, 2026-03-02 00:00 → 2026-03-07 00:00",
        "  2026-03-03 00:00  green → yellow  4.8 %  (value 4.8 % > yellow 4.5 %)",
        "  2026-03-04 00:00  yellow → red  5.8 %  (value 5.8 % > red 5.5 %)",
        "  2026-03-04 00:00  escalated: monthly → weekly reviews",
        "  2026-03-06 00:00  red → green  4.2 %  (value 4.2 % within thresholds)",
        "  notifications: 6",
        "    slack:#cs-kpis: 4, first: ⚠️ Churn green → yellow: 4.8 %",
        "    email:dana@example.com: 2, first: 🔴 Churn yellow → red: 5.8 %",
        "  episodes: green 2, yellow 1, red 1; time in green 2d, yellow 1d, red 2d",
        "  ends green since 2026-03-06 00:00, weekly reviews (escalated)",
        "1 KPI(s), 6 evaluations, 3 status changes; notifications: slack 4, email 2",
    ]


def test_backtest_json_follows_the_documented_shape(tmp_path: Path) -> None:
    env = _small(tmp_path)
    result = kpiwatch(tmp_path, "backtest", "--all", "--to", TO, "--json", env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["from"] == DAY0.isoformat()
    assert report["to"] == TO
    (kpi,) = report["kpis"]
    assert kpi["transitions"][1] == {
        "at": "2026-03-04T00:00:00+00:00", "from": "yellow", "to": "red", "value": 5.8,
        "reasons": ["value 5.8 % > red 5.5 %"],
    }  # fmt: skip
    assert [e["kind"] for e in kpi["events"]] == ["escalated"]
    assert {"at": "2026-03-04T00:00:00+00:00", "event": "escalated",
            "route": "email:dana@example.com", "muted": False} in kpi["notifications"]  # fmt: skip
    assert kpi["episodes"][2] == {
        "status": "red", "start": "2026-03-04T00:00:00+00:00", "end": "2026-03-06T00:00:00+00:00"
    }  # fmt: skip
    assert kpi["summary"] == {
        "episodes": {"green": 2, "yellow": 1, "red": 1},
        "seconds_in": {"green": 172800.0, "yellow": 86400.0, "red": 172800.0},
        "notifications": {"slack": 4, "email": 2},
    }


def test_compare_shows_what_a_rule_change_would_have_done(tmp_path: Path) -> None:
    env = _small(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    text = (tmp_path / "rules" / "kpis.yaml").read_text()
    (other / "kpis.yaml").write_text(text.replace("{yellow: 4.5, red: 5.5}", "{red: 6}"))
    result = kpiwatch(tmp_path, "backtest", "churn", "--to", TO, "--compare", str(other), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "churn: 3 → 0 status changes, 6 → 0 notifications",
        "  - 2026-03-03 00:00  green → yellow",
        "  - 2026-03-04 00:00  yellow → red",
        "  - 2026-03-06 00:00  red → green",
        "  episodes: 0 added, 3 removed",
        "all KPIs: 6 notifications under the current rules, 0 under the other",
    ]
    as_json = kpiwatch(
        tmp_path, "backtest", "churn", "--to", TO, "--compare", str(other), "--json", env=env
    )
    (kpi,) = json.loads(as_json.stdout)["kpis"]
    assert kpi["diff"]["notifications"] == {"a": 6, "b": 0}
    assert len(kpi["a"]["transitions"]) == 3
    assert kpi["b"]["transitions"] == []


def test_fetch_replays_the_source_series_and_stores_only_when_asked(tmp_path: Path) -> None:
    env = _small(tmp_path, store=False)
    plain = kpiwatch(tmp_path, "backtest", "churn", "--to", TO, env=env)
    assert plain.returncode == 2
    assert "no state database" in plain.stderr  # nothing stored yet, and none created
    fetched = kpiwatch(tmp_path, "backtest", "churn", "--to", TO, "--fetch", env=env)
    assert fetched.returncode == 0, fetched.stderr
    assert "3 status changes" in fetched.stdout.splitlines()[-1]
    assert not (tmp_path / "state.db").exists()  # --fetch alone stored nothing
    as_json = kpiwatch(tmp_path, "backtest", "churn", "--to", TO, "--fetch", "--json", env=env)
    assert json.loads(as_json.stdout)["from"] == DAY0.isoformat()
    kept = kpiwatch(tmp_path, "backtest", "churn", "--to", TO, "--fetch", "--store", env=env)
    assert "stored 6 new observation(s)" in kept.stderr
    last = kpiwatch(tmp_path, "backtest", "churn", "--to", TO, env=env)
    assert "3 status changes" in last.stdout.splitlines()[-1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "name the KPIs to replay, or give --all"),
        (("churn", "--all"), "name the KPIs to replay, or give --all"),
        (("chrun",), "no KPI 'chrun' in the rules; did you mean 'churn'?"),
        (("churn", "--store"), "--store keeps what --fetch reads: give both"),
        (("churn", "--from", "2026-03-05", "--to", "2026-03-01"), "is not before --to"),
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    env = _small(tmp_path, store=False)
    result = kpiwatch(tmp_path, "backtest", *args, env=env)
    assert result.returncode == 2
    assert message in result.stderr

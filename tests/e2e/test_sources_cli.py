"""Sources wired through the real command: relative CSV paths, data problems as unknown."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from helpers import environment, kpiwatch, status_json

RULES = """
sources:
  sheet: {type: csv, path: data/kpis.csv, timestamp_column: month, owner: fin@example.com}
  api: {type: http, url: "http://127.0.0.1:9/nothing-listens-here", timeout: 1s, retries: 0}
kpis:
  - {id: margin, name: Gross margin, owner: ava@example.com, unit: "%",
     direction: higher_is_better, source: sheet, query: margin_pct, thresholds: {red: 30}}
  - {id: mrr, name: MRR, owner: ava@example.com, direction: higher_is_better, source: api,
     query: data.mrr, thresholds: {red: 1}}
"""


def _env(workdir: Path) -> dict[str, str]:
    return environment(
        workdir,
        KPIWATCH_RULES_DIR=str(workdir / "rules"),
        KPIWATCH_DATABASE_URL=f"sqlite:///{workdir}/state.db",
    )


def _setup(workdir: Path) -> None:
    rules = workdir / "rules"
    (rules / "data").mkdir(parents=True)
    (rules / "kpis.yaml").write_text(RULES)
    (rules / "data" / "kpis.csv").write_text(
        "month,margin_pct\n2026-08-01,41.5\n2026-09-01,39.0\n2026-10-01,28.5\n"
    )


def test_csv_path_is_read_relative_to_its_rule_file_and_failures_are_unknown(
    tmp_path: Path,
) -> None:
    _setup(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    result = kpiwatch(tmp_path / "elsewhere", "run", "--once", env=_env(tmp_path))
    assert result.returncode == 0, result.stderr
    rows = status_json(tmp_path / "elsewhere", _env(tmp_path))
    assert rows["margin"]["status"] == "red"
    assert rows["margin"]["value"] == 28.5
    assert rows["mrr"]["status"] == "unknown"
    assert "source 'api'" in (rows["mrr"]["error"] or "")
    history = json.loads(
        kpiwatch(tmp_path / "elsewhere", "history", "margin", "--json", env=_env(tmp_path)).stdout
    )
    assert [o["value"] for o in history["observations"]] == [41.5, 39.0, 28.5]
    # the failing source is one data problem per outage, even across runs
    assert kpiwatch(tmp_path / "elsewhere", "run", "--once", env=_env(tmp_path)).returncode == 0
    with sqlite3.connect(tmp_path / "state.db") as db:
        down = db.execute(
            "SELECT source, data FROM events WHERE kind = 'source_down'"
        ).fetchall()
        targets = db.execute(
            "SELECT o.target FROM outbox o JOIN events e ON e.id = o.event_id "
            "WHERE e.kind = 'source_down'"
        ).fetchall()
    assert len(down) == 1
    assert down[0][0] == "api"
    assert targets == [("on-call",)]  # no owner, no on-call address: the log says so

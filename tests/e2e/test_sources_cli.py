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
    # SPEC §5a: the source's problem, shown as such; no verdict yet to carry
    assert rows["mrr"]["verdict"] is None
    assert rows["mrr"]["data_problem"]["scope"] == "source"
    assert rows["mrr"]["data_problem"]["source"] == "api"
    history = json.loads(
        kpiwatch(tmp_path / "elsewhere", "history", "margin", "--json", env=_env(tmp_path)).stdout
    )
    assert [o["value"] for o in history["observations"]] == [41.5, 39.0, 28.5]
    # the failing source is one data problem per outage, even across runs
    assert kpiwatch(tmp_path / "elsewhere", "run", "--once", env=_env(tmp_path)).returncode == 0
    with sqlite3.connect(tmp_path / "state.db") as db:
        down = db.execute(
            "SELECT source, data FROM events WHERE kind = 'data_incident' AND kpi_id IS NULL"
        ).fetchall()
        targets = db.execute(
            "SELECT o.target FROM outbox o JOIN events e ON e.id = o.event_id "
            "WHERE e.kind = 'data_incident'"
        ).fetchall()
    assert len(down) == 1
    assert down[0][0] == "api"
    assert targets == [("on-call",)]  # no owner, no on-call address: the log says so


# ------------------------------------------------------------ files outside the roots

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"
SHEET_ONLY = """
sources:
  sheet: {{type: csv, path: {path}, timestamp_column: month}}
kpis:
  - {{id: margin, name: Gross margin, owner: ava@example.com, direction: higher_is_better,
     source: sheet, query: margin_pct, thresholds: {{red: 30}}}}
"""


def _sheet_rules(workdir: Path, path: str) -> None:
    (workdir / "rules").mkdir(exist_ok=True)
    (workdir / "rules" / "kpis.yaml").write_text(SHEET_ONLY.format(path=json.dumps(path)))


def test_proc_self_environ_is_refused_and_the_environment_shown_nowhere(tmp_path: Path) -> None:
    _sheet_rules(tmp_path, "/proc/self/environ")
    env = {**_env(tmp_path), "AWS_SECRET_ACCESS_KEY": SECRET}
    check = kpiwatch(tmp_path, "check", env=env)
    assert check.returncode == 1
    assert check.stdout.startswith(
        f"{tmp_path / 'rules' / 'kpis.yaml'}:3:28: sources.sheet.path: '/proc/self/environ' "
        "(resolves to '/proc/"
    ), check.stdout
    assert f"is outside the rules directory and KPIWATCH_FILE_ROOTS ({tmp_path / 'rules'})" in (
        check.stdout
    )
    run = kpiwatch(tmp_path, "run", "--once", env=env)
    assert run.returncode != 0
    assert "sources.sheet.path" in run.stdout + run.stderr
    for output in (check.stdout, check.stderr, run.stdout, run.stderr):
        assert SECRET[:8] not in output
        assert "AWS_SECRET_ACCESS_KEY" not in output


def test_an_environment_dump_in_the_rules_dir_is_not_published(tmp_path: Path) -> None:
    _sheet_rules(tmp_path, "data/environ")
    (tmp_path / "rules" / "data").mkdir()
    (tmp_path / "rules" / "data" / "environ").write_bytes(
        f"PATH=/usr/bin\x00AWS_SECRET_ACCESS_KEY={SECRET}\x00HOME=/root\x00".encode()
    )
    run = kpiwatch(tmp_path, "run", "--once", env=_env(tmp_path))
    assert run.returncode == 0, run.stderr
    status = kpiwatch(tmp_path, "status", "--json", env=_env(tmp_path))
    error = {row["id"]: row for row in json.loads(status.stdout)}["margin"]["error"]
    assert "no column 'margin_pct' for the value column (the KPI's query) (columns: " in error
    assert "'PATH=/usr/bin…'" in error
    for output in (run.stdout, run.stderr, status.stdout, error):
        for part in (SECRET[:8], SECRET[-8:], "AWS_SECRET", "HOME=/root"):
            assert part not in output


def test_a_file_root_lets_a_csv_outside_the_rules_dir_be_read(tmp_path: Path) -> None:
    data = tmp_path / "shared-data"
    data.mkdir()
    (data / "kpis.csv").write_text("month,margin_pct\n2026-09-01,39.0\n2026-10-01,28.5\n")
    _sheet_rules(tmp_path, str(data / "kpis.csv"))
    refused = kpiwatch(tmp_path, "check", env=_env(tmp_path))
    assert refused.returncode == 1
    assert "sources.sheet.path" in refused.stdout
    env = {**_env(tmp_path), "KPIWATCH_FILE_ROOTS": f"/nonexistent:{data}"}
    allowed = kpiwatch(tmp_path, "check", env=env)
    assert allowed.returncode == 0, allowed.stdout
    assert kpiwatch(tmp_path, "run", "--once", env=env).returncode == 0
    assert status_json(tmp_path, env)["margin"]["value"] == 28.5

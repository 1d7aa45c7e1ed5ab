"""`kpiwatch check` and `kpiwatch run --once` refuse a SQL source with a privileged role.

Exit 2 (a configuration error), naming the source and the role; a source that cannot
be reached at start is not fatal; ``allow_privileged: true`` and a read-only role pass.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import kpiwatch

RULES = """
sources:
  wh: {{type: sql, url: "{url}"{extra}}}
kpis:
  - id: signups
    name: Sign-ups
    owner: mia@example.com
    direction: higher_is_better
    source: wh
    query: SELECT COUNT(*) FROM signups
"""


def _rules(workdir: Path, url: str, extra: str = "") -> None:
    rules = workdir / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "kpis.yaml").write_text(RULES.format(url=url, extra=extra))


def _seed(url: str) -> None:
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql("CREATE TABLE signups (x INTEGER)")
        conn.exec_driver_sql("INSERT INTO signups VALUES (1)")
    engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("command", [["check"], ["run", "--once"]], ids=["check", "run-once"])
def test_superuser_source_exits_2_naming_source_and_role(
    tmp_path: Path, postgres_url: str, command: list[str]
) -> None:
    _seed(postgres_url)
    _rules(tmp_path, postgres_url)

    result = kpiwatch(tmp_path, *command)

    assert result.returncode == 2, result.stdout + result.stderr
    assert "kpiwatch: source 'wh': connects as 'postgres', which is a superuser" in result.stderr
    assert "CREATE ROLE kpiwatch_reader LOGIN" in result.stderr
    assert "evaluated" not in result.stdout  # refused before any KPI ran


@pytest.mark.postgres
def test_allow_privileged_and_read_only_role_pass_check_and_run(
    tmp_path: Path, postgres_url: str, postgres_reader_url: str
) -> None:
    _seed(postgres_url)
    for url, extra in ((postgres_url, ", allow_privileged: true"), (postgres_reader_url, "")):
        _rules(tmp_path, url, extra)
        checked = kpiwatch(tmp_path, "check")
        assert checked.returncode == 0, checked.stderr
        assert "ok: 1 KPIs, 1 sources" in checked.stdout
        ran = kpiwatch(tmp_path, "run", "--once")
        assert ran.returncode == 0, ran.stderr
        assert "evaluated 1 KPIs" in ran.stdout
        assert "0 failed" in ran.stdout


@pytest.mark.mariadb
def test_mariadb_root_source_exits_2_from_check(tmp_path: Path, mariadb_url: str) -> None:
    _rules(tmp_path, mariadb_url)

    result = kpiwatch(tmp_path, "check")

    assert result.returncode == 2, result.stdout + result.stderr
    assert "source 'wh': connects as 'root@" in result.stderr
    assert "FILE and SUPER" in result.stderr


def test_unreachable_source_is_a_warning_at_check_and_a_source_error_at_run(
    tmp_path: Path,
) -> None:
    _rules(tmp_path, "postgresql+psycopg://kpiwatch:s3cr3t@127.0.0.1:1/kpis")

    checked = kpiwatch(tmp_path, "check")
    assert checked.returncode == 0, checked.stderr
    assert "warning: source 'wh': cannot connect" in checked.stderr
    assert "s3cr3t" not in checked.stderr

    ran = kpiwatch(tmp_path, "run", "--once")
    assert ran.returncode == 0, ran.stderr  # started; the KPI is unknown (a source error)
    assert "evaluated 1 KPIs (1 unknown)" in ran.stdout
    assert "source not reachable at start" in ran.stderr
    assert "s3cr3t" not in ran.stderr


def test_check_names_a_writing_query_with_file_and_line(tmp_path: Path) -> None:
    warehouse = tmp_path / "w.db"
    _rules(tmp_path, f"sqlite:///{warehouse}")
    text = (tmp_path / "rules" / "kpis.yaml").read_text()
    (tmp_path / "rules" / "kpis.yaml").write_text(
        text.replace("SELECT COUNT(*) FROM signups", f"VACUUM INTO '{tmp_path}/copy.db'")
    )

    result = kpiwatch(tmp_path, "check")

    assert result.returncode == 1
    assert "kpis.yaml:10:12: kpis[0].query: VACUUM" in result.stdout
    assert not (tmp_path / "copy.db").exists()

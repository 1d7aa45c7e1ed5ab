"""SqlQuerySource details checked on SQLite alone (the contract suite covers the rest)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from kpiwatch.config import rules
from kpiwatch.errors import SourceTimeout
from kpiwatch.sources.sql import SqlQuerySource

NOW = datetime(2024, 6, 1, tzinfo=UTC)
KPI = rules.Kpi(
    id="k", name="K", owner="ann", direction="higher_is_better", source="db", query="SELECT 1"
)


def _source(tmp_path: Path, timeout: str = "5s") -> SqlQuerySource:
    sqlite3.connect(tmp_path / "kpis.db").close()  # the source opens it read-only: it must exist
    url = f"sqlite:///{tmp_path}/kpis.db"
    return SqlQuerySource("db", rules.SqlSource(type="sql", url=url, timeout=timeout))


def test_a_result_arriving_after_the_timeout_is_a_timeout(tmp_path: Path) -> None:
    # like MariaDB's SLEEP(), which returns 1 when max_statement_time interrupts it
    source = _source(tmp_path, timeout="1s")

    def nap(seconds: float) -> int:
        time.sleep(seconds)
        return 1

    def add_nap(dbapi_conn: Any, record: Any) -> None:
        dbapi_conn.create_function("nap", 1, nap)

    sa.event.listen(source._get_engine(), "connect", add_nap)
    with pytest.raises(SourceTimeout, match=r"timed out after 1\.[0-9]s"):
        source.fetch(KPI.model_copy(update={"query": "SELECT nap(1.2)"}), NOW)
    source.close()


def test_connections_go_back_to_the_pool_reset_and_still_read_only(tmp_path: Path) -> None:
    source = _source(tmp_path)
    source.fetch(KPI, NOW)

    with source._get_engine().connect() as conn:
        # a PRAGMA runs: the query's authorizer is gone; query_only is off again
        assert conn.exec_driver_sql("PRAGMA query_only").scalar_one() == 0
        # and yet the file itself is open read-only
        with pytest.raises(sa.exc.OperationalError, match="readonly database"):
            conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    source.close()


def test_close_twice_and_fetch_after_close(tmp_path: Path) -> None:
    source = _source(tmp_path)
    source.fetch(KPI, NOW)
    source.close()
    source.close()

    assert source.fetch(KPI, NOW).current.value == 1.0  # reopens lazily
    source.close()


def test_a_sqlite_source_loads_neither_psycopg_nor_sqlglot_for_a_vouched_query(
    tmp_path: Path, fresh_python: Callable[[str], str]
) -> None:
    # each is tens of MiB a daemon without PostgreSQL (or with a warm rules cache) never
    # needs; a fresh interpreter, since this one has both from other tests
    sqlite3.connect(tmp_path / "kpis.db").close()
    probe = (
        "import sys\n"
        "from datetime import UTC, datetime\n"
        "from kpiwatch.config import rules\n"
        "from kpiwatch.sources.sql import SqlQuerySource\n"
        "from kpiwatch.sources import sql_guard\n"
        "sql_guard.vouch('SELECT 1', 'sqlite')\n"
        f"url = 'sqlite:///{tmp_path}/kpis.db'\n"
        "source = SqlQuerySource('db', rules.SqlSource(type='sql', url=url))\n"
        "kpi = rules.Kpi(id='k', name='K', owner='ann', direction='higher_is_better',"
        " source='db', query='SELECT 1')\n"
        "with source.held():\n"
        "    assert source.fetch(kpi, datetime.now(UTC)).current.value == 1.0\n"
        "source.close()\n"
        "print(sorted(m for m in ('psycopg', 'sqlglot') if m in sys.modules))\n"
    )
    assert fresh_python(probe).strip() == "[]"

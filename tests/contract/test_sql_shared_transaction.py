"""A held run of PostgreSQL fetches shares its read-only transaction, within bounds.

One transaction per query was three round trips (``BEGIN``, the query, ``ROLLBACK``);
a run of a batch's fetches on one held connection shares one among at most
``SHARED_QUERIES`` queries and ``SHARED_SECONDS`` (``kpiwatch.sources.sql_session``).
These cases pin what that may and may not change, on a real server, as a read-only
role: each query still sees fresh data, a failed or cut-off query ends the
transaction, the bounds hold, and a setting changed inside a run is undone with it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from kpiwatch.config import rules
from kpiwatch.errors import BadValueError, SourceError, SourceTimeout
from kpiwatch.sources import sql_session
from kpiwatch.sources.sql import SqlQuerySource

pytestmark = pytest.mark.postgres

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
# when the query's transaction began: the same for every query of one transaction
BEGAN = "SELECT extract(epoch FROM transaction_timestamp())"
DEFAULT_WRITABLE = (
    "SELECT CASE WHEN current_setting('default_transaction_read_only') = 'on' THEN 0 ELSE 1 END"
)
WRITABLE = "SELECT CASE WHEN current_setting('transaction_read_only') = 'on' THEN 0 ELSE 1 END"


def _kpi(query: str) -> rules.Kpi:
    return rules.Kpi(id="k", name="K", owner="ann", direction="lower_is_better",
                     source="warehouse", query=query)  # fmt: skip


@pytest.fixture
def admin(postgres_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql("CREATE TABLE metrics (kpi text PRIMARY KEY, value float)")
        conn.exec_driver_sql("INSERT INTO metrics VALUES ('a', 1)")
        # what the statement check cannot see: set_config() inside a function
        conn.exec_driver_sql(
            "CREATE FUNCTION turn_writable() RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
            "PERFORM set_config('default_transaction_read_only', 'off', false); RETURN 1; END $$"
        )
    yield engine
    engine.dispose()


@pytest.fixture
def source(admin: sa.Engine, postgres_reader_url: str) -> Iterator[SqlQuerySource]:
    with admin.connect() as conn:  # the recipe's grants cover the tables made before it
        conn.exec_driver_sql("GRANT SELECT ON metrics TO PUBLIC")
    src = SqlQuerySource("warehouse", rules.SqlSource(type="sql", url=postgres_reader_url))
    yield src
    src.close()


def _value(source: SqlQuerySource, query: str) -> float:
    return source.fetch(_kpi(query), NOW).current.value


def _began(source: SqlQuerySource, times: int) -> list[float]:
    began = []
    for _ in range(times):
        began.append(_value(source, BEGAN))
        time.sleep(0.002)  # transaction_timestamp() is in microseconds
    return began


def test_a_held_run_shares_a_transaction_and_a_fetch_alone_has_its_own(
    source: SqlQuerySource,
) -> None:
    with source.held():
        shared = _began(source, 4)
    alone = _began(source, 2)

    assert len(set(shared)) == 1
    assert len(set(alone)) == 2
    assert min(alone) > shared[0]


def test_each_query_of_a_shared_transaction_sees_what_was_committed_before_it(
    admin: sa.Engine, source: SqlQuerySource
) -> None:
    query = "SELECT value FROM metrics WHERE kpi = 'a'"
    with source.held():
        before = _value(source, query)
        with admin.connect() as conn:
            conn.exec_driver_sql("UPDATE metrics SET value = 2 WHERE kpi = 'a'")
        after = _value(source, query)
        began = _began(source, 2)

    assert (before, after) == (1.0, 2.0)
    assert len(set(began)) == 1  # still the same transaction: READ COMMITTED snapshots


def test_a_failed_or_cut_off_query_ends_the_transaction_and_the_run_goes_on(
    source: SqlQuerySource,
) -> None:
    with source.held():
        first = _began(source, 2)
        with pytest.raises(SourceError, match="division by zero"):
            _value(source, "SELECT 1 / 0")
        second = _began(source, 2)
        with pytest.raises(BadValueError, match="more than 10000 rows"):
            _value(source, "SELECT generate_series(1, 20000)")
        third = _began(source, 2)

    assert [len(set(b)) for b in (first, second, third)] == [1, 1, 1]
    assert first[0] < second[0] < third[0]


def test_a_query_stopped_at_its_timeout_ends_the_transaction_and_the_run_goes_on(
    admin: sa.Engine, postgres_reader_url: str
) -> None:
    with admin.connect() as conn:
        conn.exec_driver_sql("GRANT SELECT ON metrics TO PUBLIC")
    config = rules.SqlSource(type="sql", url=postgres_reader_url, timeout="1s")
    source = SqlQuerySource("warehouse", config)
    try:
        with source.held():
            before = _began(source, 2)
            with pytest.raises(SourceTimeout):
                _value(source, "SELECT pg_sleep(5)")
            after = _began(source, 2)
            value = _value(source, "SELECT value FROM metrics WHERE kpi = 'a'")
    finally:
        source.close()

    assert len(set(before)) == len(set(after)) == 1
    assert before[0] < after[0]
    assert value == 1.0


def test_a_transaction_takes_at_most_shared_queries_and_no_more_once_it_is_old(
    source: SqlQuerySource, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sql_session, "SHARED_QUERIES", 3)
    with source.held():
        counted = _began(source, 7)
    monkeypatch.setattr(sql_session, "SHARED_QUERIES", 100)
    monkeypatch.setattr(sql_session, "SHARED_SECONDS", 0.05)
    with source.held():
        young = _began(source, 1)
        time.sleep(0.1)
        aged = _began(source, 2)  # the first still joins it, and rolls it back

    a, b, c = sorted(set(counted))
    assert counted == [a, a, a, b, b, b, c]
    assert young[0] == aged[0] < aged[1]


def test_a_setting_a_function_changes_reaches_only_the_rest_of_its_run(
    source: SqlQuerySource,
) -> None:
    with pytest.raises(SourceError, match=r"not sent: set_config\(\)"):
        _value(source, "SELECT set_config('default_transaction_read_only', 'off', false)")
    with source.held():
        assert _value(source, "SELECT turn_writable()") == 1.0
        assert _value(source, DEFAULT_WRITABLE) == 1.0  # the rest of the run sees it ...
        assert _value(source, WRITABLE) == 0.0  # ... but its transaction stays read-only
    with source.held():
        assert _value(source, DEFAULT_WRITABLE) == 0.0  # undone with the run's transaction
        assert _value(source, WRITABLE) == 0.0
    assert _value(source, DEFAULT_WRITABLE) == 0.0

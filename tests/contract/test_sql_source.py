"""The SQL source's contract, run unchanged against SQLite, PostgreSQL and MariaDB.

Every case uses a fresh database from tests/conftest.py; the servers' cases
skip on a laptop without them and fail when CI is set. The source connects as a
read-only role made with the documented recipe (a superuser or root is refused).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from kpiwatch.config import rules
from kpiwatch.errors import BadValueError, SourceError, SourceTimeout, SourceUnavailable
from kpiwatch.sources.sql import SqlQuerySource

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
DAY1 = datetime(2024, 5, 1, 9, 30)

DIALECTS = [
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("mariadb", marks=pytest.mark.mariadb),
]

# A query that runs far longer than the 1 s timeout, per dialect.
SLOW = {
    "sqlite": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000000)"
    " SELECT count(*) FROM c",
    "postgres": "SELECT pg_sleep(5)",
    "mariadb": "SELECT SLEEP(5)",
}
# Queries giving NaN / infinity where the database can produce them.
NON_FINITE: dict[str, dict[str, str]] = {
    "sqlite": {"infinity": "SELECT 9e999", "-infinity": "SELECT -9e999"},
    "postgres": {
        "nan": "SELECT CAST('NaN' AS double precision)",
        "infinity": "SELECT CAST('Infinity' AS double precision)",
        "nan numeric": "SELECT CAST('NaN' AS numeric)",
    },
    "mariadb": {},  # MariaDB doubles hold no NaN or infinity: nothing to test
}


@pytest.fixture(params=DIALECTS)
def dialect(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(dialect: str, request: pytest.FixtureRequest) -> str:
    """A fresh database of the dialect under test, seeded with a few tables."""
    url = str(request.getfixturevalue(f"{dialect}_url"))
    _seed(url)
    return url


def _seed(url: str) -> None:
    meta = sa.MetaData()
    series = sa.Table(
        "series",
        meta,
        sa.Column("at", sa.DateTime),
        sa.Column("amount", sa.Numeric(12, 4)),
    )
    daily = sa.Table("daily", meta, sa.Column("day", sa.Date), sa.Column("rate", sa.Float))
    gaps = sa.Table("gaps", meta, sa.Column("at", sa.DateTime), sa.Column("v", sa.Float))
    sa.Table("sink", meta, sa.Column("x", sa.Integer))
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        meta.create_all(conn)
        conn.execute(
            series.insert(),
            [{"at": DAY1 + timedelta(days=i), "amount": Decimal(f"{i}.25")} for i in range(3)],
        )
        conn.execute(
            daily.insert(),
            [{"day": (DAY1 + timedelta(days=i)).date(), "rate": i / 10} for i in range(3)],
        )
        conn.execute(
            gaps.insert(),
            [{"at": DAY1 + timedelta(days=i), "v": None if i == 1 else 1.0} for i in range(3)],
        )
    engine.dispose()


def _kpi(query: str, kpi_id: str = "churn_rate") -> rules.Kpi:
    return rules.Kpi(
        id=kpi_id,
        name="Churn rate",
        owner="ann",
        direction="lower_is_better",
        source="warehouse",
        query=query,
    )


def _source(url: str, timeout: str = "10s") -> SqlQuerySource:
    return SqlQuerySource("warehouse", rules.SqlSource(type="sql", url=url, timeout=timeout))


@pytest.fixture
def reader_url(db_url: str, dialect: str, request: pytest.FixtureRequest) -> str:
    """``db_url``'s database as the source sees it: through a read-only role."""
    if dialect == "sqlite":
        return db_url
    return str(request.getfixturevalue(f"{dialect}_reader_url"))


@pytest.fixture
def source(reader_url: str) -> Iterator[SqlQuerySource]:
    src = _source(reader_url)
    yield src
    src.close()


def _state(url: str) -> tuple[object, ...]:
    """Everything a write could have changed: tables and the seeded rows."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        tables = tuple(sorted(sa.inspect(conn).get_table_names()))
        counts = tuple(
            conn.execute(sa.text(f"SELECT COUNT(*) FROM {t}")).scalar_one()
            for t in ("series", "sink")
        )
        total = conn.execute(sa.text("SELECT SUM(amount) FROM series")).scalar_one()
    engine.dispose()
    return tables, counts, float(total)


# ---------------------------------------------------------------- good answers


def test_scalar_is_observed_now(source: SqlQuerySource) -> None:
    result = source.fetch(_kpi("SELECT COUNT(*) FROM series"), NOW)

    assert [(o.kpi_id, o.observed_at, o.value) for o in result.observations] == [
        ("churn_rate", NOW, 3.0)
    ]
    assert 0 < result.duration < 10


def test_decimal_scalar_becomes_float(source: SqlQuerySource) -> None:
    result = source.fetch(_kpi("SELECT amount FROM series WHERE amount > 2"), NOW)

    assert result.current.value == 2.25
    assert type(result.current.value) is float


def test_datetime_series_is_sorted_utc(source: SqlQuerySource) -> None:
    result = source.fetch(_kpi("SELECT at, amount FROM series ORDER BY at DESC"), NOW)

    assert [(o.observed_at, o.value) for o in result.observations] == [
        (datetime(2024, 5, 1 + i, 9, 30, tzinfo=UTC), i + 0.25) for i in range(3)
    ]
    assert result.current.observed_at == datetime(2024, 5, 3, 9, 30, tzinfo=UTC)


def test_date_series_is_at_midnight_utc(source: SqlQuerySource) -> None:
    result = source.fetch(_kpi("SELECT day, rate FROM daily"), NOW)

    assert [(o.observed_at, o.value) for o in result.observations] == [
        (datetime(2024, 5, 1 + i, tzinfo=UTC), i / 10) for i in range(3)
    ]


@pytest.mark.parametrize(
    ("query", "at"),
    [
        ("SELECT '2024-01-02T03:04:05+02:00', 1", datetime(2024, 1, 2, 1, 4, 5, tzinfo=UTC)),
        ("SELECT '2024-01-02', 1", datetime(2024, 1, 2, tzinfo=UTC)),
        ("SELECT 1700000000, 1", datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
    ],
    ids=["iso-text", "date-text", "epoch"],
)
def test_text_and_epoch_timestamps(source: SqlQuerySource, query: str, at: datetime) -> None:
    assert source.fetch(_kpi(query), NOW).current.observed_at == at


def test_query_reaches_the_database_verbatim(source: SqlQuerySource, dialect: str) -> None:
    # '%' and ':x' would be mangled as bind parameters if the text were not escaped
    query = "SELECT CASE WHEN '100%' = '100%' AND ' :x 10:30' = ' :x 10:30' THEN 7 ELSE 0 END"

    assert source.fetch(_kpi(query), NOW).current.value == 7.0
    if dialect == "postgres":
        assert source.fetch(_kpi("SELECT '7'::int"), NOW).current.value == 7.0


# ---------------------------------------------------------------- bad answers


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("SELECT NULL", "query for 'churn_rate': value is NULL"),
        ("SELECT at, v FROM gaps ORDER BY at", "query for 'churn_rate': row 2: value is NULL"),
        ("SELECT 'abc'", "query for 'churn_rate': value 'abc' is not a number"),
        ("SELECT amount FROM series WHERE 1 = 0", "query for 'churn_rate' returned no rows"),
        ("SELECT 1, 2, 3", "3 columns"),
        ("SELECT amount FROM series", "3 rows of one column"),
        ("SELECT 'yesterday', 1", "row 1: timestamp 'yesterday' is not ISO-8601 text"),
        ("SELECT NULL, 1", "row 1: timestamp is NULL"),
    ],
    ids=["null", "null-in-row", "text", "no-rows", "3-columns", "many-rows", "bad-ts", "null-ts"],
)
def test_unusable_answers_are_bad_values(source: SqlQuerySource, query: str, reason: str) -> None:
    with pytest.raises(BadValueError, match=reason) as caught:
        source.fetch(_kpi(query), NOW)

    assert caught.value.source == "warehouse"
    assert caught.value.kpi == "churn_rate"
    assert str(caught.value).startswith("source 'warehouse': query for 'churn_rate'")


def test_a_runaway_result_is_cut_off_and_the_connection_stays_usable(
    source: SqlQuerySource,
) -> None:
    # 250,000 rows (MariaDB recurses 1,000 times at most, hence the join): read only up to
    # the limit (PostgreSQL streams them and cancels the rest)
    runaway = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 500)"
        " SELECT a.x * 1000 + b.x, 1 FROM c a, c b"
    )
    with pytest.raises(BadValueError, match="more than 10000 rows; aggregate or add a LIMIT"):
        source.fetch(_kpi(runaway), NOW)

    assert source.fetch(_kpi("SELECT COUNT(*) FROM series"), NOW).current.value == 3.0


def test_three_columns_explain_the_shapes(source: SqlQuerySource) -> None:
    with pytest.raises(BadValueError, match=r"two columns \(timestamp, value\)"):
        source.fetch(_kpi("SELECT 1, 2, 3"), NOW)


def test_non_finite_values_are_bad(source: SqlQuerySource, dialect: str) -> None:
    cases = NON_FINITE[dialect]
    if not cases:
        pytest.skip(f"{dialect} cannot produce NaN or infinity")
    for query in cases.values():
        with pytest.raises(BadValueError, match="is not finite"):
            source.fetch(_kpi(query), NOW)


# ---------------------------------------------------------------- failures


@pytest.mark.parametrize(
    ("query", "words"),
    # "SELECT 1 FROM FROM" does not parse, passes the conservative check, reaches the database
    [("SELECT 1 FROM FROM", "syntax"), ("SELECT x FROM no_such_table", "no_such_table")],
    ids=["syntax", "missing-table"],
)
def test_database_errors_are_source_errors(source: SqlQuerySource, query: str, words: str) -> None:
    with pytest.raises(SourceError) as caught:
        source.fetch(_kpi(query), NOW)

    assert type(caught.value) is SourceError
    assert words in str(caught.value).lower()
    assert str(caught.value).startswith("source 'warehouse': query for 'churn_rate' failed: ")
    assert "sqlalche.me" not in str(caught.value)


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO sink (x) VALUES (1)",
        "UPDATE series SET amount = 0",
        "DELETE FROM series",
        "CREATE TABLE evil (x INTEGER)",
        "DROP TABLE sink",
        "SELECT 1; INSERT INTO sink (x) VALUES (1)",
        "COMMIT; INSERT INTO sink (x) VALUES (1); SELECT 1",
    ],
    ids=["insert", "update", "delete", "create", "drop", "select-then-insert", "commit-escape"],
)
def test_writes_fail_and_leave_nothing_behind(
    source: SqlQuerySource, db_url: str, statement: str
) -> None:
    before = _state(db_url)
    source.fetch(_kpi("SELECT 1"), NOW)  # a pooled connection is reused below

    with pytest.raises(SourceError, match=r"not sent: .* a KPI query must be a single SELECT"):
        source.fetch(_kpi(statement), NOW)
    # the database's own guards, for a query that got past the statement check
    with pytest.raises(Exception):  # noqa: B017, PT011 - each driver raises its own kind
        source._run(statement)

    assert _state(db_url) == before
    assert source.fetch(_kpi("SELECT COUNT(*) FROM sink"), NOW).current.value == 0


def test_slow_query_times_out(reader_url: str, dialect: str) -> None:
    source = _source(reader_url, timeout="1s")
    try:
        start = time.perf_counter()
        with pytest.raises(SourceTimeout, match=r"'churn_rate' timed out after .*timeout 1s"):
            source.fetch(_kpi(SLOW[dialect]), NOW)
        assert time.perf_counter() - start < 2.5
        # the connection goes back to the pool usable
        assert source.fetch(_kpi("SELECT 5"), NOW).current.value == 5.0
    finally:
        source.close()


# ---------------------------------------------------------------- unreachable servers

SERVER_URLS = {
    "postgres": "postgresql+psycopg://kpiwatch:s3cr3t-Pw@127.0.0.1:{port}/kpis",
    "mariadb": "mysql+pymysql://kpiwatch:s3cr3t-Pw@127.0.0.1:{port}/kpis",
}


def _assert_no_password(exc: BaseException) -> None:
    for text in (str(exc), repr(exc), str(exc.__cause__), repr(exc.__cause__)):
        assert "s3cr3t" not in text


@pytest.mark.parametrize("server", sorted(SERVER_URLS))
def test_refused_connection_fails_fast_without_the_password(server: str) -> None:
    source = _source(SERVER_URLS[server].format(port=1), timeout="2s")
    start = time.perf_counter()
    with pytest.raises(SourceError) as caught:
        source.fetch(_kpi("SELECT 1"), NOW)

    assert time.perf_counter() - start < 2
    assert "refused" in str(caught.value).lower()
    _assert_no_password(caught.value)
    source.close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections and then never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


@pytest.mark.parametrize("server", sorted(SERVER_URLS))
def test_silent_server_times_out_within_the_timeout(server: str, silent_port: int) -> None:
    # 1 s asked; libpq waits at least 2 s, MySQL drivers 1 s more for the greeting
    source = _source(SERVER_URLS[server].format(port=silent_port), timeout="1s")
    start = time.perf_counter()
    with pytest.raises(SourceTimeout) as caught:
        source.fetch(_kpi("SELECT 1"), NOW)

    assert time.perf_counter() - start < 3
    _assert_no_password(caught.value)
    source.close()


def test_missing_sqlite_directory_is_a_source_error(tmp_path: object) -> None:
    source = _source(f"sqlite:///{tmp_path}/no/such/dir/kpis.db")
    with pytest.raises(SourceError, match="unable to open database file"):
        source.fetch(_kpi("SELECT 1"), NOW)
    source.close()


def test_concurrent_fetches_share_the_pool(source: SqlQuerySource, dialect: str) -> None:
    # more callers than pooled connections (max_concurrency, 4): the rest wait their turn
    kpi = _kpi("SELECT COUNT(*) FROM series")
    with ThreadPoolExecutor(max_workers=8) as pool:
        values = list(pool.map(lambda _: source.fetch(kpi, NOW).current.value, range(16)))

    assert values == [3.0] * 16
    if dialect != "sqlite":  # SQLite files get SQLAlchemy's own pool
        pool_state = source._get_engine().pool
        assert isinstance(pool_state, sa.pool.QueuePool)
        assert pool_state.size() == 4
        assert pool_state.overflow() <= 0  # never a connection beyond the pool's size
        assert 1 <= pool_state.checkedin() <= 4  # kept open for the next fetches


# how to find and end the server session a pooled connection belongs to
SESSION_ID = {"postgres": "SELECT pg_backend_pid()", "mariadb": "SELECT CONNECTION_ID()"}
END_SESSION = {"postgres": "SELECT pg_terminate_backend({})", "mariadb": "KILL {}"}


@pytest.mark.parametrize(
    "dialect",
    [pytest.param("postgres", marks=pytest.mark.postgres),
     pytest.param("mariadb", marks=pytest.mark.mariadb)],
)  # fmt: skip
def test_a_connection_the_server_closed_is_replaced_without_an_error(
    db_url: str, reader_url: str, dialect: str
) -> None:
    source = _source(reader_url)
    try:
        session = int(source.fetch(_kpi(SESSION_ID[dialect]), NOW).current.value)
        engine = sa.create_engine(db_url)
        with engine.connect() as conn:
            conn.exec_driver_sql(END_SESSION[dialect].format(session))
        engine.dispose()

        again = int(source.fetch(_kpi(SESSION_ID[dialect]), NOW).current.value)
        assert again != session  # the same pool, a new connection
        assert source.fetch(_kpi("SELECT COUNT(*) FROM series"), NOW).current.value == 3.0
    finally:
        source.close()


# ------------------------------------------------------------ freshness and outages (SPEC §5a)


@pytest.mark.parametrize("dialect", [pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_held_run_of_fetches_keeps_one_connection_and_each_query_stays_read_only(
    db_url: str, reader_url: str, dialect: str
) -> None:
    source = _source(reader_url)
    checkouts: list[int] = []
    pool = source._get_engine().pool
    sa.event.listen(pool, "checkout", lambda *_: checkouts.append(1))
    session = _kpi(SESSION_ID[dialect])
    writable = _kpi(
        "SELECT CASE WHEN current_setting('transaction_read_only') = 'on' THEN 0 ELSE 1 END"
    )
    try:
        with source.held():
            first = {int(source.fetch(session, NOW).current.value) for _ in range(3)}
            # a query that would turn the session writable is not sent (a function that
            # does it is undone with the run's transaction: test_sql_shared_transaction)
            with pytest.raises(SourceError, match="not sent"):
                source.fetch(
                    _kpi("SELECT set_config('default_transaction_read_only', 'off', false)"),
                    NOW,
                )
            assert source.fetch(writable, NOW).current.value == 0.0
            assert pool.checkedout() == 1
            # the server ends the held connection: the next fetch takes a new one
            engine = sa.create_engine(db_url)
            with engine.connect() as conn:
                conn.exec_driver_sql(END_SESSION[dialect].format(next(iter(first))))
            engine.dispose()
            again = {int(source.fetch(session, NOW).current.value) for _ in range(2)}
            assert source.fetch(writable, NOW).current.value == 0.0
        assert pool.checkedout() == 0  # given back when the block ends
    finally:
        source.close()

    assert len(first) == 1
    assert len(again) == 1
    assert again != first
    assert len(checkouts) == 2  # one per connection, not one per fetch


def test_latest_load_reads_the_freshness_querys_timestamp(source: SqlQuerySource) -> None:
    assert source.latest_load("SELECT max(at) FROM series") == (DAY1 + timedelta(days=2)).replace(
        tzinfo=UTC
    )
    assert source.latest_load("SELECT max(at) FROM series WHERE amount < 0") is None  # NULL
    with pytest.raises(SourceError, match="freshness query failed"):
        source.latest_load("SELECT max(loaded_at) FROM no_such_table")
    with pytest.raises(SourceError, match="freshness query not sent"):
        source.latest_load("DELETE FROM series")


def test_a_query_error_is_the_kpis_and_an_unreachable_server_the_sources(
    source: SqlQuerySource, dialect: str
) -> None:
    with pytest.raises(SourceError) as typo:
        source.fetch(_kpi("SELECT no_such_column FROM daily"), NOW)
    assert not isinstance(typo.value, SourceUnavailable)
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    urls = {
        "sqlite": "sqlite:////nonexistent-dir/warehouse.db",
        "postgres": f"postgresql+psycopg://reader@127.0.0.1:{port}/test",
        "mariadb": f"mysql+pymysql://reader@127.0.0.1:{port}/test",
    }
    down = _source(urls[dialect], timeout="3s")
    try:
        with pytest.raises(SourceUnavailable, match="cannot connect"):
            down.fetch(_kpi("SELECT 1"), NOW)
        with pytest.raises(SourceUnavailable, match="cannot connect"):
            down.latest_load("SELECT 1")
    finally:
        down.close()

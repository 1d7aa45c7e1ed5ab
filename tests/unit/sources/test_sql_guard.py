"""The statement check: which KPI queries may be sent, per dialect, and where a refusal shows."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from unittest import mock

import pytest
import sqlglot

from kpiwatch.config.loader import load_rules
from kpiwatch.errors import RuleLoadError
from kpiwatch.sources import sql_statements
from kpiwatch.sources.sql_guard import dialect_of, statement_problem

ACCEPTED = [
    ("postgres", "SELECT 1"),
    ("postgres", "-- comment\n/* block */ select count(*) FROM t"),
    ("postgres", "WITH x AS (SELECT 1 AS v) SELECT v FROM x"),
    ("postgres", "(SELECT 1) UNION (SELECT 2)"),
    ("postgres", "VALUES (1)"),
    ("postgres", "TABLE t"),
    ("postgres", "SHOW server_version"),
    ("postgres", "SELECT '7'::int, now() - interval '7 days'"),
    ("postgres", "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY x) FROM t"),
    ("postgres", "SELECT 1;"),
    ("mysql", "SELECT `a` FROM `t` WHERE 'INTO' = 'INTO'"),
    ("mysql", "SHOW STATUS LIKE 'Uptime'"),
    ("sqlite", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT 1"),
]

REFUSED = [
    ("postgres", "COPY (SELECT 1) TO PROGRAM 'id > /tmp/x'", "COPY is refused"),
    ("postgres", "COPY (SELECT 1) TO '/tmp/x'", "COPY is refused"),
    ("postgres", "SELECT 1 INTO new_table", "SELECT ... INTO is refused"),
    ("postgres", "WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x", "DELETE is refused"),
    ("postgres", "WITH x AS (INSERT INTO t VALUES (1)) SELECT 1", "INSERT is refused"),
    ("postgres", "SELECT * FROM t FOR UPDATE", "row lock"),
    ("postgres", "SELECT 1; SELECT 2", "2 statements"),
    ("postgres", "COMMIT; INSERT INTO t VALUES (1); SELECT 1", "3 statements"),
    ("postgres", "UPDATE t SET x = 0", "UPDATE is refused"),
    ("postgres", "CREATE TABLE t (x INTEGER)", "CREATE is refused"),
    ("postgres", "DROP TABLE t", "DROP is refused"),
    ("postgres", "SET search_path = evil", "SET is refused"),
    # SET as a function: the setting would reach the next queries of the run's transaction
    ("postgres", "SELECT set_config('search_path', 'evil', false)", "set_config() (it changes"),
    (
        "postgres",
        "SELECT x FROM t WHERE pg_catalog.SET_CONFIG('a', 'b', true) > ''",
        "set_config() (it changes",
    ),
    ("postgres", "DO $$ BEGIN END $$", "DO (a statement kpiwatch cannot inspect) is refused"),
    ("postgres", "EXPLAIN ANALYZE DELETE FROM t", "EXPLAIN"),
    ("postgres", "CALL p()", "CALL"),
    ("postgres", "   ", "the query is empty"),
    ("mysql", "SELECT 1 INTO OUTFILE '/tmp/f'", "INTO is refused (in a query that was checked"),
    ("mysql", "SELECT 1 INTO DUMPFILE '/tmp/f'", "INTO is refused"),
    ("mysql", "SELECT 1 INTO @x", "SELECT ... INTO is refused"),
    ("mysql", "SELECT * FROM t LOCK IN SHARE MODE", "row lock"),
    ("sqlite", "PRAGMA journal_mode=DELETE", "PRAGMA is refused"),
    ("sqlite", "ATTACH DATABASE '/tmp/y.db' AS y", "ATTACH is refused"),
    ("sqlite", "VACUUM INTO '/tmp/z.db'", "VACUUM"),
]


@pytest.mark.parametrize(("dialect", "query"), ACCEPTED)
def test_reading_statements_pass(dialect: str, query: str) -> None:
    assert statement_problem(query, dialect) is None


@pytest.mark.parametrize(("dialect", "query", "words"), REFUSED)
def test_writing_statements_are_refused_with_the_reason(
    dialect: str, query: str, words: str
) -> None:
    problem = statement_problem(query, dialect)

    assert problem is not None
    assert words in problem
    assert problem.endswith("a KPI query must be a single SELECT (or WITH ... SELECT, VALUES, "
                            "TABLE, SHOW)")  # fmt: skip


def test_a_query_the_parser_cannot_read_passes_the_conservative_check() -> None:
    # sqlglot has no grammar for this; the database will answer it (here: a syntax error)
    assert statement_problem("SELECT 1 FROM FROM", "postgres") is None
    assert statement_problem("SELECT 1 FROM FROM; DROP TABLE t", "postgres") is not None


def test_a_query_nested_too_deeply_for_the_parser_is_checked_word_by_word() -> None:
    deep = "SELECT " + "(" * 5000 + "1" + ")" * 5000
    assert statement_problem(deep, "postgres") is None
    assert "INTO is refused" in (statement_problem(deep + " INTO t", "postgres") or "")
    assert "SET_CONFIG is refused" in (
        statement_problem(deep.replace("1", "set_config('a', 'b', false)"), "postgres") or ""
    )


@pytest.mark.parametrize(
    ("url", "dialect"),
    [
        ("postgresql+psycopg://u@h/db", "postgres"),
        ("mysql+pymysql://u@h/db", "mysql"),
        ("mariadb+pymysql://u@h/db", "mysql"),
        ("sqlite:///w.db", "sqlite"),
        ("firebird://u@h/db", None),
        ("not a url", None),
    ],
)
def test_dialect_comes_from_the_url_backend(url: str, dialect: str | None) -> None:
    assert dialect_of(url) == dialect


def test_load_names_the_query_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "kpis.yaml").write_text(
        "sources:\n"
        "  wh: {type: sql, url: 'postgresql+psycopg://u@h/db'}\n"
        "kpis:\n"
        "  - id: ok\n"
        "    name: Ok\n"
        "    owner: ann\n"
        "    direction: higher_is_better\n"
        "    source: wh\n"
        "    query: SELECT 1\n"
        "  - id: evil\n"
        "    name: Evil\n"
        "    owner: ann\n"
        "    direction: higher_is_better\n"
        "    source: wh\n"
        "    query: COPY (SELECT 1) TO PROGRAM 'id'\n"
    )
    with pytest.raises(RuleLoadError) as caught:
        load_rules(tmp_path)

    assert [str(p) for p in caught.value.problems] == [
        f"{tmp_path / 'kpis.yaml'}:15:12: kpis[1].query: COPY is refused; a KPI query must be "
        "a single SELECT (or WITH ... SELECT, VALUES, TABLE, SHOW)"
    ]


def test_ten_thousand_queries_are_parsed_once_each_then_answered_from_the_cache() -> None:
    # 10,000 distinct KPI queries, as a large rule set has (speed: bench/bench_load.py)
    queries = [f"SELECT value FROM metrics WHERE kpi = 'kpi_{i}'" for i in range(10_000)]
    sql_statements.statement_problem.cache_clear()
    parse = sqlglot.parse
    with mock.patch("sqlglot.parse", side_effect=parse) as parsed:
        assert all(statement_problem(q, "postgres") is None for q in queries)
        first = parsed.call_count
        assert all(statement_problem(q, "postgres") is None for q in queries)

    assert first == 10_000
    assert parsed.call_count == first


def test_sqlglot_is_imported_only_when_a_query_must_be_parsed(
    fresh_python: Callable[[str], str],
) -> None:
    # a load whose rules cache vouched for every query never needs it (~38 MiB compiled)
    probe = (
        "import sys\n"
        "from kpiwatch.sources import sql_guard\n"
        "sql_guard.vouch('SELECT 1', 'postgres')\n"
        "assert sql_guard.dialect_of('postgresql://h/db') == 'postgres'\n"
        "assert sql_guard.fetch_problem('SELECT 1', 'postgres') is None\n"
        "assert 'sqlglot' not in sys.modules\n"
        "assert sql_guard.fetch_problem('SELECT 2', 'postgres') is None\n"
        "assert 'sqlglot' in sys.modules\n"
    )
    fresh_python(probe)

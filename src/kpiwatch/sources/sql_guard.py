"""The statement check of SQL sources: a KPI query must be one reading statement.

:func:`statement_problem` is the one rule (it lives, with sqlglot, in
:mod:`kpiwatch.sources.sql_statements`, imported on first use). It runs when the rules
load (``kpiwatch check`` names ``kpis[i].query`` with file:line) and again before every
fetch (:func:`fetch_problem`), so a query never reaches the database unchecked; answers
are cached per query text and dialect, so the fetch-time check costs a dictionary
look-up.
A load that took a query's acceptance from the rules cache vouches for it (:func:`vouch`).

Accepted: a single ``SELECT`` (also ``WITH ... SELECT``, ``TABLE t``, set operations,
parenthesised), ``VALUES`` or ``SHOW``. Refused: several statements, and anywhere in
the statement tree any write or side channel - ``COPY``, ``PRAGMA``, ``ATTACH``,
``VACUUM``, ``SELECT ... INTO`` (a table on PostgreSQL, ``OUTFILE``/``DUMPFILE`` or a
variable on MySQL), DML and DDL (also inside a CTE: ``WITH x AS (DELETE ...) SELECT``),
row locks (``FOR UPDATE``, ``FOR SHARE``, ``LOCK IN SHARE MODE``), ``set_config()``
(``SET`` as a function) and any statement the parser only knows as an opaque command
(``DO``, ``CALL``, ``EXPLAIN ANALYZE``).

The statements are parsed by sqlglot in the source's dialect, client-side: the
check needs no connection, so it can run at load time for every KPI, on every
database kpiwatch speaks to. When sqlglot cannot parse a query (its grammar lags
behind some dialect-specific syntax), the user is not blocked on the parser's gap:
the query is checked conservatively on sqlglot's *tokens* instead - one statement,
starting with a reading keyword, and none of the keywords that write or lock
(``INTO``, ``COPY``, ``INSERT``, ``FOR UPDATE``, ...) outside strings, quoted names
and comments. Such a query still runs read-only, time-limited and as a role that
may not write files (see :mod:`kpiwatch.sources.sql_privileges`).
"""

from __future__ import annotations

import sqlalchemy as sa

# SQLAlchemy backend name -> sqlglot dialect; any other backend gets sqlglot's generic one
_DIALECTS = {
    "postgresql": "postgres",
    "mysql": "mysql",
    "mariadb": "mysql",
    "sqlite": "sqlite",
    "mssql": "tsql",
    "oracle": "oracle",
    "duckdb": "duckdb",
}


def dialect_of(url: str) -> str | None:
    """sqlglot's dialect for a SQLAlchemy URL; None (sqlglot's generic SQL) if unknown."""
    try:
        backend = sa.make_url(url).get_backend_name()
    except (sa.exc.ArgumentError, ValueError):
        return None
    return _DIALECTS.get(backend)


# (query, dialect) pairs a trusted rules cache holds as accepted by this sqlglot: a load
# that took them from it vouches for them, so the check before the first fetch of each
# is a look-up, not the parse it was at load (~0.35 s per 10,000 queries with sqlglotc,
# 1.1 s without, in every ``run --once``)
_VOUCHED: set[tuple[str, str | None]] = set()
_MAX_VOUCHED = 65_536


def vouch(query: str, dialect: str | None) -> None:
    """Note that ``query`` passed :func:`statement_problem` in an earlier load.

    Only the rules cache calls this, for a query whose hash it holds as accepted by this
    version of sqlglot; the cache is read only when it belongs to this user and no one
    else can write it (:mod:`kpiwatch.config.rules_cache`). Whoever could forge it runs
    as the daemon's user, who can read the source's credentials and send the query
    anyway; and the query still runs read-only and time-limited.
    """
    if len(_VOUCHED) >= _MAX_VOUCHED:  # years of reloads: start again, the check is cheap
        _VOUCHED.clear()
    _VOUCHED.add((query, dialect))


def fetch_problem(query: str, dialect: str | None) -> str | None:
    """:func:`statement_problem`, as checked before every fetch: a look-up for a query
    this process accepted or :func:`vouch` noted."""
    if (query, dialect) in _VOUCHED:
        return None
    return statement_problem(query, dialect)


def statement_problem(query: str, dialect: str | None) -> str | None:
    """Why ``query`` may not run as a KPI query, or None when it is one reading statement
    (:func:`kpiwatch.sources.sql_statements.statement_problem`, where the rule lives).

    sqlglot is imported on the first query that must be parsed, not before: a load
    whose rules cache vouched for every query never needs it, and the compiled parser
    alone is ~38 MiB of the daemon's memory and 0.1 s of each ``run --once``.
    """
    from kpiwatch.sources import sql_statements

    return sql_statements.statement_problem(query, dialect)

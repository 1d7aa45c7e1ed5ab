"""Per-dialect plumbing for one read-only, time-limited SQL query.

What each database gets (anything else runs without these guarantees, so
give kpiwatch a read-only database user in any case):

* PostgreSQL through psycopg 3: ``default_transaction_read_only`` and
  ``statement_timeout`` set once per connection, when it is opened; queries run
  in read-only transactions that are always rolled back (which also undoes any
  setting a query changed), through the extended query protocol, which refuses
  ``SELECT 1; COMMIT; INSERT ...`` - the simple query protocol would run the
  INSERT after the COMMIT, outside the read-only transaction. Rows are streamed,
  so a runaway result is cut off after ``max_rows`` without being read whole.
  A single fetch is three round trips (``BEGIN``, the query, ``ROLLBACK``); a run
  of fetches on one held connection shares a transaction among at most
  ``SHARED_QUERIES`` queries within ``SHARED_SECONDS`` (:class:`Shared`), which
  makes it one round trip per query: at 10,000 KPIs the ``BEGIN`` and
  ``ROLLBACK`` of each were half the fetch time and two thirds of the warehouse's
  statements. Each query still takes its own snapshot (READ COMMITTED, the
  default), the transaction is begun read-only and cannot be made writable after
  its first query, and it is rolled back as soon as a query fails or is cut off.
  ``set_config()``, the one way a reading statement changes a session setting
  that a later query would see, is refused by the statement check
  (:mod:`kpiwatch.sources.sql_guard`); a user-defined function that calls it
  reaches only the rest of its run, until the rollback.
* PostgreSQL through another driver: ``SET TRANSACTION READ ONLY`` and ``SET
  LOCAL statement_timeout`` per query, through a server-side cursor (``DECLARE
  ... CURSOR FOR``), which refuses several statements too.
* MariaDB / MySQL: ``SET SESSION TRANSACTION READ ONLY`` (``START TRANSACTION
  READ ONLY`` alone lets DDL through: DDL commits implicitly and then runs
  outside it) and ``max_statement_time`` (MariaDB, seconds) or
  ``max_execution_time`` (MySQL, milliseconds), before every query: a query may
  change session settings, and MySQL's SET is not undone by a rollback. The
  drivers refuse multiple statements by default.
* SQLite: the file is opened read-only (a ``file:...?mode=ro`` URI, see
  :func:`read_only_url`: a missing file is an error, not a new empty warehouse);
  ``PRAGMA query_only``; an authorizer that lets the query read and nothing else
  (``mode=ro`` does not cover ``ATTACH`` or ``VACUUM INTO``, which create files);
  and a progress handler that interrupts the query at the deadline; sqlite3
  refuses multiple statements.

The engine is dedicated to one source; its pool holds ``max_concurrency``
connections (the source's fetch threads never wait for one, and none is closed
and opened again), without pre-ping: a connection the server closed meanwhile
fails its query, is dropped, and the query is run once more on a new one.
"""

from __future__ import annotations

import math
import sqlite3
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import Any

import sqlalchemy as sa

SHARED_QUERIES = 100  # queries of a held run per transaction (see the module's docstring)
SHARED_SECONDS = 1.0  # ... and its age at most: a snapshot under REPEATABLE READ, xmin
POOL_RECYCLE = 1800  # seconds; outlives neither firewalls nor server idle timeouts
READ_GRACE = 1  # seconds past the timeout before a MySQL socket read gives up
_SQLITE_STEPS = 1000  # VM instructions between deadline checks
# what the SQLite authorizer lets a KPI query do: read tables, call functions, recurse
_SQLITE_READS = frozenset(
    {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
)

# Driver error codes meaning "the server stopped the statement at its time limit".
_PG_QUERY_CANCELED = "57014"
_MYSQL_TIMEOUT_CODES = frozenset({1969, 3024})  # MariaDB max_statement_time, MySQL


def engine_options(url: sa.URL, timeout: float, pool_size: int) -> dict[str, Any]:
    """create_engine keywords: a pool of ``pool_size`` and driver connect timeouts."""
    options: dict[str, Any] = {
        "hide_parameters": True,
        "connect_args": _connect_args(url, timeout),
    }
    dialect: Any = url.get_dialect()  # get_pool_class is on DefaultDialect only
    if issubclass(dialect.get_pool_class(url), sa.pool.QueuePool):
        options |= {
            "pool_size": pool_size,
            "max_overflow": 0,
            "pool_timeout": timeout,
            "pool_recycle": POOL_RECYCLE,
        }
    return options


def read_only_url(url: sa.URL) -> sa.URL:
    """``url``, with a SQLite file opened read-only (``file:...?mode=ro``); others as given."""
    database = url.database or ""
    if url.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return url  # an in-memory database writes no file; the authorizer guards ATTACH
    if url.query.get("mode") == "memory":
        return url
    if url.query.get("uri") == "true":  # already a file: URI; only its mode is forced
        return url.update_query_dict({"mode": "ro"})
    # percent-encoded: a '?', '#' or '%' in the path is part of the name, not of the URI
    return url.set(
        database="file:" + urllib.parse.quote(database),
        query={**url.query, "mode": "ro", "uri": "true"},
    )


def uses_session_settings(engine: sa.Engine) -> bool:
    """Whether queries go through :func:`run_streamed` (PostgreSQL with psycopg 3)."""
    return engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg"


def prepare(engine: sa.Engine, timeout: float) -> None:
    """Set up new connections of ``engine``: read-only and time-limited from the start."""
    if not uses_session_settings(engine):
        return
    milliseconds = math.ceil(timeout * 1000)

    def settings(dbapi_connection: Any, _record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET default_transaction_read_only = on")
            cursor.execute(f"SET statement_timeout = {milliseconds}")
        dbapi_connection.commit()

    sa.event.listen(engine, "connect", settings)


class Shared:
    """How long a held connection's transaction may go on (one per held run).

    :meth:`keeps_open` is asked before each query: whether the query may leave the
    transaction open for the run's next one. A transaction that a query began (the
    connection was idle) starts the count again.
    """

    def __init__(self) -> None:
        self.queries = 0
        self.began = 0.0

    def keeps_open(self, raw: Any) -> bool:
        now = time.monotonic()
        if _status(raw) == "IDLE":  # this query begins a transaction
            self.queries, self.began = 0, now
        self.queries += 1
        return self.queries < SHARED_QUERIES and now - self.began < SHARED_SECONDS


def run_streamed(
    raw: Any, query: str, max_rows: int, *, keep_open: bool = False
) -> tuple[list[str] | None, list[tuple[Any, ...]]]:
    """Run ``query`` on a psycopg connection :func:`prepare` set up, then roll back;
    with ``keep_open``, leave the transaction open for the next query instead, unless
    this one failed or was cut off (it is rolled back then).

    Returns the column names (None when the statement gave no result set, [] when
    it gave no rows) and at most ``max_rows`` + 1 rows.
    """
    columns: list[str] | None = []
    rows: list[tuple[Any, ...]] = []
    clean = False
    try:
        with raw.cursor() as cursor:
            # binary: the extended protocol, one statement only; no placeholders parsed
            with closing(cursor.stream(query, binary=True)) as stream:
                for row in stream:
                    rows.append(tuple(row))
                    if len(rows) > max_rows:
                        break  # closing the stream cancels the rest
            if rows:
                columns = [column.name for column in cursor.description or ()]
        clean = len(rows) <= max_rows
    except Exception as exc:
        if type(exc).__name__ != "ProgrammingError" or "produce a result" not in str(exc):
            raise
        columns = None  # a statement without a result set (SET, DO, ...)
    finally:
        if not raw.closed and not (keep_open and clean and _status(raw) == "INTRANS"):
            raw.rollback()  # never commit, whatever the query did
    return columns, rows


def _status(raw: Any) -> str:
    """A psycopg connection's transaction status by name (psycopg is imported only for
    PostgreSQL sources): IDLE, INTRANS (a good transaction is open), INERROR, ..."""
    return str(raw.info.transaction_status.name)


def connection_lost(conn: sa.Connection, exc: BaseException) -> bool:
    """Whether ``exc`` means the server closed the pooled connection under us."""
    if isinstance(exc, sa.exc.DBAPIError):
        return exc.connection_invalidated
    return not conn.invalidated and driver_connection_lost(conn.connection.driver_connection)


def driver_connection_lost(raw: Any) -> bool:
    """Whether a psycopg connection is closed or broken (the server went away)."""
    return bool(getattr(raw, "broken", False) or getattr(raw, "closed", False))


def _connect_args(url: sa.URL, timeout: float) -> dict[str, Any]:
    backend, driver = url.get_backend_name(), url.get_driver_name()
    whole = max(1, math.ceil(timeout))
    args: dict[str, Any] = {}
    if backend == "postgresql" and driver in ("psycopg", "psycopg2"):
        args = {"connect_timeout": max(2, whole)}  # libpq treats less than 2s as 2s
    elif backend in ("mysql", "mariadb") and driver in ("pymysql", "mysqldb"):
        # the server-side limit stops slow queries (with its own, clearer error);
        # the read timeout, a little later, covers a server that never answers,
        # including its greeting on connect
        args = {"connect_timeout": whole, "read_timeout": whole + READ_GRACE}
    elif backend == "sqlite":
        args = {"timeout": timeout}  # how long to wait for a writer's lock
    return {k: v for k, v in args.items() if k not in url.query}  # the URL's own win


@contextmanager
def read_only(conn: sa.Connection, timeout: float) -> Iterator[dict[str, Any]]:
    """Make ``conn`` read-only and time-limited for one query.

    Yields the execution options to run the query with. The caller rolls back.
    """
    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.exec_driver_sql("SET TRANSACTION READ ONLY")
        conn.exec_driver_sql(f"SET LOCAL statement_timeout = {math.ceil(timeout * 1000)}")
        yield {"stream_results": True}
    elif dialect in ("mysql", "mariadb"):
        conn.exec_driver_sql("SET SESSION TRANSACTION READ ONLY")
        if getattr(conn.dialect, "is_mariadb", False):
            conn.exec_driver_sql(f"SET SESSION max_statement_time = {timeout:.3f}")
        else:
            conn.exec_driver_sql(f"SET SESSION max_execution_time = {math.ceil(timeout * 1000)}")
        conn.exec_driver_sql("START TRANSACTION READ ONLY")
        yield {}
    elif dialect == "sqlite":
        with _sqlite_read_only(conn, timeout):
            yield {}
    else:
        yield {}


@contextmanager
def _sqlite_read_only(conn: sa.Connection, timeout: float) -> Iterator[None]:
    raw: Any = conn.connection.driver_connection
    deadline = time.monotonic() + timeout
    conn.exec_driver_sql("PRAGMA query_only = ON")
    # a non-zero return interrupts the running statement ("interrupted")
    raw.set_progress_handler(lambda: int(time.monotonic() > deadline), _SQLITE_STEPS)
    # checked as each statement is prepared (setting it expires the cached ones): an
    # ATTACH, PRAGMA or VACUUM fails with "not authorized" before it runs
    raw.set_authorizer(_sqlite_reads_only)
    try:
        yield
    finally:
        raw.set_authorizer(None)
        raw.set_progress_handler(None, 0)
        try:
            conn.exec_driver_sql("PRAGMA query_only = OFF")
        except sa.exc.SQLAlchemyError:
            conn.invalidate()  # never hand a half-reset connection back to the pool


def _sqlite_reads_only(action: int, *_: object) -> int:
    return sqlite3.SQLITE_OK if action in _SQLITE_READS else sqlite3.SQLITE_DENY


def stopped_by_server(exc: BaseException) -> bool:
    """Whether a driver error says the server cut the statement at its time limit."""
    orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    if getattr(orig, "sqlstate", None) == _PG_QUERY_CANCELED:
        return "timeout" in str(orig)  # not a cancel by an administrator
    args: tuple[Any, ...] = getattr(orig, "args", ())
    return bool(args) and args[0] in _MYSQL_TIMEOUT_CODES

"""KPI values from any database SQLAlchemy speaks to.

A query gives either

* one value (one column, one row): the current value, observed at ``now``; or
* a series (two columns ``timestamp, value``, one or more rows): one
  observation per row, the latest timestamp is the current value.

Timestamps may be datetimes (naive ones are UTC), dates (midnight UTC),
ISO-8601 text or epoch seconds; values must be numbers (int, float, Decimal).

Every row must be usable: a single bad row (NULL, NaN, ±inf, text, a bad
timestamp) rejects the whole fetch with a reason naming the row. Skipping it
would silently change what the series says, and the row is usually the
newest one (a period still being filled in).

A query must be one reading statement (:mod:`kpiwatch.sources.sql_guard`, checked
again before each fetch), runs read-only and time-limited (see
:mod:`kpiwatch.sources.sql_session`) and is always rolled back (a run of fetches on
PostgreSQL shares a transaction among up to 100 queries); a role that could
act on the database server is refused (:mod:`kpiwatch.sources.sql_privileges`).
A result that arrives after the timeout is discarded as a timeout: MariaDB's
SLEEP(), interrupted by max_statement_time, returns 1 instead of failing.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa

from kpiwatch.config import rules
from kpiwatch.errors import (
    BadValueError,
    ConfigError,
    SourceError,
    SourceTimeout,
    SourceUnavailable,
)
from kpiwatch.model import Observation
from kpiwatch.sources.base import FetchResult, Source, observations_of
from kpiwatch.sources.sql_guard import dialect_of, fetch_problem
from kpiwatch.sources.sql_privileges import PrivilegedRoleError, refuse_privileged_roles
from kpiwatch.sources.sql_session import (
    Shared,
    connection_lost,
    driver_connection_lost,
    engine_options,
    prepare,
    read_only,
    read_only_url,
    run_streamed,
    stopped_by_server,
    uses_session_settings,
)
from kpiwatch.sources.values import to_number, to_utc

MAX_ROWS = 10_000  # a series longer than this is a missing GROUP BY, not history
_SHAPES = "expected one value, or two columns (timestamp, value) for a series"
_SA_BACKGROUND = re.compile(r"\s*\(Background on this error at: [^)]*\)")
_CHECKERS = 8  # sources whose roles are checked at once at start (each may wait its timeout)
T = TypeVar("T")


class _Held(threading.local):
    """The connection a thread keeps for a run of fetches (:meth:`SqlQuerySource.held`)."""

    active = False
    pooled: Any = None  # a pool's connection record, checked out at the run's first query
    shared: Shared | None = None  # how long its transaction may go on


class SqlQuerySource:
    """A ``type: sql`` source: one pooled engine, one read-only query per fetch."""

    def __init__(self, name: str, config: rules.SqlSource) -> None:
        self.name = name
        self._url = config.url  # never put in a message: it may hold a password
        self._timeout = config.timeout.total_seconds()
        self._pool_size = config.max_concurrency  # one connection per fetch thread
        self._dialect = dialect_of(config.url)
        self._allow_privileged = config.allow_privileged
        self._engine: sa.Engine | None = None
        self._lock = threading.Lock()
        self._held = _Held()

    @contextmanager
    def held(self) -> Iterator[None]:
        """Keep one pooled connection for this thread's fetches until the block ends.

        A run of a batch's KPIs (:mod:`kpiwatch.runtime.fetching`) checks a connection
        out of the pool and back once, not once per KPI: at 10,000 KPIs the pool's
        bookkeeping was ~40 % of the fetches' own CPU (issue 15). A read-only
        transaction is shared by up to ``SHARED_QUERIES`` of them
        (:class:`~kpiwatch.sources.sql_session.Shared`) and rolled back, at the latest
        when the block ends. PostgreSQL through psycopg only; elsewhere each fetch takes
        a connection and a transaction as before.
        """
        if self._held.active:  # nested: the outer block gives the connection back
            yield
            return
        self._held.active = True
        self._held.shared = Shared()
        try:
            yield
        finally:
            pooled, self._held.pooled = self._held.pooled, None
            self._held.active = False
            self._held.shared = None
            if pooled is not None:
                with contextlib.suppress(Exception):  # lost meanwhile: closed all the same
                    pooled.driver_connection.rollback()  # the run's transaction ends here
                pooled.close()

    def fetch(self, kpi: rules.Kpi, now: datetime) -> FetchResult:
        """Run the KPI's query; raise SourceError (or a subclass), nothing else."""
        query = kpi.query or ""
        # the rules were checked at load; this catches a KPI built another way (a look-up
        # for a query the load checked or took as accepted from the rules cache)
        refused = fetch_problem(query, self._dialect)
        if refused is not None:
            raise SourceError(
                f"query for {kpi.id!r} not sent: {refused}", source=self.name, kpi=kpi.id
            )
        start = time.perf_counter()
        try:
            columns, rows = self._run(query)
        except PrivilegedRoleError as exc:
            raise SourceUnavailable(
                f"query for {kpi.id!r} not sent: {exc.reason}", source=self.name, kpi=kpi.id
            ) from exc
        except _Unreachable as exc:  # the database, not the query: every KPI of it fails
            elapsed = time.perf_counter() - start
            if elapsed >= self._timeout or stopped_by_server(exc.cause):
                raise self._timed_out(kpi, elapsed) from exc.cause
            raise SourceUnavailable(
                f"cannot connect: {_describe(exc.cause)}", source=self.name, kpi=kpi.id
            ) from exc.cause
        except Exception as exc:  # any failure, driver or not, becomes a SourceError
            elapsed = time.perf_counter() - start
            if elapsed >= self._timeout or stopped_by_server(exc):
                raise self._timed_out(kpi, elapsed) from exc
            reason = _describe(exc)
            raise SourceError(
                f"query for {kpi.id!r} failed: {reason}", source=self.name, kpi=kpi.id
            ) from exc
        elapsed = time.perf_counter() - start
        if elapsed >= self._timeout:
            raise self._timed_out(kpi, elapsed)
        return FetchResult(self._observations(kpi, columns, rows, now), elapsed)

    def latest_load(self, query: str) -> datetime | None:
        """The time the source's ``freshness`` query gives (its first cell), None when it
        gives no row or NULL; SourceError (or SourceUnavailable) when it cannot be had."""
        refused = fetch_problem(query, self._dialect)
        if refused is not None:
            raise SourceError(f"freshness query not sent: {refused}", source=self.name)
        try:
            _, rows = self._run(query)
        except _Unreachable as exc:
            raise SourceUnavailable(
                f"cannot connect: {_describe(exc.cause)}", source=self.name
            ) from exc.cause
        except PrivilegedRoleError as exc:
            raise SourceUnavailable(f"freshness query not sent: {exc.reason}",
                                    source=self.name) from exc  # fmt: skip
        except Exception as exc:
            raise SourceError(f"freshness query failed: {_describe(exc)}",
                              source=self.name) from exc  # fmt: skip
        if not rows or rows[0][0] is None:
            return None
        try:
            return to_utc(rows[0][0])
        except ValueError as exc:
            raise SourceError(f"freshness query: {exc}", source=self.name) from None

    def verify(self) -> None:
        """Open a connection now (it stays pooled), so its role is checked at start.

        Raises PrivilegedRoleError for a role that could act on the server, SourceError
        when the database cannot be reached.
        """
        try:
            with self._get_engine().connect():
                pass
        except PrivilegedRoleError:
            raise
        except Exception as exc:
            raise SourceError(f"cannot connect: {_describe(exc)}", source=self.name) from exc

    def close(self) -> None:
        """Dispose of the pool; a later fetch would open a new one."""
        with self._lock:
            engine, self._engine = self._engine, None
        if engine is not None:
            engine.dispose()

    def _run(self, query: str) -> tuple[Sequence[str] | None, list[tuple[Any, ...]]]:
        engine = _reaching(self._get_engine)
        if uses_session_settings(engine):
            return self._run_streamed(engine, query)
        for attempt in (1, 2):
            with _reaching(engine.connect) as conn:
                try:
                    return self._run_read_only(conn, query)
                except Exception as exc:
                    # no pre-ping: a pooled connection the server closed meanwhile
                    # (restart, idle limit) fails here; drop it and try a new one, once
                    if attempt == 2 or not connection_lost(conn, exc):
                        raise
                    conn.invalidate()
        raise AssertionError("unreachable")

    def _run_streamed(
        self, engine: sa.Engine, query: str
    ) -> tuple[Sequence[str] | None, list[tuple[Any, ...]]]:
        # the driver's connection straight from the pool: no SQLAlchemy Connection
        # around a query SQLAlchemy does not run
        for attempt in (1, 2):
            pooled = self._checkout(engine)
            raw, shared = pooled.driver_connection, self._held.shared
            lost = False
            try:
                keep_open = shared is not None and shared.keeps_open(raw)
                return run_streamed(raw, query, MAX_ROWS, keep_open=keep_open)
            except Exception:
                lost = driver_connection_lost(raw)
                if lost:
                    pooled.invalidate()  # as above: once more on a new connection
                if attempt == 2 or not lost:
                    raise
            finally:
                self._give_back(pooled, lost)
        raise AssertionError("unreachable")

    def _checkout(self, engine: sa.Engine) -> Any:
        """A pooled driver connection: the one this thread holds (:meth:`held`), if any."""
        held = self._held
        if not held.active:
            return _reaching(engine.raw_connection)
        if held.pooled is None:
            held.pooled = _reaching(engine.raw_connection)
        return held.pooled

    def _give_back(self, pooled: Any, lost: bool) -> None:
        """Return ``pooled`` after a query, unless a :meth:`held` block keeps it; a lost
        one goes back (invalidated) at once, and the block's next query takes another."""
        if self._held.active and not lost:
            return
        if self._held.pooled is pooled:
            self._held.pooled = None
        pooled.close()

    def _run_read_only(
        self, conn: sa.Connection, query: str
    ) -> tuple[Sequence[str] | None, list[tuple[Any, ...]]]:
        try:
            with read_only(conn, self._timeout) as options:
                result = conn.execute(_verbatim(query), execution_options=options)
                if not result.returns_rows:
                    return None, []
                rows = [tuple(row) for row in result.fetchmany(MAX_ROWS + 1)]
                columns = list(result.keys())
                result.close()
                return columns, rows
        finally:
            if not conn.invalidated:
                conn.rollback()  # never commit, whatever the query did

    def _get_engine(self) -> sa.Engine:
        # created on first use so a bad URL or a missing driver is a SourceError
        # for this source's KPIs, not a crash of the whole daemon at start-up
        with self._lock:
            if self._engine is None:
                url = read_only_url(sa.make_url(self._url))
                options = engine_options(url, self._timeout, self._pool_size)
                engine = sa.create_engine(url, **options)
                prepare(engine, self._timeout)
                if not self._allow_privileged:
                    refuse_privileged_roles(engine, self.name, url.database)
                self._engine = engine
            return self._engine

    def _observations(
        self,
        kpi: rules.Kpi,
        columns: Sequence[str] | None,
        rows: list[tuple[Any, ...]],
        now: datetime,
    ) -> tuple[Observation, ...]:
        if columns is None:
            raise self._bad(kpi, f"the statement returned no result set; {_SHAPES}")
        if not rows:
            raise BadValueError(
                f"query for {kpi.id!r} returned no rows", source=self.name, kpi=kpi.id
            )
        if len(rows) > MAX_ROWS:
            raise self._bad(kpi, f"more than {MAX_ROWS} rows; aggregate or add a LIMIT")
        if len(columns) == 1:
            if len(rows) > 1:
                raise self._bad(kpi, f"{len(rows)} rows of one column; {_SHAPES}")
            return (Observation(kpi.id, now, self._cell(kpi, to_number, rows[0][0], None)),)
        if len(columns) == 2:
            points = [
                (self._cell(kpi, to_utc, at, i), self._cell(kpi, to_number, value, i))
                for i, (at, value) in enumerate(rows, start=1)
            ]
            return observations_of(kpi.id, points)
        names = ", ".join(columns)
        raise self._bad(kpi, f"{len(columns)} columns ({names}); {_SHAPES}")

    def _cell(
        self, kpi: rules.Kpi, convert: Callable[[object], T], cell: object, row: int | None
    ) -> T:
        try:
            return convert(cell)
        except ValueError as exc:
            raise self._bad(kpi, f"row {row}: {exc}" if row else str(exc)) from None

    def _bad(self, kpi: rules.Kpi, what: str) -> BadValueError:
        return BadValueError(f"query for {kpi.id!r}: {what}", source=self.name, kpi=kpi.id)

    def _timed_out(self, kpi: rules.Kpi, elapsed: float) -> SourceTimeout:
        return SourceTimeout(
            f"query for {kpi.id!r} timed out after {elapsed:.1f}s (timeout {self._timeout:g}s)",
            source=self.name,
            kpi=kpi.id,
        )


def check_roles(sources: Mapping[str, Source]) -> list[SourceError]:
    """Connect every SQL source once, at start: refuse any whose role could act on the server.

    Raises ConfigError naming every privileged source. A source that cannot be reached
    is not fatal (its KPIs fail as source errors until it answers): those errors are
    returned, for the caller to report.
    """
    sql = [s for s in sources.values() if isinstance(s, SqlQuerySource)]
    if not sql:
        return []

    def outcome(source: SqlQuerySource) -> Exception | None:
        try:
            source.verify()
        except (PrivilegedRoleError, SourceError) as exc:
            return exc
        return None

    # at once: a start must not wait for each unreachable source's timeout in turn
    with ThreadPoolExecutor(min(len(sql), _CHECKERS), thread_name_prefix="role-check") as pool:
        outcomes = list(pool.map(outcome, sql))
    refused = [str(e) for e in outcomes if isinstance(e, PrivilegedRoleError)]
    if refused:
        raise ConfigError("\n".join(refused))
    return [e for e in outcomes if isinstance(e, SourceError)]


def _verbatim(query: str) -> sa.TextClause:
    # escape every colon so text() finds no ":name" bind parameters: a literal
    # such as ' :x' reaches the database as written (and "::" casts still work)
    return sa.text(query.replace(":", "\\:"))


class _Unreachable(Exception):
    """Getting a connection failed (not running the query): the source is down."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _reaching(connect: Callable[[], T]) -> T:
    """``connect()``, with any failure but a refused role marked as the source's."""
    try:
        return connect()
    except PrivilegedRoleError:
        raise
    except Exception as exc:
        raise _Unreachable(exc) from exc


def _describe(exc: BaseException) -> str:
    """The driver's own message, on one line, without SQLAlchemy's boilerplate."""
    orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None else exc
    args: tuple[Any, ...] = getattr(orig, "args", ())
    if len(args) == 2 and isinstance(args[0], int) and isinstance(args[1], str):
        text = f"{args[1]} (error {args[0]})"  # MySQL drivers: (errno, message)
    else:
        text = _SA_BACKGROUND.sub("", str(orig)) or type(orig).__name__
    lines = []
    for line in text.splitlines():
        if line.startswith("LINE "):  # PostgreSQL's position context: noise here
            break
        lines.append(line.strip())
    return " ".join(line for line in lines if line)

"""Creating the SQLAlchemy engine, with the settings each backend needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine

from kpiwatch.errors import StoreError, redact


def sqlite_file(url: str | URL) -> Path | None:
    """The database file of a SQLite URL; None for in-memory and non-SQLite URLs."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if database in ("", ":memory:") or parsed.query.get("mode") == "memory":
        return None
    if database.startswith("file:"):  # sqlite:///file:path?uri=true
        database = database[len("file:"):]
    return Path(database)


# Each pooled connection keeps a page cache of its own (2 MiB by default). The
# operating system caches the file for all of them anyway, so a page missed here costs
# a read() from memory, not a disk access. At 10,000 KPIs the pool's five default
# caches held ~15 MiB of the daemon's RSS (bench_memory, 30 cycles: 218 -> 203 MiB,
# cycles no slower; issue 15).
_SQLITE_CACHE_KIB = 512


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Per connection: WAL lets the web UI read while the daemon writes; NORMAL is
    # durable enough in WAL mode; SQLite leaves foreign keys off unless asked.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.execute(f"PRAGMA cache_size=-{_SQLITE_CACHE_KIB}")
    finally:
        cursor.close()


def missing_sqlite_file(url: str) -> bool:
    """Whether ``url`` names a SQLite file that is not there (nothing evaluated into it)."""
    path = sqlite_file(url)
    return path is not None and not path.is_file()


def create_store_engine(url: str, *, create: bool = True) -> Engine:
    """An engine for ``url``: SQLite tuned for one writer, other backends with pre-ping.

    Raises :class:`StoreError` (password redacted) when the URL is unusable, the
    SQLite file's directory cannot be created, or, without ``create`` (the read
    commands), the SQLite file is not there: reading must not create a database.
    """
    try:
        parsed = sa.make_url(url)
        if parsed.get_backend_name() == "sqlite":
            path = sqlite_file(parsed)
            if not create and missing_sqlite_file(url):
                raise StoreError(
                    f"no state database at {str(path)!r} (KPIWATCH_DATABASE_URL): nothing "
                    "has been evaluated into it yet; `kpiwatch run` or `kpiwatch run --once` "
                    "creates it"
                )
            if path is not None and str(path.parent) not in ("", "."):
                path.parent.mkdir(parents=True, exist_ok=True)
            if path is None:
                # one in-memory database for the whole process, not one per thread
                engine = sa.create_engine(
                    parsed, poolclass=sa.pool.StaticPool,
                    connect_args={"check_same_thread": False},
                )
            else:
                engine = sa.create_engine(parsed)
            sa.event.listen(engine, "connect", _sqlite_pragmas)
            return engine
        # pre-ping: a server restart or idle timeout must not fail the next cycle
        return sa.create_engine(parsed, pool_pre_ping=True)
    except (sa.exc.SQLAlchemyError, ValueError, ImportError, OSError) as exc:
        message = f"cannot open the database {redact(str(url))}: {redact(str(exc))}"
        raise StoreError(message) from exc

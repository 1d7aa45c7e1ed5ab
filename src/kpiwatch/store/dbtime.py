"""The database's clock, as a SQL expression.

Replicas' clocks may differ by a second or more; leases compare times taken
from the one clock they share, the database's. Every backend stores
:class:`~kpiwatch.store.types.UtcDateTime` its own way (PostgreSQL
``timestamptz``; SQLite and MariaDB naive UTC), so "now" is spelled per dialect
to compare correctly with those columns.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from kpiwatch.store.types import UtcDateTime


class utc_now(FunctionElement[datetime]):
    """The database server's current time in UTC, with sub-second precision."""

    type = UtcDateTime()
    inherit_cache = True
    name = "utc_now"


@compiles(utc_now)
def _default(element: utc_now, compiler: SQLCompiler, **kw: Any) -> str:
    return "CURRENT_TIMESTAMP"


@compiles(utc_now, "postgresql")
def _postgresql(element: utc_now, compiler: SQLCompiler, **kw: Any) -> str:
    return "statement_timestamp()"  # timestamptz; now() would be the transaction's start


@compiles(utc_now, "sqlite")
def _sqlite(element: utc_now, compiler: SQLCompiler, **kw: Any) -> str:
    # naive UTC text like SQLAlchemy's own ("2024-03-01 09:30:15.123"), not CURRENT_TIMESTAMP's
    # whole seconds, which would compare wrongly with stored fractions
    return "strftime('%Y-%m-%d %H:%M:%f', 'now')"


@compiles(utc_now, "mysql")
@compiles(utc_now, "mariadb")
def _mysql(element: utc_now, compiler: SQLCompiler, **kw: Any) -> str:
    return "UTC_TIMESTAMP(6)"  # naive UTC; NOW() would follow the session's time zone

"""Column types shared by the schema and the migrations.

Migrations import from here (not from :mod:`schema`) so that an old revision
keeps describing the columns it created even after the schema moves on.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect


class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    PostgreSQL keeps the offset (``timestamptz``); SQLite and MySQL store naive
    UTC. Either way Python code only ever sees aware UTC values, and a naive
    value is refused rather than silently guessed at.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))  # default keeps whole seconds
        return dialect.type_descriptor(sa.DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: kpiwatch stores timezone-aware times only")
        value = value.astimezone(UTC)
        # SQLite and MySQL drivers format the wall clock and drop the offset
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else stored_utc(value)


def stored_utc(value: datetime | str) -> datetime:
    """A stored time as aware UTC: naive values are UTC (SQLite and MySQL store them so),
    and SQLite's driver hands them over as ISO text."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


# Surrogate keys: BIGINT where it matters; SQLite only autoincrements "INTEGER PRIMARY KEY".
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# Key columns stay short enough for MySQL's 3072-byte index limit in utf8mb4.
KPI_ID_LENGTH = 255
EVENT_KEY_LENGTH = 512
CHANNEL_LENGTH = 32
TARGET_LENGTH = 512
ENUM_LENGTH = 32
AUTHOR_LENGTH = 255
MATCHER_VALUE_LENGTH = 512  # a KPI id, a team name or "label=value"
LEASE_NAME_LENGTH = 300  # "kpi:" + a KPI id, or a job name
LEASE_HOLDER_LENGTH = 255  # host:pid:random of a replica
SLACK_CHANNEL_LENGTH = 255  # a channel name or id; the PK stays under MySQL's index limit
SLACK_TS_LENGTH = 64  # Slack message timestamps look like "1712345678.123456"

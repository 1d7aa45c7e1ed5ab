"""Store building blocks that need no database: the UTC column type, URL parsing."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy.dialects import mysql, postgresql, sqlite

from kpiwatch.errors import StoreError
from kpiwatch.model import Observation
from kpiwatch.store import Store, create_store_engine
from kpiwatch.store.engine import sqlite_file
from kpiwatch.store.types import UtcDateTime

PLUS_TWO = timezone(timedelta(hours=2))
LOCAL = datetime(2024, 7, 1, 11, 0, tzinfo=PLUS_TWO)
UTC_NAIVE = datetime(2024, 7, 1, 9, 0)
PG = postgresql.dialect()  # type: ignore[no-untyped-call]  # untyped in SQLAlchemy


def test_bind_keeps_the_offset_only_where_the_column_can() -> None:
    column = UtcDateTime()
    pg = column.process_bind_param(LOCAL, PG)
    assert pg == LOCAL
    assert pg is not None
    assert pg.tzinfo is UTC
    assert column.process_bind_param(LOCAL, sqlite.dialect()) == UTC_NAIVE
    assert column.process_bind_param(LOCAL, mysql.dialect()) == UTC_NAIVE
    assert column.process_bind_param(None, sqlite.dialect()) is None


def test_naive_values_are_refused() -> None:
    with pytest.raises(ValueError, match="naive datetime"):
        UtcDateTime().process_bind_param(UTC_NAIVE, sqlite.dialect())


def test_results_are_aware_utc() -> None:
    column = UtcDateTime()
    from_sqlite = column.process_result_value(UTC_NAIVE, sqlite.dialect())
    from_pg = column.process_result_value(LOCAL, PG)
    assert from_sqlite == from_pg == LOCAL
    assert from_sqlite is not None
    assert from_sqlite.tzinfo is UTC
    assert from_pg is not None
    assert from_pg.tzinfo is UTC


def test_mysql_keeps_microseconds() -> None:
    compiled = UtcDateTime().compile(dialect=mysql.dialect())
    assert compiled == "DATETIME(6)"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///kpiwatch.db", Path("kpiwatch.db")),
        ("sqlite:////var/lib/kpiwatch/kpiwatch.db", Path("/var/lib/kpiwatch/kpiwatch.db")),
        ("sqlite://", None),
        ("sqlite:///:memory:", None),
        ("sqlite:///file:mem?mode=memory&uri=true", None),
        ("postgresql+psycopg://kw@db/kpiwatch", None),
    ],
)
def test_sqlite_file(url: str, expected: Path | None) -> None:
    assert sqlite_file(url) == expected


def test_bad_urls_are_store_errors_without_secrets() -> None:
    with pytest.raises(StoreError, match="cannot open"):
        create_store_engine("not a url")
    with pytest.raises(StoreError) as info:
        create_store_engine("nosuchdb://kw:s3cret@host/db")
    assert "s3cret" not in str(info.value)
    assert info.value.__cause__ is not None


def test_in_memory_sqlite_is_shared_between_threads() -> None:
    with Store.open("sqlite://") as store:
        t0 = datetime(2024, 1, 1, tzinfo=UTC)
        worker = threading.Thread(
            target=store.add_observations, args=([Observation("k", t0, 1.0)],)
        )
        worker.start()
        worker.join()
        assert store.latest("k") == Observation("k", t0, 1.0)

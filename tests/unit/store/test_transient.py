"""Which store failures are worth one more try: a transaction the database rolled
back to break a deadlock, never a real error."""

from __future__ import annotations

import pymysql
import sqlalchemy as sa

from kpiwatch.errors import StoreError
from kpiwatch.store.transactions import transient


class _PgError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__("pg")
        self.sqlstate = sqlstate


def _store_error(orig: Exception) -> StoreError:
    try:
        raise StoreError("save evaluations: failed") from sa.exc.OperationalError("X", {}, orig)
    except StoreError as exc:
        return exc


def test_a_mariadb_deadlock_and_a_postgresql_one_are_transient() -> None:
    assert transient(_store_error(pymysql.err.OperationalError(1213, "Deadlock found")))
    assert transient(_store_error(_PgError("40P01")))
    assert transient(_store_error(_PgError("40001")))


def test_other_failures_are_not() -> None:
    assert not transient(_store_error(pymysql.err.OperationalError(1045, "Access denied")))
    assert not transient(_store_error(_PgError("23505")))  # unique violation
    assert not transient(StoreError("no cause"))
    assert not transient(ValueError("bug"))

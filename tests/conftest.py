"""Shared fixtures: throwaway databases on the real servers of this machine.

A test that needs PostgreSQL or MariaDB skips with the reason when the server
is absent (a laptop) but fails when ``CI`` is set: CI must exercise it.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import closing

import pytest
import sqlalchemy as sa

# the rules cache (KPIWATCH_CACHE_DIR, by default in $XDG_CACHE_HOME/kpiwatch) of every
# daemon and `check` the tests start, in this process or a child: not the user's
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="kpiwatch-test-cache-")
atexit.register(shutil.rmtree, os.environ["XDG_CACHE_HOME"], True)

POSTGRES_ADMIN_URL = os.environ.get(
    "KPIWATCH_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
MARIADB_ADMIN_URL = os.environ.get(
    "KPIWATCH_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test"
)


def _unavailable(what: str, exc: Exception) -> None:
    message = f"{what} is not reachable ({type(exc).__name__}: {exc}); start it or set its URL"
    if os.environ.get("CI"):
        pytest.fail(f"CI is set, so this test must run: {message}")
    pytest.skip(message)


def _throwaway_database(
    admin_url: str, what: str, connect_args: dict[str, object]
) -> Iterator[str]:
    name = f"kpiwatch_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", connect_args=connect_args)
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        _unavailable(what, exc)
    url = sa.make_url(admin_url).set(database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            if url.get_backend_name() == "postgresql":
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            else:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped afterwards."""
    yield from _throwaway_database(POSTGRES_ADMIN_URL, "PostgreSQL", {"connect_timeout": 5})


@pytest.fixture
def mariadb_url() -> Iterator[str]:
    """A fresh, empty MariaDB database, dropped afterwards."""
    yield from _throwaway_database(MARIADB_ADMIN_URL, "MariaDB", {"connect_timeout": 5})


def _reader(admin_db_url: str) -> Iterator[str]:
    """A login role made with the documented read-only recipe, on ``admin_db_url``'s database.

    Named uniquely (roles are server-wide and other test runs share the servers).
    """
    from kpiwatch.sources.sql_privileges import read_only_recipe

    url = sa.make_url(admin_db_url)
    role, password = f"kpiwatch_reader_{uuid.uuid4().hex[:10]}", "reader-Pw-1"
    backend = url.get_backend_name()
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn, closing(conn.connection.driver_connection.cursor()) as cursor:
        for statement in read_only_recipe(backend, str(url.database), role, password):
            cursor.execute(statement)  # as written: no parameters, so '%' is no placeholder
    try:
        yield url.set(username=role, password=password).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            if backend == "postgresql":
                sessions = f"SELECT pid FROM pg_stat_activity WHERE usename = '{role}'"
                conn.exec_driver_sql(f"SELECT pg_terminate_backend(pid) FROM ({sessions}) s")
                conn.exec_driver_sql(f"DROP OWNED BY {role}")  # its grants, here and shared
                conn.exec_driver_sql(f"DROP ROLE {role}")
            else:
                conn.exec_driver_sql(f"DROP USER '{role}'@'%%'")
        admin.dispose()


@pytest.fixture
def postgres_reader_url(postgres_url: str) -> Iterator[str]:
    """``postgres_url``'s database, as a role that may only read it (not a superuser)."""
    yield from _reader(postgres_url)


@pytest.fixture
def mariadb_reader_url(mariadb_url: str) -> Iterator[str]:
    """``mariadb_url``'s database, as a user with SELECT on it alone (not root)."""
    yield from _reader(mariadb_url)


@pytest.fixture
def sqlite_url(tmp_path: object) -> str:
    return f"sqlite:///{tmp_path}/kpiwatch.db"  # type: ignore[str-bytes-safe]


@pytest.fixture(
    params=[
        "sqlite_url",
        pytest.param("postgres_url", marks=pytest.mark.postgres),
        pytest.param("mariadb_url", marks=pytest.mark.mariadb),
    ]
)
def store_url(request: pytest.FixtureRequest) -> str:
    """A fresh database on each backend the state store supports, in turn."""
    url: str = request.getfixturevalue(request.param)
    return url

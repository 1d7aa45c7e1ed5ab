"""The role check of SQL sources on the real servers: who may be a KPI source's role.

A superuser, a member of pg_execute_server_program / pg_write_server_files, or a
MariaDB user with FILE or SUPER is refused on every new connection unless the source
says ``allow_privileged: true``; a role made with the documented recipe reads.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from kpiwatch.config import rules
from kpiwatch.errors import SourceError
from kpiwatch.sources.sql import SqlQuerySource
from kpiwatch.sources.sql_privileges import PrivilegedRoleError

NOW = datetime(2024, 6, 1, tzinfo=UTC)
KPI = rules.Kpi(
    id="signups", name="Sign-ups", owner="ann", direction="higher_is_better",
    source="wh", query="SELECT COUNT(*) FROM signups",
)  # fmt: skip


def _source(url: str, *, allow_privileged: bool = False) -> SqlQuerySource:
    config = rules.SqlSource(type="sql", url=url, allow_privileged=allow_privileged)
    return SqlQuerySource("wh", config)


def _admin(url: str, *statements: str) -> None:
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)
    engine.dispose()


def _role(url: str) -> str:
    return str(sa.make_url(url).username)


# ---------------------------------------------------------------- PostgreSQL


@pytest.mark.postgres
def test_postgres_superuser_is_refused_naming_source_role_and_recipe(postgres_url: str) -> None:
    _admin(postgres_url, "CREATE TABLE signups (x INTEGER)")
    source = _source(postgres_url)
    try:
        with pytest.raises(PrivilegedRoleError) as at_start:
            source.verify()
        with pytest.raises(SourceError) as at_fetch:
            source.fetch(KPI, NOW)
    finally:
        source.close()

    message = str(at_start.value)
    assert message.startswith("source 'wh': connects as 'postgres', which is a superuser")
    assert "CREATE ROLE kpiwatch_reader LOGIN" in message
    assert "GRANT SELECT ON ALL TABLES IN SCHEMA public TO kpiwatch_reader" in message
    assert "allow_privileged: true" in message
    assert str(at_fetch.value).startswith(
        "source 'wh': query for 'signups' not sent: connects as 'postgres', which is a superuser"
    )


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("granted", "named"),
    [
        ("pg_write_server_files", "a member of pg_write_server_files"),
        ("pg_execute_server_program", "a member of pg_execute_server_program"),
        ("postgres", "a member of the superuser role postgres"),  # it could SET ROLE postgres
    ],
)
def test_postgres_role_with_server_file_powers_is_refused(
    postgres_url: str, postgres_reader_url: str, granted: str, named: str
) -> None:
    role = _role(postgres_reader_url)
    _admin(postgres_url, f"GRANT {granted} TO {role}")
    source = _source(postgres_reader_url)
    try:
        with pytest.raises(PrivilegedRoleError, match=f"'{role}', which is {named}"):
            source.verify()
    finally:
        source.close()


@pytest.mark.postgres
def test_postgres_read_only_role_reads_tables_created_after_it(
    postgres_url: str, postgres_reader_url: str
) -> None:
    # created after the role: ALTER DEFAULT PRIVILEGES in the recipe covers it
    _admin(postgres_url, "CREATE TABLE signups (x INTEGER)", "INSERT INTO signups VALUES (1), (2)")
    source = _source(postgres_reader_url)
    try:
        source.verify()
        assert source.fetch(KPI, NOW).current.value == 2.0
    finally:
        source.close()


@pytest.mark.postgres
def test_postgres_role_given_powers_after_start_is_refused_on_its_next_connection(
    postgres_url: str, postgres_reader_url: str
) -> None:
    _admin(postgres_url, "CREATE TABLE signups (x INTEGER)")
    role = _role(postgres_reader_url)
    source = _source(postgres_reader_url)
    try:
        assert source.fetch(KPI, NOW).current.value == 0.0
        # more rights, and the pooled connection ends (a restart, an idle limit)
        _admin(
            postgres_url,
            f"GRANT pg_write_server_files TO {role}",
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'",
        )
        with pytest.raises(SourceError, match=r"not sent: .* member of pg_write_server_files"):
            source.fetch(KPI, NOW)
    finally:
        source.close()


@pytest.mark.postgres
def test_postgres_superuser_is_accepted_with_allow_privileged(postgres_url: str) -> None:
    _admin(postgres_url, "CREATE TABLE signups (x INTEGER)", "INSERT INTO signups VALUES (7)")
    source = _source(postgres_url, allow_privileged=True)
    try:
        source.verify()
        assert source.fetch(KPI, NOW).current.value == 1.0
    finally:
        source.close()


# ---------------------------------------------------------------- MariaDB


@pytest.mark.mariadb
def test_mariadb_root_is_refused_naming_file_and_super(mariadb_url: str) -> None:
    source = _source(mariadb_url)
    try:
        with pytest.raises(PrivilegedRoleError) as caught:
            source.verify()
    finally:
        source.close()

    message = str(caught.value)
    assert "source 'wh': connects as 'root@" in message
    assert "has the global privileges FILE and SUPER" in message
    assert "CREATE USER 'kpiwatch_reader'@'%'" in message
    assert f"GRANT SELECT ON {sa.make_url(mariadb_url).database}.*" in message


@pytest.mark.mariadb
def test_mariadb_user_with_file_through_a_role_is_refused(
    mariadb_url: str, mariadb_reader_url: str
) -> None:
    user, role = _role(mariadb_reader_url), f"{_role(mariadb_reader_url)}_files"
    _admin(
        mariadb_url,
        f"CREATE ROLE {role}",
        f"GRANT FILE ON *.* TO {role}",
        f"GRANT {role} TO '{user}'@'%%'",
        f"SET DEFAULT ROLE {role} FOR '{user}'@'%%'",
    )
    source = _source(mariadb_reader_url)
    try:
        with pytest.raises(PrivilegedRoleError, match="has the global privilege FILE"):
            source.verify()
    finally:
        source.close()
        _admin(mariadb_url, f"DROP ROLE {role}")


@pytest.mark.mariadb
def test_mariadb_select_only_user_is_accepted_and_reads(
    mariadb_url: str, mariadb_reader_url: str
) -> None:
    _admin(mariadb_url, "CREATE TABLE signups (x INTEGER)", "INSERT INTO signups VALUES (1)")
    source = _source(mariadb_reader_url)
    try:
        source.verify()
        assert source.fetch(KPI, NOW).current.value == 1.0
    finally:
        source.close()


@pytest.mark.mariadb
def test_mariadb_root_is_accepted_with_allow_privileged(mariadb_url: str) -> None:
    source = _source(mariadb_url, allow_privileged=True)
    try:
        source.verify()
        assert source.fetch(KPI.model_copy(update={"query": "SELECT 4"}), NOW).current.value == 4.0
    finally:
        source.close()

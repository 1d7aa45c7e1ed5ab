"""The role check of SQL sources: refuse a database role that can act on the server itself.

A read-only transaction does not stop everything: on PostgreSQL a superuser, or a
member of ``pg_execute_server_program`` / ``pg_write_server_files``, can run
``COPY (SELECT 1) TO PROGRAM '...'`` or write files with ``COPY ... TO '/path'``
inside one; on MariaDB/MySQL a user with the global ``FILE`` privilege can write
files with ``SELECT ... INTO OUTFILE``, and ``SUPER`` may change server settings
(and ignores ``read_only``). The statement check (:mod:`kpiwatch.sources.sql_guard`)
refuses those statements, but a role that cannot do harm is the layer that does not
depend on a parser. So every new connection of a source is checked here - at start,
by ``kpiwatch check`` and whenever the pool opens one at fetch time, so a role given
more rights after the start is caught too - unless the source sets
``allow_privileged: true``.

SQLite has no roles: its files are opened read-only (see ``sql_session``).
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa

from kpiwatch.errors import ConfigError

# a member of a superuser role can become it (SET ROLE, or set_config('role', ...) in a
# SELECT): its superuser roles count as its own
_PG_ROLE = """
SELECT current_user,
       (SELECT array_agg(s.rolname::text ORDER BY s.rolname) FROM pg_roles s
        WHERE s.rolsuper AND pg_has_role(current_user, s.oid, 'MEMBER')),
       pg_has_role(current_user, 'pg_execute_server_program', 'MEMBER'),
       pg_has_role(current_user, 'pg_write_server_files', 'MEMBER')
"""
# MariaDB lists the privileges of the user's active roles here too (information_schema
# USER_PRIVILEGES does not); a line reads "GRANT FILE, SUPER ON *.* TO `u`@`%` ..."
_GLOBAL_GRANT = re.compile(r"^GRANT (?P<privileges>.+?) ON \*\.\* TO ", re.I)
_MYSQL_POWERS = ("FILE", "SUPER")


class PrivilegedRoleError(ConfigError):
    """A SQL source connects as a role that could write files or run programs on the server."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"source {source!r}: {reason}")


def refuse_privileged_roles(engine: sa.Engine, source: str, database: str | None) -> None:
    """Check every new connection of ``engine``; a privileged one is closed and refused."""

    def check(dbapi_connection: Any, _record: Any) -> None:
        try:
            reason = privilege_problem(dbapi_connection, engine.dialect.name, database)
        except Exception:
            dbapi_connection.close()
            raise
        if reason is not None:
            dbapi_connection.close()  # never pooled: a fetch must not run on it
            raise PrivilegedRoleError(source, reason)

    sa.event.listen(engine, "connect", check)


def privilege_problem(dbapi_connection: Any, dialect: str, database: str | None) -> str | None:
    """Why the role of a fresh driver connection may not be used, or None when it may."""
    if dialect == "postgresql":
        role, powers = _postgres_powers(dbapi_connection)
    elif dialect in ("mysql", "mariadb"):
        role, powers = _mysql_powers(dbapi_connection)
    else:
        return None
    if not powers:
        return None
    recipe = "; ".join(read_only_recipe(dialect, database or "<database>"))
    return (
        f"connects as {role!r}, which {' and '.join(powers)}: through a query it could "
        f"run programs or write files on the database server. Connect as a read-only role, "
        f"e.g. {recipe}; or set allow_privileged: true on the source to accept this"
    )


def read_only_recipe(
    dialect: str, database: str, role: str = "kpiwatch_reader", password: str = "..."
) -> list[str]:
    """The statements that create a role able to read ``database`` and nothing more.

    The refusal message shows them; the tests create their reader roles with them.
    """
    if dialect == "postgresql":
        return [
            f"CREATE ROLE {role} LOGIN PASSWORD '{password}'",
            f"GRANT CONNECT ON DATABASE {database} TO {role}",
            f"GRANT USAGE ON SCHEMA public TO {role}",
            f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}",
            # tables created later by the role running this (FOR ROLE another owner)
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {role}",
        ]
    return [
        f"CREATE USER '{role}'@'%' IDENTIFIED BY '{password}'",
        f"GRANT SELECT ON {database}.* TO '{role}'@'%'",
    ]


def _postgres_powers(dbapi_connection: Any) -> tuple[str, list[str]]:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(_PG_ROLE)
        row = cursor.fetchone()  # one row: the query has no FROM
    finally:
        cursor.close()
        dbapi_connection.rollback()  # the check's own transaction must not stay open
    role, superusers, program, write_files = row
    powers = []
    if superusers and role in superusers:
        powers.append("is a superuser")
    elif superusers:
        powers.append(f"is a member of the superuser role {', '.join(superusers)}")
    if not superusers:  # a superuser is a member of every role: name the cause, not its echoes
        if program:
            powers.append("is a member of pg_execute_server_program")
        if write_files:
            powers.append("is a member of pg_write_server_files")
    return str(role), powers


def _mysql_powers(dbapi_connection: Any) -> tuple[str, list[str]]:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SELECT CURRENT_USER()")
        (user,) = cursor.fetchone()
        cursor.execute("SHOW GRANTS")
        lines = [str(row[0]) for row in cursor.fetchall()]
    finally:
        cursor.close()
        dbapi_connection.rollback()
    granted: set[str] = set()
    for line in lines:
        match = _GLOBAL_GRANT.match(line)
        if match:
            granted |= {p.strip().upper() for p in match["privileges"].split(",")}
    if "ALL PRIVILEGES" in granted:
        granted |= set(_MYSQL_POWERS)
    powers = [p for p in _MYSQL_POWERS if p in granted]
    shown = "has the global privilege" + ("s " if len(powers) > 1 else " ")
    return str(user), [shown + " and ".join(powers)] if powers else []

"""Applying the Alembic migrations from code: no ``alembic.ini`` on disk needed."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

# Any constant works; it only has to be the same for every kpiwatch process.
_PG_MIGRATION_LOCK = 0x6B70_6977  # "kpiw"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config pointing at the packaged migrations, bound to ``connection``."""
    config = Config()
    # ConfigParser interpolation: a "%" in the install path must be doubled
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database up to ``revision`` in one transaction.

    On PostgreSQL a transaction-scoped advisory lock makes replicas that start
    together migrate one after the other instead of racing on CREATE TABLE.
    """
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            lock = sa.text("SELECT pg_advisory_xact_lock(:key)")
            connection.execute(lock, {"key": _PG_MIGRATION_LOCK})
        command.upgrade(alembic_config(connection), revision)


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at; None for an empty database."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    """The newest revision shipped with this version of kpiwatch."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()

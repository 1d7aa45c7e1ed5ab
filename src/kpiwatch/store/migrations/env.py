"""Alembic environment of the kpiwatch store.

kpiwatch runs migrations itself (``kpiwatch.store.migrate.upgrade``) and hands
over its connection in ``config.attributes["connection"]``. For authoring a new
revision by hand, ``alembic -x url=sqlite:///dev.db revision --autogenerate``
with ``script_location`` set to this directory works too.
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from alembic import context

from kpiwatch.store.schema import metadata

config = context.config


def _configure(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things: batch mode copies the table instead
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ.get(
        "KPIWATCH_DATABASE_URL"
    )
    if not url:
        raise RuntimeError("no database: pass -x url=... or set KPIWATCH_DATABASE_URL")
    return url


def run_offline() -> None:
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        # the caller owns the connection and its transaction
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = sa.create_engine(_url(), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as own:
            _configure(own)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()

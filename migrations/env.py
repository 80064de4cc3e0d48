"""Alembic environment for anomon.

Imports :mod:`anomon.store.schema` and what tells a partition of ``samples``. anomon's
own commands hand over an open connection in ``config.attributes["connection"]``; the
plain ``alembic`` command (run from the repository root with ``alembic.ini``) connects
to ``ANOMON_DATABASE_URL``.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

from anomon.store.partitions import is_partition
from anomon.store.schema import metadata

config = context.config


def _include(obj, name, type_, reflected, compare_to) -> bool:  # type: ignore[no-untyped-def]
    """Leave the day partitions of ``samples`` (PostgreSQL, revision 0012) out of the
    comparison with the models: they are made and dropped as days come and go."""
    table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", "")
    return not (reflected and is_partition(table or ""))


def _configure(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=True,  # SQLite cannot ALTER most things; batch mode copies tables
        compare_type=True,
        include_object=_include,
    )


def run_offline() -> None:
    url = os.environ.get("ANOMON_DATABASE_URL") or config.get_main_option("sqlalchemy.url")
    context.configure(
        url=url,
        target_metadata=metadata,
        render_as_batch=True,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = os.environ.get("ANOMON_DATABASE_URL") or config.get_main_option("sqlalchemy.url")
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as connection:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()

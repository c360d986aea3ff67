"""Alembic's environment for Tally: how a revision meets a database (ADR 0031).

Tally runs Alembic through ``tally.store.migrations``: ``store.migration_connection`` opens the
connection (PostgreSQL through psycopg's asyncio driver, ``AsyncConnection.run_sync``; SQLite in
a worker thread), bounds its lock waits, and hands it over in ``config.attributes["connection"]``. Run
without one (Alembic's own command line, or ``alembic.command`` with only ``sqlalchemy.url``
set), this file opens the same kind of connection itself, through the same function.

Every revision runs in a transaction of its own (``transaction_per_migration``): a failure
leaves the database at the last revision that completed, and a retry resumes from there. On
SQLite, ``ALTER``s go through batch mode (copy the table, swap it), the only way SQLite alters
most things.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection

from tally.store import tables
from tally.store.migration_connection import on_migration_connection


def run_migrations(connection: Connection) -> None:
    config = context.config
    context.configure(
        connection=connection,
        target_metadata=tables.metadata,
        transaction_per_migration=True,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        on_version_apply=config.attributes.get("on_version_apply"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("Set sqlalchemy.url, or pass a connection in config.attributes['connection'].")
    asyncio.run(on_migration_connection(url, run_migrations))


if context.is_offline_mode():
    # Offline mode writes SQL to a file, with no database to take locks on, to check an index's
    # validity on, or to retry against: the migrations this environment guarantees need one.
    raise RuntimeError("Tally's migrations run against a database; offline (--sql) mode is not supported.")
run_migrations_online()

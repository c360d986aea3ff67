"""Index builds that do not stop writes: what a revision calls instead of ``op.create_index``.

On PostgreSQL a plain ``CREATE INDEX`` holds a ``SHARE`` lock on the table for the whole build:
every insert and update waits, for minutes on a large table. ``CREATE INDEX CONCURRENTLY`` lets
them run, at the cost of three rules this module keeps:

- it cannot run inside a transaction, so it runs in Alembic's ``autocommit_block()``. That block
  first COMMITS what the revision did before it: a revision that builds an index concurrently
  should do nothing else (ADR 0031), or a failure of the build leaves its earlier steps applied
  under a version that says they are not;
- a build that fails (lock timeout, cancellation, a duplicate in a unique index) leaves an
  INVALID index behind, which writes maintain and reads never use. ``IF NOT EXISTS`` would then
  skip the retry silently, so a leftover INVALID index of that name is dropped first;
- ``DROP INDEX CONCURRENTLY`` likewise, and it takes one index, without ``CASCADE``.

On SQLite (one writer, no concurrent builds) both are the plain operations.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

_VALIDITY = sa.text("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:name)")


def create_index_concurrently(
    name: str, table: str, columns: Sequence[str | sa.TextClause | sa.ColumnElement[Any]], **kw: Any
) -> None:
    """``op.create_index(name, table, columns, **kw)``, built without blocking writes on PostgreSQL.

    Idempotent on PostgreSQL: a valid index of that name is kept, an invalid one rebuilt.
    """
    context = op.get_context()
    if context.dialect.name != "postgresql":
        op.create_index(name, table, columns, **kw)
        return
    with context.autocommit_block():
        _drop_if_invalid(name, kw.get("schema"))
        op.create_index(name, table, columns, postgresql_concurrently=True, if_not_exists=True, **kw)


def drop_index_concurrently(name: str, table: str, **kw: Any) -> None:
    """``op.drop_index(name, table, **kw)``, without blocking reads and writes on PostgreSQL."""
    context = op.get_context()
    if context.dialect.name != "postgresql":
        op.drop_index(name, table_name=table, **kw)
        return
    with context.autocommit_block():
        op.drop_index(name, table_name=table, postgresql_concurrently=True, if_exists=True, **kw)


def _drop_if_invalid(name: str, schema: str | None) -> None:
    """Drop what an interrupted concurrent build of ``name`` left behind, if anything."""
    bind = op.get_bind()
    quote = bind.dialect.identifier_preparer.quote
    qualified = quote(name) if schema is None else f"{quote(schema)}.{quote(name)}"
    valid = bind.execute(_VALIDITY, {"name": qualified}).scalar()
    if valid is False:
        bind.exec_driver_sql(f"DROP INDEX CONCURRENTLY IF EXISTS {qualified}")


class MigrationRefused(RuntimeError):
    """A revision will not run yet (a backfill has not finished...); the message says what to do first.

    ``tally db`` prints the message alone, without a traceback, and exits with status 1.
    """

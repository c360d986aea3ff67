"""The schema check at start: refuse a database whose tables lack columns this code writes.

Until migrations arrive (Alembic, expand and contract), the schema is created with ``create_all``,
which adds missing tables but never alters an existing one. A database made by an earlier Tally
could then fail deep inside a request; this check fails at start instead, naming what is missing.
"""

from __future__ import annotations

from sqlalchemy import Connection, inspect

from tally.store import tables


class SchemaMismatch(RuntimeError):
    pass


def check_schema(conn: Connection) -> None:
    """Raise ``SchemaMismatch`` unless every table has every column of ``tables.metadata``."""
    inspector = inspect(conn)
    missing = []
    for table in tables.metadata.sorted_tables:
        present = {column["name"] for column in inspector.get_columns(table.name)}
        missing += [f"{table.name}.{column.name}" for column in table.columns if column.name not in present]
    if missing:
        raise SchemaMismatch(
            "The database was created by an earlier version of Tally and lacks "
            f"{', '.join(missing)}. Start with a new database file (this release has no migrations yet)."
        )

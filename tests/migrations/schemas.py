"""What the migration tests compare: a database's schema as the inspector reads it, and the ways
to bring a database to a revision (Alembic's own upgrade, one revision at a time; the shortcut).

A snapshot holds, per table: columns (type, nullability, server default), primary key, indexes,
unique and check constraints and foreign keys by name, and on SQLite whether the table is STRICT;
plus the database's triggers. Two schemas are the same when their snapshots are equal.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect, text

from tally.store import tables
from tally.store.migration_connection import on_migration_connection
from tally.store.schema import SCRIPTS, VERSION_TABLE, alembic_config, revisions

Snapshot = dict[str, Any]


def snapshot(conn: Connection) -> Snapshot:
    inspector = inspect(conn)
    found: Snapshot = {}
    for table in sorted(set(inspector.get_table_names()) - {VERSION_TABLE}):
        found[table] = {
            "columns": {
                column["name"]: (str(column["type"]), column["nullable"], _default(column.get("default")))
                for column in inspector.get_columns(table)
            },
            "primary_key": inspector.get_pk_constraint(table)["constrained_columns"],
            "indexes": {
                index["name"]: (tuple(index["column_names"]), bool(index["unique"]))
                for index in inspector.get_indexes(table)
            },
            "uniques": {
                unique["name"]: tuple(unique["column_names"])
                for unique in inspector.get_unique_constraints(table)
            },
            "checks": sorted(str(check["name"]) for check in inspector.get_check_constraints(table)),
            "foreign_keys": {
                key["name"]: (
                    tuple(key["constrained_columns"]),
                    key["referred_table"],
                    tuple(key["referred_columns"]),
                )
                for key in inspector.get_foreign_keys(table)
            },
            "strict": _strict(conn, table),
        }
    found["(triggers)"] = _triggers(conn)
    return found


def _default(value: Any) -> str | None:
    # PostgreSQL spells a default with its cast ('0'::bigint); compare the literal.
    return None if value is None else str(value).split("::")[0].strip("()'")


def _strict(conn: Connection, table: str) -> bool | None:
    if conn.dialect.name != "sqlite":
        return None
    sql = conn.execute(text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :t"), {"t": table})
    return str(sql.scalar_one()).rstrip().upper().endswith("STRICT")


def _triggers(conn: Connection) -> list[str]:
    if conn.dialect.name == "sqlite":
        query = "SELECT name FROM sqlite_master WHERE type = 'trigger'"
    else:
        query = "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"
    return sorted(conn.exec_driver_sql(query).scalars())


def metadata_differences(conn: Connection) -> list[Any]:
    """What ``alembic.autogenerate`` finds between the database and ``tables.metadata``."""
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(context, tables.metadata))


def applied(conn: Connection) -> set[str]:
    if VERSION_TABLE not in inspect(conn).get_table_names():
        return set()
    return set(conn.exec_driver_sql(f"SELECT version_num FROM {VERSION_TABLE}").scalars())  # noqa: S608


def let_contract_run(conn: Connection) -> None:
    """Record the balances backfill as finished an hour ago: ``c0001_account_balances`` waits for it.

    On an empty database the backfill has nothing to copy, so this is what running it would write.
    """
    if "job_runs" not in inspect(conn).get_table_names():
        return
    long_ago = (int(time.time()) - 3600) * 1_000_000
    conn.execute(
        text(
            "INSERT INTO job_runs (job, period, status, done, owner, lease_until, attempts,"
            " started_at, updated_at, finished_at) VALUES ('backfill-account-balances', 'all',"
            " 'finished', 0, 'test', 0, 1, :t, :t, :t)"
        ),
        {"t": long_ago},
    )


async def on_connection(url: str, work: Callable[[Connection], Any], location: Path = SCRIPTS) -> Any:
    """Run ``work`` on a migration connection (bounded lock waits), committing after it."""

    def run(conn: Connection) -> Any:
        result = work(conn)
        conn.commit()
        return result

    return await on_migration_connection(url, run)


def alembic_step(conn: Connection, action: str, target: str, location: Path = SCRIPTS) -> None:
    """Alembic's own ``upgrade``/``downgrade`` to ``target`` on ``conn``: no shortcut, no adoption."""
    conn.commit()  # Alembic manages the transactions of a connection that is outside one
    config = alembic_config(location)
    config.attributes["connection"] = conn
    # The balances revisions wait for running processes to see a change; here there are none.
    config.attributes["process_grace_seconds"] = 0.0
    if action == "upgrade":
        command.upgrade(config, target)
    else:
        command.downgrade(config, target)
    conn.commit()


def every_revision() -> tuple[str, ...]:
    """Oldest first, the expand branch before the contract branch: the order an operator applies
    them (``tally db upgrade``, then ``tally db contract``), and the reverse of the order
    ``migrations.one_step_back`` undoes them in, so walking down meets the states the way up did.
    With two expand heads, Alembic's own order may put a contract revision between them."""
    known = revisions()
    return tuple(sorted(known.order, key=lambda revision: known.branch_of(revision) == "contract"))

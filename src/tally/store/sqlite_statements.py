"""SQLite statements on the ``sqlite3`` cursor (ADR 0039), prepared by ``store.statement_plans``.

What stays the same for callers:
- the ``before_cursor_execute`` and ``after_cursor_execute`` events fire with the statement and its
  parameters (statement timing and the tests' statement counters listen to them; the execution
  context they are handed is ``None``);
- a driver error is raised as SQLAlchemy's wrapped form (``OperationalError``, ``IntegrityError``);
- ``rowcount`` is on the result.

A statement the plans do not cover, and any statement on a connection outside a transaction
(SQLAlchemy's autobegin, whose ``begin`` event issues Tally's BEGIN), goes through
``Connection.execute`` unchanged.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Dialect, Executable, Result
from sqlalchemy.engine.result import SimpleResultMetaData
from sqlalchemy.exc import DBAPIError

from tally.store.statement_plans import Prepared, Rows, StatementPlans


class SqliteStatements:
    """Runs Core statements for one SQLite engine's connections; see the module docstring."""

    def __init__(self, dialect: Dialect) -> None:
        self._plans = StatementPlans(dialect)

    def execute(self, conn: Connection, statement: Executable, parameters: Any = None) -> Result[Any]:
        prepared = self._plans.prepare(statement, parameters) if conn.in_transaction() else None
        if prepared is None:
            return conn.execute(statement, parameters)
        return run(conn, prepared)


def plain(sql: str, columns: Sequence[str] | None = None) -> Prepared:
    """A statement of SQL text without parameters, for ``run``; ``columns`` names its rows' columns."""
    return Prepared(sql, (), False, None if columns is None else SimpleResultMetaData(list(columns)))


def driver_of(conn: Connection) -> sqlite3.Connection:
    """The ``sqlite3`` connection under ``conn``."""
    driver = conn.connection.driver_connection
    if not isinstance(driver, sqlite3.Connection):
        raise TypeError(f"not a sqlite3 connection (closed?): {driver!r}")
    return driver


def run(conn: Connection, prepared: Prepared) -> Rows:
    """``prepared`` on ``conn``'s cursor, in or outside a transaction: the cursor events fire, and a
    driver error is raised as SQLAlchemy's (also the adapter's own BEGIN and catch-up read, ADR 0045)."""
    sql, parameters, many = prepared.sql, prepared.parameters, prepared.many
    cursor = driver_of(conn).cursor()
    events = conn._has_events or conn.engine._has_events
    if events:
        conn.dispatch.before_cursor_execute(conn, cursor, sql, parameters, None, many)
    try:
        if many:
            cursor.executemany(sql, parameters)
        else:
            cursor.execute(sql, parameters)
        rows = cursor.fetchall() if prepared.metadata is not None else []
    except sqlite3.Error as error:
        cursor.close()
        raise DBAPIError.instance(sql, parameters, error, sqlite3.Error, dialect=conn.dialect) from error
    if events:
        conn.dispatch.after_cursor_execute(conn, cursor, sql, parameters, None, many)
    rowcount = cursor.rowcount
    cursor.close()
    return Rows(prepared.metadata, [] if prepared.hidden else rows, rowcount)

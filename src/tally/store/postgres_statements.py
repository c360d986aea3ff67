"""PostgreSQL statements on psycopg's async connection (ADR 0039), prepared by ``store.statement_plans``.

Through SQLAlchemy's asyncio adapter every statement enters a greenlet, builds an execution context
and a result, and leaves the greenlet again; measured, about 190–240 µs of this process's CPU per
statement against 70–105 µs for the same statement on psycopg's connection, a dozen times per
transfer. ``PostgresConnection`` is what the repositories get instead of the ``AsyncConnection``:
statements the plans cover run on the psycopg connection under it, in the transaction SQLAlchemy
began (the first statement of every Tally transaction is SQLAlchemy's: the statement timeout), and
everything else goes through the ``AsyncConnection`` unchanged.

What stays the same for callers:
- the ``before_cursor_execute`` and ``after_cursor_execute`` events fire on the sync connection
  with the statement and its parameters (the execution context they are handed is ``None``);
- a driver error is raised as SQLAlchemy's wrapped form (``OperationalError``, ``IntegrityError``,
  with the SQLSTATE on ``orig``), which ``store.pg_errors`` translates as before; a lost connection,
  or one whose statement was interrupted by a cancellation, is invalidated, so the pool does not
  hand it out again;
- ``rowcount`` is on the result.
"""

from __future__ import annotations

from contextlib import suppress
from typing import Any

import psycopg
from sqlalchemy import Dialect, Executable, Result, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from tally.store.statement_plans import Prepared, Rows, StatementPlans


class PostgresConnection:
    """An ``AsyncConnection`` with the repositories' ``execute``, on psycopg where it can be."""

    __slots__ = ("_conn", "_plans")

    def __init__(self, conn: AsyncConnection, plans: StatementPlans) -> None:
        self._conn = conn
        self._plans = plans

    @property
    def dialect(self) -> Dialect:
        return self._conn.dialect

    async def execute(self, statement: Executable, parameters: Any = None) -> Result[Any]:
        driver = _driver(self._conn, in_transaction=True)
        prepared = self._plans.prepare(statement, parameters) if driver is not None else None
        if driver is None or prepared is None:
            return await self._conn.execute(statement, parameters)
        return await _run(self._conn, driver, prepared)


def _driver(conn: AsyncConnection, *, in_transaction: bool) -> psycopg.AsyncConnection[Any] | None:
    """psycopg's connection under ``conn``, if it is valid and SQLAlchemy's transaction on it is
    open (``in_transaction``) or not."""
    sync = conn.sync_connection
    if sync is None or sync.invalidated or sync.in_transaction() != in_transaction:
        return None
    fairy = sync._dbapi_connection
    driver = fairy.driver_connection if fairy is not None else None
    return driver if isinstance(driver, psycopg.AsyncConnection) else None


async def _run(conn: AsyncConnection, driver: psycopg.AsyncConnection[Any], prepared: Prepared) -> Rows:
    sql, parameters, many = prepared.sql, prepared.parameters, prepared.many
    sync = conn.sync_connection
    assert sync is not None  # _driver found it  # noqa: S101
    cursor = driver.cursor()
    events = sync._has_events or sync.engine._has_events
    if events:
        sync.dispatch.before_cursor_execute(sync, cursor, sql, parameters, None, many)
    try:
        if many:
            await cursor.executemany(sql, parameters)
        else:
            await cursor.execute(sql, parameters)
        rows = await cursor.fetchall() if prepared.metadata is not None else []
        rowcount = cursor.rowcount
    except psycopg.Error as error:
        lost = driver.closed or driver.broken  # the dialect's is_disconnect, for psycopg
        if lost:
            with suppress(Exception):
                await conn.invalidate(error)
        raise DBAPIError.instance(
            sql, parameters, error, psycopg.Error, connection_invalidated=lost, dialect=conn.dialect
        ) from error
    except BaseException as error:
        if not isinstance(error, Exception):  # cancelled mid-statement: the connection's state is
            with suppress(Exception):  # unknown, so it is invalidated, as SQLAlchemy does
                await conn.invalidate(error)
        raise
    finally:
        with suppress(Exception):
            await cursor.close()
    if events:
        sync.dispatch.after_cursor_execute(sync, cursor, sql, parameters, None, many)
    return Rows(prepared.metadata, [] if prepared.hidden else rows, rowcount)


async def read_between_transactions(conn: AsyncConnection, sql: str) -> Any:
    """The first value of ``sql``, run on psycopg in autocommit between two transactions.

    After a COMMIT, ``conn.execute`` would autobegin: psycopg sends BEGIN, then the statement, and
    the pool's reset sends ROLLBACK when the connection goes back, on which psycopg forgets every
    statement it had prepared. Here the statement goes alone and the connection stays idle.
    """
    driver, sync = _driver(conn, in_transaction=False), conn.sync_connection
    if driver is None or sync is None:
        return (await conn.execute(text(sql))).scalar_one()
    await driver.set_autocommit(True)
    try:
        cursor = driver.cursor()
        events = sync._has_events or sync.engine._has_events
        if events:
            sync.dispatch.before_cursor_execute(sync, cursor, sql, (), None, False)
        await cursor.execute(sql)
        row = await cursor.fetchone()
        if events:
            sync.dispatch.after_cursor_execute(sync, cursor, sql, (), None, False)
        await cursor.close()
    finally:
        await driver.set_autocommit(False)
    if row is None:
        raise RuntimeError(f"no row from {sql!r}")
    return row[0]

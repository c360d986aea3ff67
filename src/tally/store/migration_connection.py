"""The connection a migration runs on: its own, with bounded lock waits, retried (ADR 0031).

On PostgreSQL every transaction of it starts with ``SET LOCAL lock_timeout``. DDL waiting for a
lock on a table queues every later query of that table behind it, so a migration that cannot
have its lock soon gives up, and is tried again a little later (``LOCK_TRIES`` times, with
jittered backoff) rather than stall the service meanwhile. Every revision runs in a transaction of
its own, so a retry resumes at the revision that gave up. One migrating session at a time holds
the database's migration lock (a session advisory lock).

On SQLite the wait is the busy timeout, and the retry the same.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tally.store.pg_errors import sqlstate

DEFAULT_LOCK_TIMEOUT_MS = 2000
LOCK_TRIES = 10
_FIRST_PAUSE, _LONGEST_PAUSE = 0.1, 5.0  # seconds between tries, doubling, jittered
_MIGRATION_LOCK = 0x7461_6C6C_7901  # held by the one migrating session, for its whole run
_TRY_MIGRATION_LOCK = text("SELECT pg_try_advisory_lock(:key)")
_log = logging.getLogger("tally.migrations")

T = TypeVar("T")


class MigrationBlocked(RuntimeError):
    """A migration could not take its locks, or another one is running; the message says what to do."""


async def retrying_lock_waits(attempt: Callable[[], Awaitable[None]], lock_timeout_ms: int) -> None:
    for tries in range(1, LOCK_TRIES + 1):
        try:
            await attempt()
        except DBAPIError as error:
            if not _lock_wait_ended(error):
                raise
            statement = " ".join(str(error.statement or "").split())[:200]
            if tries == LOCK_TRIES:
                raise MigrationBlocked(
                    f"A migration waited {LOCK_TRIES} times for a lock, {lock_timeout_ms} ms each, "
                    f"and gave up on: {statement}. Another session holds a conflicting lock on that "
                    "table (a long transaction?): look for it in pg_locks and pg_stat_activity, "
                    "then run the command again. Every revision before it is applied."
                ) from error
            pause = min(_FIRST_PAUSE * 2 ** (tries - 1), _LONGEST_PAUSE) * random.uniform(0.5, 1.0)  # noqa: S311
            _log.warning(
                "migration lock wait timed out (try %d of %d), retrying in %.2f s: %s",
                tries,
                LOCK_TRIES,
                pause,
                statement,
            )
            await asyncio.sleep(pause)
        else:
            return


def _lock_wait_ended(error: DBAPIError) -> bool:
    """PostgreSQL's ``lock_timeout`` (55P03) or a deadlock it broke by rolling the migration back
    (40P01: a revision that takes a weaker lock on a table before a stronger one can meet a
    transaction doing the reverse), or SQLite's busy timeout. Either way nothing of that revision
    is applied, and trying it again is safe."""
    if sqlstate(error) in {"55P03", "40P01"}:
        return True
    return isinstance(error, OperationalError) and "database is locked" in str(error.orig)


async def on_migration_connection(
    url: str | URL,
    work: Callable[[Connection], T],
    *,
    lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS,
    exclusive: bool = True,
) -> T:
    """Run ``work`` on a connection of its own, outside any transaction, with bounded lock waits.

    PostgreSQL: through psycopg's asyncio driver (``run_sync``), holding the migration lock when
    ``exclusive``. SQLite: in a worker thread, so a long migration does not hold the event loop
    (the adapter's statements-on-the-loop reasoning is for microsecond statements; aiosqlite is
    not a dependency either).
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return await asyncio.to_thread(_on_sqlite, parsed, work, lock_timeout_ms, exclusive)
    engine = create_async_engine(
        parsed.set(drivername="postgresql+psycopg"),
        poolclass=NullPool,
        connect_args={"connect_timeout": 10, "application_name": "tally-migrations"},
    )
    try:
        async with engine.connect() as conn:
            _bound_waits(conn.sync_connection, lock_timeout_ms)
            if exclusive:
                taken = (await conn.execute(_TRY_MIGRATION_LOCK, {"key": _MIGRATION_LOCK})).scalar()
                await conn.commit()  # a session lock: it outlives this transaction
                if not taken:
                    raise MigrationBlocked(
                        "Another `tally db` command is migrating this database right now; "
                        "run this one again once it is done."
                    )
            return await conn.run_sync(work)
    finally:
        await engine.dispose()


def _bound_waits(conn: Connection | None, lock_timeout_ms: int) -> None:
    """Open every transaction of ``conn`` with its lock timeout and no statement timeout.

    ``SET LOCAL`` lasts one transaction: nothing leaks past the migration. In an autocommit block
    (``CREATE INDEX CONCURRENTLY``) there is no transaction to scope it to, so it is set for the
    session, which is this migration's alone and closed at its end.
    """
    assert conn is not None  # noqa: S101 - an open AsyncConnection always has its sync side
    ms = int(lock_timeout_ms)

    @event.listens_for(conn, "begin")
    def on_begin(begun: Connection) -> None:
        autocommit = begun.get_execution_options().get("isolation_level") == "AUTOCOMMIT"
        scope = "SESSION" if autocommit else "LOCAL"
        begun.exec_driver_sql(f"SET {scope} lock_timeout = {ms}")
        # A migration may rewrite a large table: only lock waits are bounded, never the work.
        begun.exec_driver_sql(f"SET {scope} statement_timeout = 0")


def _on_sqlite(url: URL, work: Callable[[Connection], T], lock_timeout_ms: int, exclusive: bool) -> T:
    if exclusive and url.database not in (None, "", ":memory:"):
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)  # as the adapter's start does
    engine = create_engine(url.set(drivername="sqlite+pysqlite"), poolclass=NullPool)

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # BEGIN below, so DDL is transactional too
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")  # as the adapter: a file made here is the same
        cursor.execute(f"PRAGMA busy_timeout={int(lock_timeout_ms)}")
        # Foreign keys stay off: batch mode copies and drops tables others reference.
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(conn: Connection) -> None:
        # A migration takes the write lock first: a read lock upgraded later could deadlock.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if exclusive else "BEGIN")

    try:
        with engine.connect() as conn:
            return work(conn)
    finally:
        engine.dispose()

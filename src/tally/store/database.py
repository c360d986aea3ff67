"""The SQL database: engines, transactions and the unit of work over SQLAlchemy Core (async).

SQLite (the default, ADR 0003) runs in WAL mode with one writer connection: every write transaction
starts with ``BEGIN IMMEDIATE`` (so two writers never both read then both write), and the writer is
handed out by an in-process lock whose wait is bounded by the request's budget. Readers use their
own connections and see a consistent snapshot each. PostgreSQL uses the same code through
``postgresql+psycopg`` URLs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import event, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from tally.domain.errors import DeadlineExceeded
from tally.services.deadline import remaining
from tally.store import tables
from tally.store.codec import from_micros
from tally.store.repositories.accounts import SqlAccountRepository
from tally.store.repositories.entries import (
    SqlEntryRepository,
    SqlEventRepository,
    SqlIdempotencyRepository,
)
from tally.store.repositories.ledgers import (
    SqlApiKeyRepository,
    SqlInstanceRepository,
    SqlLedgerRepository,
)
from tally.store.repositories.transfers import SqlTransferRepository

Clock = Callable[[], int]  # microseconds since the Unix epoch


def wall_clock() -> int:
    return time.time_ns() // 1000


class SqlTransaction:
    """The unit of work of one database transaction (implements ``services.ports.Transaction``)."""

    def __init__(self, conn: AsyncConnection, now: Callable[[], int]) -> None:
        self._now = now
        self._at: datetime | None = None
        self._wrote = False
        self.last_event = 0
        self.ledgers = SqlLedgerRepository(conn, self)
        self.keys = SqlApiKeyRepository(conn, self)
        self.accounts = SqlAccountRepository(conn, self)
        self.transfers = SqlTransferRepository(conn, self)
        self.entries = SqlEntryRepository(conn, self)
        self.idempotency = SqlIdempotencyRepository(conn, self)
        self.events = SqlEventRepository(conn, self)
        self.instance = SqlInstanceRepository(conn, self)

    @property
    def wrote(self) -> bool:
        return self._wrote

    def mark_written(self) -> None:
        self._wrote = True

    def saw_event(self, position: int) -> None:
        self.last_event = max(self.last_event, position)

    async def now(self) -> datetime:
        if self._at is None:
            self._at = from_micros(self._now())
        return self._at


def _sqlite_pragmas(engine: AsyncEngine, *, begin: str, synchronous: str) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below issue BEGIN itself, instead of pysqlite's implicit one.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(conn: Any) -> None:
        conn.exec_driver_sql(begin)


class SqlDatabase:
    """Implements ``services.ports.Database``. Connects in ``start``, never at import."""

    def __init__(
        self,
        url: str,
        *,
        clock: Clock = wall_clock,
        read_pool_size: int = 4,
        synchronous: str = "FULL",
        lock_wait_seconds: float = 10.0,
    ) -> None:
        self.url = make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        self._clock = clock
        self._lock_wait = lock_wait_seconds
        self._write_lock = asyncio.Lock()
        self._last_write_micros = 0
        self._position = 0
        if self.is_sqlite:
            sqlite_url = self.url.set(drivername="sqlite+aiosqlite")
            self._writer = create_async_engine(sqlite_url, pool_size=1, max_overflow=0)
            self._reader = create_async_engine(sqlite_url, pool_size=read_pool_size, max_overflow=0)
            _sqlite_pragmas(self._writer, begin="BEGIN IMMEDIATE", synchronous=synchronous)
            _sqlite_pragmas(self._reader, begin="BEGIN", synchronous=synchronous)
        else:
            self._writer = create_async_engine(self.url, pool_size=8, pool_pre_ping=True)
            self._reader = self._writer

    async def start(self) -> None:
        """Create the schema where it is missing; existing data is kept."""
        async with self._writer.begin() as conn:
            await conn.run_sync(tables.metadata.create_all)
            last = (await conn.execute(select(func.max(tables.events.c.pk)))).scalar()
        self._position = last or 0

    async def stop(self) -> None:
        await self._writer.dispose()
        if self._reader is not self._writer:
            await self._reader.dispose()

    def position(self) -> str:
        return str(self._position)

    def _write_now(self) -> int:
        # Monotonic within the process: a later commit never carries an earlier time, so
        # ``as_of`` reads and orderings by time agree with commit order.
        micros = max(self._clock(), self._last_write_micros + 1)
        self._last_write_micros = micros
        return micros

    @asynccontextmanager
    async def write(self) -> AsyncIterator[SqlTransaction]:
        try:
            await asyncio.wait_for(self._write_lock.acquire(), remaining(self._lock_wait))
        except TimeoutError:
            raise DeadlineExceeded("The request's time budget ran out waiting to write.") from None
        try:
            async with self._writer.connect() as conn, conn.begin():
                tx = SqlTransaction(conn, self._write_now)
                yield tx
            # Committed: the outbox position is this write's consistency token (ADR 0011).
            self._position = max(self._position, tx.last_event)
        finally:
            self._write_lock.release()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[SqlTransaction]:
        async with self._reader.connect() as conn, conn.begin():
            yield SqlTransaction(conn, self._clock)

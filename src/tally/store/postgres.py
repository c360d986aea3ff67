"""PostgreSQL at scale (ADR 0003, 0020, 0021): a primary, streaming replicas, bounded pools.

- **Writes** run on the primary, ``READ COMMITTED``, with the rows they depend on locked
  ``FOR NO KEY UPDATE`` in ``pk`` order (``store.repositories``). Their time is the primary's
  ``clock_timestamp()``, read lazily, after the locks. After commit, ``pg_current_wal_lsn()`` is
  this write's consistency token.
- **Reads** run ``REPEATABLE READ READ ONLY`` (one snapshot). Where, depends on the request's
  intent (``services.consistency``): ``strong`` on the primary or 503; ``available`` on a replica
  that is caught up within ``max_lag`` (and has replayed the caller's token), else the primary,
  else, when the primary is down, any reachable replica: a stale answer, reported with the time
  the replica is known current as of.
- **Budgets** (ADR 0010): the wait for a pool slot and for a connection end with the request's
  budget; what is left of it becomes the transaction's ``statement_timeout`` through
  ``set_config(..., true)`` (transaction-local, never a session ``SET``); a write whose budget
  ran out before commit is rolled back.
- **The primary down**: a circuit breaker (``store.breaker``) makes writes fail fast with 503.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress

from sqlalchemy import BigInteger, Connection, Engine, bindparam, cast, extract, func, select, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from tally.domain.errors import DeadlineExceeded, Unavailable, ValidationFailed
from tally.services.consistency import Consistency, read_intent, reading_at, report_lagging
from tally.services.deadline import current_deadline, remaining
from tally.services.ports import CommitListener, EventsListener
from tally.store.balance_shape import BalanceShape, keep_looking
from tally.store.breaker import Breaker
from tally.store.database import SqlTransaction, telling
from tally.store.instrumentation import ConnectionObserver, Unobserved
from tally.store.migrations import SCHEMA_LOCK, ensure_schema
from tally.store.pg_errors import is_unreachable, translated
from tally.store.postgres_statements import PostgresConnection, read_between_transactions
from tally.store.replicas import ReplicaMonitor, ReplicaState, format_lsn, parse_lsn
from tally.store.statement_plans import StatementPlans
from tally.store.wakeups import Wakeups

# Core statements, so that they run on psycopg directly (ADR 0039): the transaction is begun by
# SQLAlchemy (psycopg sends BEGIN with the first statement), then every statement takes that path.
_CLOCK = cast(extract("epoch", func.clock_timestamp()) * 1000000, BigInteger)  # microseconds
_SET_TIMEOUT = func.set_config("statement_timeout", bindparam("ms"), True)  # for this transaction
_TIMEOUT = select(_SET_TIMEOUT)
_TIMEOUT_AND_NOW = select(_SET_TIMEOUT.label("timeout"), _CLOCK.label("now"))
_NOW = select(_CLOCK)
_LSN_SQL = "SELECT pg_current_wal_lsn()::text"
_LSN = text(_LSN_SQL)
_TOKEN_WAIT_STEP = 0.01  # seconds between looks at a replica that has not reached a token yet


def libpq_dsn(url: URL) -> str:
    """The URL as a libpq connection string (for connections outside SQLAlchemy)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class _Pool:
    """One server's connections: a bounded pool behind a semaphore the budget can give up on."""

    def __init__(self, url: URL, role: str, size: int, observer: ConnectionObserver) -> None:
        self.url = url
        self.role = role
        self.size = size
        self._observer = observer
        self._slots = asyncio.Semaphore(size)
        self.engine: AsyncEngine = create_async_engine(
            url,
            pool_size=size,
            max_overflow=0,
            pool_pre_ping=True,  # a connection the server dropped is replaced, not handed out
            connect_args={"connect_timeout": 2, "application_name": f"tally-{role}"},
        )
        self.plans = StatementPlans(self.engine.dialect)  # statements on psycopg (ADR 0039)

    @asynccontextmanager
    async def connection(self, default_wait: float) -> AsyncIterator[AsyncConnection]:
        asked = time.perf_counter()
        try:
            try:
                async with asyncio.timeout(remaining(default_wait)):  # not wait_for (bpo-42130)
                    await self._slots.acquire()
            except TimeoutError:
                raise DeadlineExceeded("The time budget ran out waiting for a connection.") from None
            try:
                async with asyncio.timeout(remaining(default_wait)):
                    with translated(self.role):
                        conn = await self.engine.connect()
            except TimeoutError:
                self._slots.release()
                raise DeadlineExceeded("The time budget ran out connecting to the database.") from None
            except BaseException:
                self._slots.release()
                raise
        finally:
            self._observer.waited(self.role, time.perf_counter() - asked)
        self._observer.holding(self.role, 1)
        try:
            yield conn
        finally:
            try:
                with suppress(Exception):
                    await conn.close()
            finally:
                self._observer.holding(self.role, -1)
                self._slots.release()


class PostgresDatabase:
    """Implements ``services.ports.Database`` on a PostgreSQL primary and its streaming replicas."""

    def __init__(
        self,
        url: str,
        *,
        replica_urls: tuple[str, ...] = (),
        pool_size: int = 10,
        replica_pool_size: int = 10,
        max_lag_seconds: float = 1.0,
        check_seconds: float = 0.2,
        lock_wait_seconds: float = 10.0,
        breaker: Breaker | None = None,
        observer: ConnectionObserver | None = None,
        schema_check_seconds: float = 1.0,
    ) -> None:
        self.url = make_url(url).set(drivername="postgresql+psycopg")
        # Where account balances live while their move ships; looked at again every few seconds.
        self.balance_shape = BalanceShape()
        self._schema_check = schema_check_seconds
        self._looking: asyncio.Task[None] | None = None
        self._observer: ConnectionObserver = observer or Unobserved()
        self._lock_wait = lock_wait_seconds
        self._max_lag = max_lag_seconds
        self._breaker = breaker or Breaker()
        self._primary = _Pool(self.url, "primary", pool_size, self._observer)
        self._replicas: list[tuple[_Pool, ReplicaState]] = []
        for index, replica_url in enumerate(replica_urls):
            parsed = make_url(replica_url).set(drivername="postgresql+psycopg")
            state = ReplicaState(name=f"replica-{index + 1}")
            self._replicas.append((_Pool(parsed, "replica", replica_pool_size, self._observer), state))
        self._turn = itertools.count()
        self._monitor = ReplicaMonitor(
            libpq_dsn(self.url),
            {libpq_dsn(pool.url): state for pool, state in self._replicas},
            interval=check_seconds,
            on_primary=self._heard_from_primary,
            observer=self._observer,
        )
        self._position = 0
        self._commit_listener: CommitListener | None = None
        self._events_listener: EventsListener | None = None
        self.wakeups = Wakeups()

    @property
    def engines(self) -> tuple[Engine, ...]:
        """The engines, for instrumentation (query timing, plan checks)."""
        return (self._primary.engine.sync_engine, *(pool.engine.sync_engine for pool, _ in self._replicas))

    @property
    def pool_sizes(self) -> dict[str, int]:
        return {"primary": self._primary.size, "replica": sum(pool.size for pool, _ in self._replicas)}

    def role_of(self, conn: Connection) -> str:
        return "primary" if conn.engine is self._primary.engine.sync_engine else "replica"

    @property
    def replicas(self) -> list[ReplicaState]:
        return [state for _, state in self._replicas]

    @property
    def primary_up(self) -> bool:
        return self._breaker.closed

    async def start(self) -> None:
        """Create the schema where it is missing (one process at a time); start watching replicas."""
        with translated("primary"):
            async with self._primary.engine.begin() as conn:
                await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})
                await conn.run_sync(ensure_schema)  # an empty database gets the schema; any other, a check
                self._position = parse_lsn((await conn.execute(_LSN)).scalar_one())
        with translated("primary"):
            await self._look_at_schema()
        self._looking = asyncio.create_task(
            keep_looking(self._look_at_schema, self._schema_check), name="tally-schema-check"
        )
        if self._replicas:
            await self._monitor.sample()
            self._monitor.start()
        self.wakeups.listen(libpq_dsn(self.url))

    async def _look_at_schema(self) -> None:
        # Outside the request semaphore and its metrics: one short catalog query a second, which a
        # request needing that connection waits for about a millisecond. Not while the breaker is
        # open: the schema changes only through migrations, and they need the primary.
        if not self._breaker.allows():
            return
        async with asyncio.timeout(2.0), self._primary.engine.connect() as conn:
            await self.balance_shape.look(conn)

    async def stop(self) -> None:
        if self._looking is not None:
            self._looking.cancel()
            with suppress(asyncio.CancelledError):
                await self._looking
        await self.wakeups.stop()
        await self._monitor.stop()
        for pool in (self._primary, *(pool for pool, _ in self._replicas)):
            await pool.engine.dispose()

    def position(self) -> str:
        return format_lsn(self._position)

    def read_covers(self) -> int | None:
        # A read may run on a replica behind anything this process knows of: no promise then.
        return None if self._replicas else self._position

    def listen_to_commits(self, listener: CommitListener, events: EventsListener | None = None) -> None:
        self._commit_listener = listener
        self._events_listener = events

    async def health(self) -> dict[str, str]:
        """``database``: ``ok``; ``degraded`` when only replicas answer (reads, no writes); ``down``.

        Each replica: ``ok`` when reachable and within the lag bound, else ``degraded`` (the primary
        serves its reads, so a replica alone never makes Tally unready).
        """
        checks = {"database": "ok" if await self._primary_answers() else "down"}
        if checks["database"] == "down" and any(state.reachable for state in self.replicas):
            checks["database"] = "degraded"
        for state in self.replicas:
            fresh = state.reachable and state.lag() <= self._max_lag
            checks[state.name] = "ok" if fresh else "degraded"
        return checks

    async def _primary_answers(self) -> bool:
        if not self._breaker.allows():
            return False
        try:
            async with asyncio.timeout(2.0), self._read_on(self._primary, None) as tx:
                await tx.instance.get("")
        except Exception:
            return False
        return True

    def _heard_from_primary(self, ok: bool, started: float) -> None:
        if ok:
            self._breaker.succeeded(started)
        elif self._breaker.allows():
            self._breaker.failed()

    def _unreachable(self) -> Unavailable:
        wait = self._breaker.retry_after()
        return Unavailable(f"The primary database is unreachable; retry in {wait} s. Nothing was applied.")

    @asynccontextmanager
    async def write(self) -> AsyncIterator[SqlTransaction]:
        if not self._breaker.allows():
            raise self._unreachable()
        # Everything this process knew committed before this write began: a commit after it that
        # changed the same rows carries a later LSN, so the cache may promise no more (ADR 0027).
        covers = self._position
        committed = None
        started = self._breaker.now()
        try:
            async with self._primary.connection(self._lock_wait) as conn, self._transaction(conn, "primary"):
                await conn.begin()
                statements = PostgresConnection(conn, self._primary.plans)
                await statements.execute(_TIMEOUT, {"ms": self._statement_timeout()})
                tx = SqlTransaction(statements, lambda: self._clock(statements), self.balance_shape)
                yield tx
                deadline = current_deadline()
                if deadline is not None and deadline.remaining() <= 0:
                    raise DeadlineExceeded("The time budget ran out before commit; nothing was applied.")
                with telling(self._events_listener, tx.event_pks), translated("primary"):
                    await conn.commit()
                committed = tx.committed(covers)
                if tx.queues:
                    self.wakeups.signal()
                if tx.wrote:
                    with suppress(Exception):  # committed; a lost token only costs read-your-writes
                        lsn = parse_lsn(await read_between_transactions(conn, _LSN_SQL))
                        self._position = max(self._position, lsn)
        except Unavailable as error:
            if is_unreachable(error.__cause__ or error):
                self._breaker.failed()
            raise
        self._breaker.succeeded(started)
        if committed is not None and self._commit_listener is not None:
            await self._commit_listener(committed)  # the connection is back in its pool by now

    @asynccontextmanager
    async def read(self) -> AsyncIterator[SqlTransaction]:
        intent = read_intent()
        token = self._parse_token(intent.token)
        may_lag = intent.level is not Consistency.STRONG and bool(self._replicas)
        async with AsyncExitStack() as stack:
            fresh_enough = intent.level is Consistency.AVAILABLE and self._replicas
            replica = self._fresh_replica(token) if fresh_enough else None
            if replica is None and may_lag and not self._breaker.allows():
                replica = await self._stale_replica(token)
            if replica is not None:
                tx = await stack.enter_async_context(self._read_on(*replica))
            elif not self._breaker.allows():
                raise self._unreachable()
            else:
                try:
                    tx = await stack.enter_async_context(self._read_on(self._primary, None))
                except Unavailable:
                    if not may_lag:
                        raise
                    # The primary just went away: a replica answers, stale and labelled so.
                    tx = await stack.enter_async_context(self._read_on(*await self._stale_replica(token)))
            yield tx

    @asynccontextmanager
    async def background_read(self) -> AsyncIterator[SqlTransaction]:
        """A strong read (the primary): a job checks the books as they are, not as a replica was."""
        with reading_at(Consistency.STRONG):
            async with self.read() as tx:
                yield tx

    def _fresh_replica(self, token: int | None) -> tuple[_Pool, ReplicaState] | None:
        usable = [
            (pool, state)
            for pool, state in self._replicas
            if state.reachable and state.lag() <= self._max_lag and (token is None or state.has(token))
        ]
        return usable[next(self._turn) % len(usable)] if usable else None

    async def _stale_replica(self, token: int | None) -> tuple[_Pool, ReplicaState]:
        """With the primary down: a reachable replica, waiting (within the budget) for the token."""
        while True:
            reachable = [(pool, state) for pool, state in self._replicas if state.reachable]
            ready = [(pool, state) for pool, state in reachable if token is None or state.has(token)]
            if ready:
                return ready[next(self._turn) % len(ready)]
            if not reachable and token is None:
                raise Unavailable("No database can answer: the primary and every replica are unreachable.")
            if remaining(self._lock_wait) <= _TOKEN_WAIT_STEP:
                raise Unavailable("No database that has this Tally-Consistency-Token's write can answer.")
            await asyncio.sleep(_TOKEN_WAIT_STEP)
            for _, state in self._replicas:
                await self._monitor.refresh(state)

    @asynccontextmanager
    async def _read_on(self, pool: _Pool, replica: ReplicaState | None) -> AsyncIterator[SqlTransaction]:
        try:
            async with pool.connection(self._lock_wait) as conn, self._transaction(conn, pool.role):
                await conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
                await conn.begin()
                statements = PostgresConnection(conn, pool.plans)
                row = (await statements.execute(_TIMEOUT_AND_NOW, {"ms": self._statement_timeout()})).one()
                now = int(row.now)

                async def fixed() -> int:
                    return now

                if replica is not None and replica.caught_up_at is not None:
                    report_lagging(replica.caught_up_at)
                yield SqlTransaction(statements, fixed, self.balance_shape)
                # Read only: COMMIT ends it like ROLLBACK would, but psycopg keeps its prepared
                # statements (it forgets them on every ROLLBACK). Nothing is lost if it fails.
                with suppress(Exception):
                    await conn.commit()
        except Unavailable as error:
            if replica is None and is_unreachable(error.__cause__ or error):
                self._breaker.failed()
            raise

    @asynccontextmanager
    async def _transaction(self, conn: AsyncConnection, role: str) -> AsyncIterator[None]:
        """Translate the server's failures; roll back whatever did not commit."""
        try:
            with translated(role):
                yield
        finally:
            if conn.in_transaction():
                with suppress(Exception):
                    await conn.rollback()

    async def _clock(self, conn: PostgresConnection) -> int:
        with translated("primary"):
            return int((await conn.execute(_NOW)).scalar_one())

    def _statement_timeout(self) -> str:
        return str(max(1, int(remaining(self._lock_wait) * 1000)))

    def _parse_token(self, token: str | None) -> int | None:
        return None if token is None else self.token_key(token)

    def token_key(self, token: str) -> int:
        try:
            return parse_lsn(token)
        except ValueError:
            raise ValidationFailed.at(
                ("header", "Tally-Consistency-Token"), "Not a consistency token returned by this Tally."
            ) from None

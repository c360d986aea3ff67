"""SQLite, the embedded default (ADR 0003): WAL, one writer connection, statements on the loop.

SQLite answers a statement in microseconds; a thread hop per statement (aiosqlite) costs more than
the statement itself (measured: 0.39 ms per statement through SQLAlchemy + aiosqlite against
0.03 ms for the statement). So statements run synchronously on the event loop thread, and only the
waits are asynchronous:

- the write lock: an in-process ``asyncio.Lock`` (one writer connection), then ``BEGIN IMMEDIATE``
  with ``busy_timeout=0``, retried with a growing asynchronous sleep while another process holds
  the database's write lock, never past the request's budget;
- a reader: a small pool of read connections handed out through an ``asyncio.Queue``;
- the budget: a write's statement is not started past the request's deadline, and a progress
  handler interrupts a statement that runs past it (``DeadlineExceeded``, nothing applied);
- the COMMIT: it runs in a worker thread (sqlite3 releases the GIL), because its fsync waits on the
  disk, and a busy disk can take seconds: on the loop that froze every request of the process, even
  those the cache answers. Once started, a commit is seen through even if the awaiting task is
  cancelled, so nothing touches the connection while the thread has it;
- a background read (a batch job's step, ADR 0044) runs its statements in a worker thread
  (``store.sqlite_threads``): a sum over every entry would hold the loop for as long as it runs;
- group commit (ADR 0035, ``store.commit_groups``): writers queued for the writer lock run in
  savepoints of one transaction and share its COMMIT;
- between processes sharing the file (``tally serve --workers N``, ``tally worker``), each group
  first takes the process's write turn (``store.writer_turn``, ADR 0040), so a process waiting to
  write wakes when the other's group ends instead of polling for SQLite's lock.

Both waits are reported to a ``ConnectionObserver`` (``store.instrumentation``), and so is each
connection while a transaction holds it: the writer lock wait and the reader pool are where a
SQLite Tally queues under load.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Dialect, Engine, Executable, Result, create_engine, event, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from tally.domain.errors import DeadlineExceeded, Unavailable, ValidationFailed
from tally.services.consistency import read_intent
from tally.services.deadline import current_deadline, remaining
from tally.services.ports import CommitListener, EventsListener
from tally.store import tables
from tally.store.balance_shape import BalanceShape, keep_looking
from tally.store.commit_groups import CommitGroup
from tally.store.database import SqlTransaction, telling
from tally.store.instrumentation import ConnectionObserver, Unobserved
from tally.store.migrations import ensure_schema
from tally.store.repositories.base import SqlConnection
from tally.store.sqlite_checkpoints import Checkpointer
from tally.store.sqlite_statements import SqliteStatements, driver_of, plain, run
from tally.store.sqlite_threads import ThreadedSqliteConnection, see_through
from tally.store.wakeups import Wakeups
from tally.store.writer_turn import WriterTurn

Clock = Callable[[], int]  # microseconds since the Unix epoch
_PROGRESS_STEPS = 1000  # SQLite VM instructions between two deadline checks
_LAST_EVENT = plain("SELECT pk, created_at FROM events WHERE pk = (SELECT max(pk) FROM events)", ("pk", "at"))
_BEGIN_WRITE = plain("BEGIN IMMEDIATE")
_BEGIN_READ = plain("BEGIN")
_LAST_EVENT_PK = "SELECT max(pk) FROM events"


def wall_clock() -> int:
    return time.time_ns() // 1000


class SqliteConnection:
    """A SQLAlchemy ``Connection`` behind the awaitable shape the repositories use.

    With a deadline (``at``, on the monotonic clock), a statement is not started once it has
    passed: ``DeadlineExceeded``, and the request's savepoint alone rolls back. Interrupting a
    write statement under way instead would end SQLite's whole transaction, and with it the
    other requests of the commit group; the progress handler stays for a statement that runs on
    past the deadline.
    """

    __slots__ = ("_at", "_statements", "_sync")

    def __init__(self, sync: Connection, statements: SqliteStatements, at: float | None = None) -> None:
        self._sync = sync
        self._statements = statements
        self._at = at

    @property
    def dialect(self) -> Dialect:
        return self._sync.dialect

    async def execute(self, statement: Executable, parameters: Any = None) -> Result[Any]:
        if self._at is not None and time.monotonic() > self._at:
            raise DeadlineExceeded("The time budget ran out; nothing was applied.")
        # Repositories consume each result before the next statement, so no buffering is needed.
        return self._statements.execute(self._sync, statement, parameters)


def _is_busy(error: OperationalError) -> bool:
    return "locked" in str(error.orig) or "busy" in str(error.orig)


def _is_interrupt(error: OperationalError) -> bool:
    return "interrupted" in str(error.orig)


class SqliteDatabase:
    """Implements ``services.ports.Database`` on one SQLite file. Connects in ``start``."""

    def __init__(
        self,
        url: str,
        *,
        clock: Clock = wall_clock,
        read_pool_size: int = 4,
        synchronous: str = "FULL",
        lock_wait_seconds: float = 10.0,
        observer: ConnectionObserver | None = None,
        schema_check_seconds: float = 1.0,
        group_limit: int = 64,
        checkpoint_seconds: float = 0.02,
    ) -> None:
        self.url = make_url(url).set(drivername="sqlite+pysqlite")
        self._on_file = self.url.database not in (None, "", ":memory:")
        # WAL checkpoints in a thread of their own, not inside a COMMIT (ADR 0046); 0: SQLite's own.
        self._checkpoints = (
            Checkpointer(str(self.url.database), checkpoint_seconds)
            if self._on_file and checkpoint_seconds > 0
            else None
        )
        # Where account balances live while their move ships; looked at again every few seconds.
        self.balance_shape = BalanceShape()
        self._schema_check = schema_check_seconds
        self._looking: asyncio.Task[None] | None = None
        self._clock = clock
        self._read_pool_size = read_pool_size
        self._lock_wait = lock_wait_seconds
        self._observer: ConnectionObserver = observer or Unobserved()
        self._engine = self._create_engine(synchronous)  # connects nothing yet
        self._statements = SqliteStatements(self._engine.dialect)
        self._writer: Connection | None = None
        self._turn: WriterTurn | None = None  # in start(), for a file (not ``:memory:``)
        self._readers: asyncio.Queue[Connection] = asyncio.Queue()
        self._write_lock = asyncio.Lock()
        self._queued = 0  # writers waiting for the lock: the open group commits when none is left
        self._group: CommitGroup | None = None  # the open transaction, while one is
        self._group_limit = group_limit
        self._committers: set[asyncio.Task[None]] = set()
        self._last_write_micros = 0
        self._position = 0
        self._commit_listener: CommitListener | None = None
        self._events_listener: EventsListener | None = None
        self.wakeups = Wakeups()  # other processes on the file are found by polling

    @property
    def engines(self) -> tuple[Engine, ...]:
        """The engine, for instrumentation (query timing, plan checks)."""
        return (self._engine,)

    @property
    def pool_sizes(self) -> dict[str, int]:
        """How many connections each role has once started: one writer, ``read_pool_size`` readers."""
        return {"writer": 1, "reader": self._read_pool_size}

    def role_of(self, conn: Connection) -> str:
        """``writer`` or ``reader``: the role of a connection of ``engines``, for statement timing."""
        return "writer" if conn is self._writer else "reader"

    def _create_engine(self, synchronous: str) -> Engine:
        # The writer's COMMIT runs in a worker thread (see write()); one transaction at a time uses it.
        engine = create_engine(self.url, poolclass=NullPool, connect_args={"check_same_thread": False})

        @event.listens_for(engine, "connect")
        def on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Let the "begin" event below issue BEGIN itself, not pysqlite's implicit one.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=0")  # waits are asynchronous (see write())
            if self._checkpoints is not None:
                cursor.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer's thread does it
            cursor.close()

        @event.listens_for(engine, "begin")
        def on_begin(conn: Connection) -> None:
            run(conn, _BEGIN_WRITE if conn is self._writer else _BEGIN_READ)

        return engine

    async def start(self) -> None:
        """Open the connections and create the schema where it is missing; data is kept."""
        if self._on_file:
            Path(str(self.url.database)).parent.mkdir(parents=True, exist_ok=True)
            self._turn = WriterTurn(Path(f"{self.url.database}-turn"))
        engine = self._engine
        writer = self._writer = engine.connect()
        # Other processes on the file (workers, `tally worker`) may hold its write lock right now:
        # wait for it like any write does, rather than fail the start.
        await self._begin(writer, time.monotonic() + self._lock_wait)
        try:
            ensure_schema(writer)  # an empty file gets the schema; any other, a check
            last = writer.execute(select(func.max(tables.events.c.pk))).scalar()
            writer.commit()
        except BaseException:
            writer.rollback()
            raise
        self._position = last or 0
        for _ in range(self._read_pool_size):
            self._readers.put_nowait(engine.connect())
        await self._look_at_schema()
        self._looking = asyncio.create_task(
            keep_looking(self._look_at_schema, self._schema_check), name="tally-schema-check"
        )
        if self._checkpoints is not None:
            self._checkpoints.start()

    async def _look_at_schema(self) -> None:
        conn = await self._readers.get()
        try:
            await self.balance_shape.look(SqliteConnection(conn, self._statements))
        finally:
            conn.rollback()
            self._readers.put_nowait(conn)

    async def stop(self) -> None:
        while self._committers:  # the last writes' groups: let them commit
            await asyncio.gather(*self._committers, return_exceptions=True)
        if self._looking is not None:
            self._looking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._looking
        if self._checkpoints is not None:
            await asyncio.to_thread(self._checkpoints.stop)
        while not self._readers.empty():
            self._readers.get_nowait().close()
        if self._writer is not None:
            self._writer.close()
        if self._turn is not None:
            self._turn.close()
        self._engine.dispose()

    def position(self) -> str:
        return str(self._position)

    @property
    def primary_up(self) -> bool:
        return True  # the file is the primary: a failure to reach it is an error of each call

    def token_key(self, token: str) -> int:
        if not (token.isascii() and token.isdigit()):
            raise ValidationFailed.at(
                ("header", "Tally-Consistency-Token"), "Not a consistency token returned by this Tally."
            )
        return int(token)

    def read_covers(self) -> int | None:
        # Every position this process knows of is committed in the file, so in any later snapshot.
        return self._position

    def listen_to_commits(self, listener: CommitListener, events: EventsListener | None = None) -> None:
        self._commit_listener = listener
        self._events_listener = events

    def _catch_up(self, conn: Connection) -> None:
        """Learn the newest commit of any process sharing the file (workers do), under the lock."""
        last = run(conn, _LAST_EVENT).first()
        if last is not None:
            self._position = max(self._position, last.pk)
            self._last_write_micros = max(self._last_write_micros, last.at)

    async def _write_now(self) -> int:
        # Monotonic across every process writing the file: a later commit never carries an
        # earlier time, so ``as_of`` reads and orderings by time agree with commit order.
        micros = max(self._clock(), self._last_write_micros + 1)
        self._last_write_micros = micros
        return micros

    async def _read_now(self) -> int:
        # Never behind a commit this process made (write times may run ahead of the clock).
        return max(self._clock(), self._last_write_micros)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[SqlTransaction]:
        """One write transaction: a savepoint of the open commit group (``store.commit_groups``)."""
        asked = time.perf_counter()
        await self._take_writer(asked)
        self._observer.holding("writer", 1)
        group: CommitGroup | None = None
        conn = self._writer
        try:
            if conn is None:
                raise RuntimeError("start() has not run")
            try:
                group = self._group or await self._open_group(conn)
            finally:
                # The wait to write is both locks: this process's writer, then the file's.
                self._observer.waited("writer", time.perf_counter() - asked)
            with self._member(conn, group) as tx:
                yield tx
        finally:
            try:
                if conn is not None and group is not None and self._group is group:
                    if self._last_of(group):
                        await self._finish(conn, group)
                    else:  # the writers queued behind this one join it; one of them commits it
                        self._commit_later(conn, group)
            finally:
                self._observer.holding("writer", -1)
                self._write_lock.release()
        await group.committed()
        # Committed: the outbox position is this write's consistency token (ADR 0011). Under the
        # file's write lock nothing committed after the group: the position covers it exactly.
        committed = tx.committed(self._position)
        if committed is not None and self._commit_listener is not None:
            await self._commit_listener(committed)  # after the lock: cache calls never hold writers

    async def _take_writer(self, asked: float) -> None:
        """This process's writer lock, within the request's budget; counted as queued meanwhile."""
        self._queued += 1
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a cancellation that
            # arrives as the lock is taken (bpo-42130), and a worker's shutdown would go unheard.
            async with asyncio.timeout(remaining(self._lock_wait)):
                await self._write_lock.acquire()
        except TimeoutError:
            self._observer.waited("writer", time.perf_counter() - asked)
            raise DeadlineExceeded("The time budget ran out waiting to write.") from None
        finally:
            self._queued -= 1

    @contextmanager
    def _member(self, conn: Connection, group: CommitGroup) -> Iterator[SqlTransaction]:
        """One writer's savepoint in ``group``: released into it, or rolled back alone."""
        deadline = current_deadline()
        at = None if deadline is None else deadline.at
        tx = SqlTransaction(SqliteConnection(conn, self._statements, at), self._write_now, self.balance_shape)
        driver = driver_of(conn)
        driver.execute("SAVEPOINT tally_write")
        try:
            with _interrupt_at_deadline(conn):
                yield tx
            driver.execute("RELEASE tally_write")
        except BaseException as error:
            if driver.in_transaction:
                driver.execute("ROLLBACK TO tally_write")
                driver.execute("RELEASE tally_write")
            else:  # SQLite ended the whole transaction: the members before this one are gone too
                group.broke(error)
            raise
        group.joined(tx.event_pks, bool(tx.queues))

    async def _open_group(self, conn: Connection) -> CommitGroup:
        """BEGIN IMMEDIATE a new transaction for this writer and those queued behind it, in this
        process's write turn (held until ``_finish``)."""
        if self._turn is not None:
            await self._turn.take(remaining(self._lock_wait))
        try:
            await self._begin(conn, time.monotonic() + remaining(self._lock_wait))
        except BaseException:
            self._give_turn()
            raise
        try:
            self._catch_up(conn)
        except BaseException:
            conn.rollback()
            self._give_turn()
            raise
        group = self._group = CommitGroup()
        return group

    def _last_of(self, group: CommitGroup) -> bool:
        """Whether ``group`` commits now: nobody queued to join it, or it is full, or it broke."""
        return self._queued == 0 or group.members >= self._group_limit or group.failure is not None

    def _commit_later(self, conn: Connection, group: CommitGroup) -> None:
        """Make sure ``group`` commits even if every writer queued for it gives up waiting."""
        if group.followed:
            return
        group.followed = True
        committer = asyncio.create_task(self._commit_when_last(conn, group), name="tally-sqlite-commit")
        self._committers.add(committer)
        committer.add_done_callback(self._committers.discard)

    async def _commit_when_last(self, conn: Connection, group: CommitGroup) -> None:
        """Queued for the writer like a writer: usually a later member has committed the group by
        the time this gets the lock, and it only leaves; otherwise it commits it."""
        while True:
            await self._write_lock.acquire()
            if self._group is not group:
                self._write_lock.release()
                return
            if self._last_of(group):
                break
            self._write_lock.release()  # back of the queue: the writers waiting join first
        self._observer.holding("writer", 1)
        try:
            await self._finish(conn, group)
        finally:
            self._observer.holding("writer", -1)
            self._write_lock.release()

    async def _finish(self, conn: Connection, group: CommitGroup) -> None:
        """COMMIT ``group`` (or roll it back if it broke), under the writer lock; tell its members.

        A cancellation of the task committing is raised once the group is settled.
        """
        failure: BaseException | None = None
        cancelled = False
        try:
            if group.failure is None and group.members > 0:
                try:
                    # Told before the lock is given back and a failed COMMIT's pks can be used again.
                    with telling(self._events_listener, group.events):
                        cancelled = await _commit_off_loop(conn)
                except Exception as error:
                    failure = error
            if failure is not None or group.failure is not None or group.members == 0:
                with suppress(Exception):
                    conn.rollback()
            else:
                self._position = max(self._position, group.last_event)
                if group.queues:
                    self.wakeups.signal()
                self._observer.committed_group(group.members)
        finally:
            self._group = None
            self._give_turn()
            group.settle(failure)
        if cancelled:
            raise asyncio.CancelledError

    def _give_turn(self) -> None:
        if self._turn is not None:
            self._turn.give()

    async def health(self) -> dict[str, str]:
        """``database``: ``ok`` when a read transaction can run, else ``down``."""
        try:
            async with self.read() as tx:
                await tx.instance.get("")
        except Exception:
            return {"database": "down"}
        return {"database": "ok"}

    @asynccontextmanager
    async def read(self) -> AsyncIterator[SqlTransaction]:
        async with self._reading(SqliteConnection) as tx:
            yield tx

    @asynccontextmanager
    async def background_read(self) -> AsyncIterator[SqlTransaction]:
        """A read whose statements run in a worker thread (``store.sqlite_threads``, ADR 0044)."""
        async with self._reading(ThreadedSqliteConnection) as tx:
            yield tx

    @asynccontextmanager
    async def _reading(
        self, wrap: Callable[[Connection, SqliteStatements], SqlConnection]
    ) -> AsyncIterator[SqlTransaction]:
        """A read transaction on a reader of the pool, its statements run through ``wrap``."""
        asked = time.perf_counter()
        try:
            async with asyncio.timeout(remaining(self._lock_wait)):
                conn = await self._readers.get()
        except TimeoutError:
            self._observer.waited("reader", time.perf_counter() - asked)
            raise DeadlineExceeded("The time budget ran out waiting for a connection.") from None
        self._observer.holding("reader", 1)
        try:
            try:
                await self._begin(conn, time.monotonic() + remaining(self._lock_wait))
            finally:
                self._observer.waited("reader", time.perf_counter() - asked)
            try:
                self._catch_up_to(conn, read_intent().token)
                with _interrupt_at_deadline(conn):
                    yield SqlTransaction(wrap(conn, self._statements), self._read_now, self.balance_shape)
            finally:
                conn.rollback()
        finally:
            self._observer.holding("reader", -1)
            self._readers.put_nowait(conn)

    def _catch_up_to(self, conn: Connection, token: str | None) -> None:
        """Every process shares the one file, so a token is honoured once the file holds its event.

        A token past the newest event in this read's snapshot can only be another database's:
        503, as API.md says of a token a read cannot honour.
        """
        if token is None:
            return
        wanted = self.token_key(token)
        if wanted > self._position:
            self._position = max(self._position, conn.exec_driver_sql(_LAST_EVENT_PK).scalar() or 0)
        if wanted > self._position:
            raise Unavailable("This database has not seen the write of this Tally-Consistency-Token.")

    async def _begin(self, conn: Connection, give_up_at: float) -> None:
        """BEGIN, waiting asynchronously while another process holds the write lock."""
        pause = 0.001
        while True:
            try:
                conn.begin()
            except OperationalError as error:
                if not _is_busy(error):
                    raise
                with suppress(Exception):
                    conn.rollback()
            else:
                return
            if time.monotonic() + pause > give_up_at:
                raise DeadlineExceeded("The time budget ran out waiting for the database lock.")
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.05)


async def _commit_off_loop(conn: Connection) -> bool:
    """COMMIT in a worker thread; return whether the awaiting task was cancelled meanwhile.

    A cancellation does not stop a commit under way (``store.sqlite_threads.see_through``): the
    caller raises it once the commit's outcome is known and kept. The commit's own error is raised.
    """
    _, cancelled = await see_through(conn.commit)
    return cancelled


class _interrupt_at_deadline:  # noqa: N801 - used as a context manager, reads like one
    """Abort any statement that runs past the current request's deadline."""

    def __init__(self, conn: Connection) -> None:
        self._dbapi: Any = conn.connection.dbapi_connection
        self._deadline = current_deadline()

    def __enter__(self) -> None:
        deadline = self._deadline
        if deadline is not None:
            at = deadline.at
            self._dbapi.set_progress_handler(lambda: int(time.monotonic() > at), _PROGRESS_STEPS)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _: Any) -> None:
        if self._deadline is not None:
            self._dbapi.set_progress_handler(None, _PROGRESS_STEPS)
        # SQLAlchemy wraps the driver's "interrupted" error in its own OperationalError.
        if isinstance(error, OperationalError) and _is_interrupt(error):
            raise DeadlineExceeded("The time budget ran out; nothing was applied.") from error

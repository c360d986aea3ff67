"""The SQLite adapter on a real file: deadlines interrupt statements, nothing half-applies, and the
slow work (a COMMIT, a background read's statements) leaves the event loop free."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import OperationalError

from tally.domain.errors import DeadlineExceeded
from tally.domain.keys import Ledger
from tally.services.deadline import Deadline, set_deadline
from tally.services.ports import NewEvent
from tally.store.sqlite import SqliteDatabase
from tally.store.sqlite_statements import driver_of
from tests.support import running_sqlite

# Counts for ever: only an interrupt ends it.
ENDLESS = text("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT max(x) FROM c")
STARTED_THEN_ENDLESS = text(  # the same, once it has called ``started()``
    "WITH RECURSIVE c(x) AS (SELECT started() UNION ALL SELECT x + 1 FROM c) SELECT max(x) FROM c"
)


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[SqliteDatabase]:
    async with running_sqlite(tmp_path / "store.db") as db:
        yield db


async def _read_forever(database: SqliteDatabase) -> None:
    async with database.read() as tx:
        await tx.connection.execute(ENDLESS)


async def test_a_statement_past_the_deadline_is_interrupted(database: SqliteDatabase) -> None:
    set_deadline(Deadline.after(0.05))
    with pytest.raises(DeadlineExceeded):
        await _read_forever(database)


async def _write_a_ledger_then_run_forever(database: SqliteDatabase) -> None:
    async with database.write() as tx:
        await tx.ledgers.add(Ledger("led_half", "half", datetime.now(UTC)))
        await tx.connection.execute(ENDLESS)


async def test_an_interrupted_write_applies_nothing(database: SqliteDatabase) -> None:
    set_deadline(Deadline.after(0.05))
    with pytest.raises(DeadlineExceeded):
        await _write_a_ledger_then_run_forever(database)
    set_deadline(None)
    async with database.read() as tx:
        assert await tx.ledgers.get("led_half") is None
    # The writer connection is usable again.
    async with database.write() as tx:
        await tx.ledgers.add(Ledger("led_whole", "whole", datetime.now(UTC)))
    async with database.read() as tx:
        assert await tx.ledgers.get("led_whole") is not None


async def test_write_times_never_go_backwards_even_when_the_clock_does(tmp_path: Path) -> None:
    readings = iter([5_000_000, 4_000_000, 4_000_000, 3_000_000])
    db = SqliteDatabase(f"sqlite:///{tmp_path / 'clock.db'}", clock=lambda: next(readings))
    await db.start()
    try:
        times = []
        for _ in range(3):
            async with db.write() as tx:
                times.append(await tx.now())
        assert times == sorted(times)
        assert len(set(times)) == 3
    finally:
        await db.stop()


SLOW_DISK_SECONDS = 0.3


def slow_disk(database: SqliteDatabase, committing: threading.Event) -> None:
    """Each COMMIT waits ``SLOW_DISK_SECONDS`` first, as an fsync on a busy disk does."""
    dialect = database.engines[0].dialect
    commit = dialect.do_commit

    def do_commit(dbapi_connection: Any) -> None:
        committing.set()
        time.sleep(SLOW_DISK_SECONDS)
        commit(dbapi_connection)

    dialect.do_commit = do_commit  # type: ignore[method-assign]


async def _write_ledger(database: SqliteDatabase, ledger_id: str) -> None:
    async with database.write() as tx:
        await tx.ledgers.add(Ledger(ledger_id, ledger_id, datetime.now(UTC)))


async def test_a_slow_commit_leaves_the_loop_free_for_other_requests(database: SqliteDatabase) -> None:
    committing = threading.Event()
    slow_disk(database, committing)
    writing = asyncio.create_task(_write_ledger(database, "led_slow"))
    assert await asyncio.to_thread(committing.wait, 10)
    # The commit waits on the disk in its thread; meanwhile this loop still answers reads.
    reads = 0
    while not writing.done():
        async with database.read() as tx:
            await tx.ledgers.get("led_slow")
        reads += 1
        await asyncio.sleep(0.005)
    await writing
    assert reads > 1  # on the loop, the commit would have held every other coroutine back
    async with database.read() as tx:
        assert await tx.ledgers.get("led_slow") is not None


async def test_a_write_cancelled_while_committing_is_committed_and_the_writer_stays_usable(
    database: SqliteDatabase,
) -> None:
    committing = threading.Event()
    slow_disk(database, committing)
    writing = asyncio.create_task(_write_ledger(database, "led_cancelled"))
    assert await asyncio.to_thread(committing.wait, 10)
    writing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writing
    # The commit was under way: it is seen through, not rolled back half-way, and the writer
    # goes on (the next write queues behind that commit).
    await _write_ledger(database, "led_after")
    async with database.read() as tx:
        assert await tx.ledgers.get("led_cancelled") is not None
        assert await tx.ledgers.get("led_after") is not None


def _on_readers(database: SqliteDatabase, name: str, function: Any) -> None:
    """Give every reader of the pool a SQL function ``name()`` that calls ``function``."""
    for _ in range(database.pool_sizes["reader"]):
        conn = database._readers.get_nowait()
        driver_of(conn).create_function(name, 0, function)
        database._readers.put_nowait(conn)


async def test_a_background_read_runs_its_statements_off_the_loop(database: SqliteDatabase) -> None:
    looped = threading.Event()
    # The statement answers 1 only if the loop ran while it was under way (it waits up to 10 s).
    _on_readers(database, "loop_ran", lambda: int(looped.wait(10)))

    async def read() -> Any:
        async with database.background_read() as tx:
            return (await tx.connection.execute(text("SELECT loop_ran()"))).scalar()

    reading = asyncio.create_task(read())
    await asyncio.sleep(0)  # the read starts its statement
    while not reading.done():
        looped.set()
        await asyncio.sleep(0.001)
    assert await reading == 1


async def test_a_cancelled_background_read_interrupts_its_statement_and_frees_its_reader(
    database: SqliteDatabase,
) -> None:
    started = threading.Event()

    def start() -> int:
        started.set()
        return 1

    _on_readers(database, "started", start)

    async def read_forever() -> None:
        async with database.background_read() as tx:
            await tx.connection.execute(STARTED_THEN_ENDLESS)

    reading = asyncio.create_task(read_forever())
    assert await asyncio.to_thread(started.wait, 10)
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(reading, 30)
    # Every reader is back in the pool, and each answers.
    for _ in range(database.pool_sizes["reader"] + 1):
        async with database.background_read() as tx:
            assert (await tx.connection.execute(text("SELECT 1"))).scalar() == 1


async def test_a_background_read_reads_one_snapshot_and_reports_its_errors(database: SqliteDatabase) -> None:
    await _write_ledger(database, "led_before")
    async with database.background_read() as tx:
        assert await tx.ledgers.get("led_before") is not None
        await _write_ledger(database, "led_during")  # it holds no write lock
        assert await tx.ledgers.get("led_during") is None  # committed after its snapshot began
        with pytest.raises(OperationalError, match="no such table"):
            await tx.connection.execute(text("SELECT * FROM no_such_table"))
    async with database.background_read() as tx:
        assert await tx.ledgers.get("led_during") is not None


async def _add_events(
    database: SqliteDatabase, ledger_id: str, count: int, *, fail: bool = False
) -> list[int]:
    """``count`` events added in one statement; the pks the repository answered."""
    async with database.write() as tx:
        await tx.events.add_many(
            [NewEvent(ledger_id, "test.added", {"n": n}, None) for n in range(count)], await tx.now()
        )
        if fail:
            raise RuntimeError("roll this member back")
        return list(tx.event_pks)


async def test_rows_inserted_without_returning_get_the_pks_they_are_stored_under(
    database: SqliteDatabase,
) -> None:
    inserts: list[Any] = []
    event.listen(database._engine, "before_cursor_execute", lambda *args: inserts.append(args[2:6]))
    await _write_ledger(database, "led_pks")
    first = await _add_events(database, "led_pks", 5)
    # The table's top rows gone, and a rolled-back write's rows: SQLite gives those rowids again.
    async with database.write() as tx:
        await tx.connection.execute(text("DELETE FROM events WHERE pk > :pk"), {"pk": first[2]})
    with pytest.raises(RuntimeError):
        await _add_events(database, "led_pks", 4, fail=True)
    later = await _add_events(database, "led_pks", 3) + await _add_events(database, "led_pks", 1)
    async with database.read() as tx:
        stored = (await tx.connection.execute(text("SELECT pk, data FROM events ORDER BY pk"))).all()
    assert first[:3] + later == [row.pk for row in stored]
    assert [row.data for row in stored] == ['{"n":0}', '{"n":1}', '{"n":2}'] * 2 + ['{"n":0}']
    # Each insert was one statement on the cursor path (no SQLAlchemy execution context).
    added = [context for sql, _, context, _ in inserts if sql.startswith("INSERT INTO events")]
    assert added == [None] * 4

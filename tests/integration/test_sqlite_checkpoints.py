"""WAL checkpoints in a thread of their own (``store.sqlite_checkpoints``, ADR 0046), on real files.

SQLite's own checkpoint runs inside the COMMIT that takes the log past 1,000 pages. With the
checkpointer on, no COMMIT checkpoints: the log grows until the thread's next round copies it into
the database file.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from tally.domain.keys import Ledger
from tally.services.ports import NewEvent
from tally.store.sqlite import SqliteDatabase
from tally.store.sqlite_checkpoints import Checkpointer
from tests.support import running_sqlite

PAGE = 4096  # SQLite's default page size
PADDING = "x" * 3000  # about one page of event data a row


async def write_pages(database: SqliteDatabase, transactions: int, rows: int) -> None:
    """``transactions`` commits of ``rows`` events of about a page each."""
    async with database.write() as tx:
        await tx.ledgers.add(Ledger("ldg_1", "pages", await tx.now()))
    for _ in range(transactions):
        async with database.write() as tx:
            events = [NewEvent("ldg_1", "account.updated", {"pad": PADDING}, None)] * rows
            await tx.events.add_many(events, await tx.now())


def log_pages(path: Path) -> int:
    wal = Path(f"{path}-wal")
    return wal.stat().st_size // PAGE if wal.exists() else 0


def checkpoint_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "tally-sqlite-checkpoints"]


async def test_no_commit_checkpoints_when_the_checkpointer_is_on(tmp_path: Path) -> None:
    """3,000 pages in 30 commits: SQLite's own checkpoint would have restarted the log near 1,000."""
    on, off = tmp_path / "on.db", tmp_path / "off.db"
    async with running_sqlite(on, checkpoint_seconds=3600) as database:  # no round within the test
        await write_pages(database, 30, 100)
        assert log_pages(on) > 2_500
    async with running_sqlite(off, checkpoint_seconds=0) as database:
        await write_pages(database, 30, 100)
        assert log_pages(off) < 1_500


async def test_the_checkpointer_copies_the_log_into_the_file_and_stops_with_it(tmp_path: Path) -> None:
    path = tmp_path / "tally.db"
    async with running_sqlite(path, checkpoint_seconds=0.02) as database:
        assert len(checkpoint_threads()) == 1
        before = path.stat().st_size
        await write_pages(database, 5, 100)  # 500 pages: below SQLite's own threshold

        async def copied() -> bool:
            return path.stat().st_size >= before + 400 * PAGE

        for _ in range(500):
            if await copied():
                break
            await asyncio.sleep(0.02)
        assert await copied()
    assert checkpoint_threads() == []


async def test_an_in_memory_database_has_no_checkpointer() -> None:
    database = SqliteDatabase("sqlite:///:memory:", checkpoint_seconds=0.02)
    await database.start()
    try:
        assert checkpoint_threads() == []
    finally:
        await database.stop()


async def test_a_failing_round_does_not_end_the_checkpointer(tmp_path: Path) -> None:
    """With SQLite's own checkpoint off, a thread that ended on an error would let the log grow."""
    checkpointer = Checkpointer(str(tmp_path / "missing" / "tally.db"), 0.01)  # cannot be opened
    checkpointer.start()
    try:
        await asyncio.sleep(0.2)  # about twenty failed rounds
        assert [thread.is_alive() for thread in checkpoint_threads()] == [True]
    finally:
        checkpointer.stop()
    assert checkpoint_threads() == []

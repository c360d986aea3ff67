"""Write turns among the processes sharing a SQLite file (``store.writer_turn``, ADR 0040).

Two ``SqliteDatabase`` objects on one file stand for two processes: each opens the turn file
itself, and ``flock`` locks of two open files conflict within one process as between two. What
must hold:
- a writer waiting for another's group does not poll SQLite's lock: it tries ``BEGIN IMMEDIATE``
  once, when the group has ended;
- the turn is given back however a group ends (committed, or rolled back by a failure), and
  when the writer that waited for it gave up before it came;
- a process killed holding the turn loses it.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from tally.domain.errors import DeadlineExceeded
from tally.services.deadline import Deadline, set_deadline
from tally.store.sqlite import SqliteDatabase
from tests.support import running_sqlite

HOLD_SECONDS = 0.3


@contextmanager
def begins_of(db: SqliteDatabase) -> Iterator[list[str]]:
    """Every BEGIN IMMEDIATE ``db`` sends, failed attempts included."""
    sent: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement == "BEGIN IMMEDIATE":
            sent.append(statement)

    event.listen(db.engines[0], "before_cursor_execute", before)
    try:
        yield sent
    finally:
        event.remove(db.engines[0], "before_cursor_execute", before)


async def put(db: SqliteDatabase, name: str) -> None:
    async with db.write() as tx:
        await tx.instance.put_if_absent(name, b"x")


async def stored(db: SqliteDatabase, name: str) -> bytes | None:
    async with db.read() as tx:
        return await tx.instance.get(name)


async def holding(db: SqliteDatabase) -> tuple[asyncio.Task[None], asyncio.Event]:
    """A write of ``db`` inside its open group, until the event returned is set; the task ends then."""
    in_group, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with db.write() as tx:
            await tx.instance.put_if_absent("first", b"x")
            in_group.set()
            await release.wait()

    holder = asyncio.create_task(hold())
    await in_group.wait()
    return holder, release


async def test_a_writer_waits_for_the_other_process_group_without_polling(tmp_path: Path) -> None:
    path = tmp_path / "turns.db"
    async with running_sqlite(path) as first, running_sqlite(path) as second:
        holder, release = await holding(first)
        with begins_of(second) as begins:
            waiter = asyncio.create_task(put(second, "second"))
            await asyncio.sleep(HOLD_SECONDS)
            assert not waiter.done()
            assert begins == []  # waiting in the kernel for the turn, not retrying SQLite's lock
            release.set()
            await asyncio.wait_for(asyncio.gather(holder, waiter), timeout=5)
        assert begins == ["BEGIN IMMEDIATE"]
        assert await stored(second, "first") == b"x"
        assert await stored(first, "second") == b"x"


async def test_a_failed_group_gives_the_turn_back(tmp_path: Path) -> None:
    path = tmp_path / "turns.db"
    async with running_sqlite(path) as first, running_sqlite(path, lock_wait_seconds=2) as second:

        async def fail() -> None:
            async with first.write() as tx:
                await tx.instance.put_if_absent("lost", b"x")
                raise ZeroDivisionError

        with pytest.raises(ZeroDivisionError):
            await fail()
        await asyncio.wait_for(put(second, "second"), timeout=5)
        assert await stored(second, "lost") is None
        await asyncio.wait_for(put(first, "first"), timeout=5)  # and the first writes again


async def test_a_turn_that_comes_after_its_writer_gave_up_goes_to_the_next_or_back(tmp_path: Path) -> None:
    path = tmp_path / "turns.db"
    async with (
        running_sqlite(path) as first,
        running_sqlite(path, lock_wait_seconds=2) as second,
        running_sqlite(path, lock_wait_seconds=2) as third,
    ):
        holder, release = await holding(first)
        set_deadline(Deadline(time.monotonic() + 0.1))
        with pytest.raises(DeadlineExceeded):
            await put(second, "late")
        set_deadline(None)
        release.set()
        await holder
        # The second's thread got the turn after its writer left, and nobody in it asked: given back.
        await asyncio.wait_for(put(third, "third"), timeout=5)
        # Asked again while the thread still waits, the same thread's turn serves the next writer.
        holder, release = await holding(first)
        set_deadline(Deadline(time.monotonic() + 0.1))
        with pytest.raises(DeadlineExceeded):
            await put(second, "late")
        set_deadline(None)
        again = asyncio.create_task(put(second, "again"))
        await asyncio.sleep(0.05)
        release.set()
        await asyncio.wait_for(asyncio.gather(holder, again), timeout=5)
        assert await stored(third, "again") == b"x"
        assert await stored(third, "late") is None
        await asyncio.wait_for(put(third, "last"), timeout=5)


async def test_a_writer_cancelled_while_waiting_is_cancelled_and_the_turn_is_given_back(
    tmp_path: Path,
) -> None:
    path = tmp_path / "turns.db"
    async with running_sqlite(path) as first, running_sqlite(path) as second:
        holder, release = await holding(first)
        waiter = asyncio.create_task(put(second, "cancelled"))
        await asyncio.sleep(0.05)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        release.set()
        await holder
        await asyncio.sleep(0.05)  # the second's thread gets the turn, and gives it back
        await asyncio.wait_for(put(first, "again"), timeout=5)
        assert await stored(first, "cancelled") is None


async def test_a_process_killed_holding_the_turn_loses_it(tmp_path: Path) -> None:
    path = tmp_path / "turns.db"
    # A process that takes the turn and never gives it back (started before the loop has work).
    holder = subprocess.Popen(  # noqa: ASYNC220
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            f"fd = os.open({str(path) + '-turn'!r}, os.O_RDWR | os.O_CREAT, 0o600)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "print('held', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        async with running_sqlite(path) as db:
            waiter = asyncio.create_task(put(db, "after"))
            await asyncio.sleep(HOLD_SECONDS)
            assert not waiter.done()
            holder.kill()
            await asyncio.wait_for(waiter, timeout=5)
            assert await stored(db, "after") == b"x"
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


async def test_without_flock_the_file_s_own_lock_decides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Some network file systems refuse ``flock`` (ENOLCK): writes go on, ordered by SQLite alone."""

    def refused(_fd: int, _operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", refused)
    path = tmp_path / "turns.db"
    async with running_sqlite(path) as first, running_sqlite(path) as second:
        await asyncio.gather(
            *(put(db, f"{name}-{n}") for n in range(5) for db, name in ((first, "a"), (second, "b")))
        )
        assert await stored(first, "b-4") == b"x"
        assert await stored(second, "a-4") == b"x"

"""Whose turn it is to write a SQLite file, among the processes sharing it (ADR 0040).

SQLite's write lock has no queue: a process that finds it taken (``busy_timeout=0``, ADR 0035)
can only try again later. Tally's processes wait for it asynchronously with a growing pause, and
measured with ``tally serve --workers 2``, the pause decided the throughput: a worker that had
backed off to 50 ms sat idle while the other committed group after group (P99 436 ms), and a cap
of 2 ms traded that for a failed ``BEGIN IMMEDIATE`` through SQLAlchemy every 2 ms.

``WriterTurn`` is an exclusive ``flock`` on a file beside the database, held by a process from
before its ``BEGIN IMMEDIATE`` until its commit group is committed or rolled back. A process
that finds it taken waits in a thread blocked in the kernel, which wakes the moment the holder
lets go: no polling, and no Python running while it waits. The lock is a courtesy among Tally's
processes, not what keeps the file consistent: SQLite's own lock does that, and ``BEGIN
IMMEDIATE`` is still retried for any other program holding it (a migration, the ``sqlite3``
shell). A process that dies holding its turn loses it with its file descriptors.

One process asks for its turn at a time (its commit groups take turns behind an ``asyncio.Lock``);
a thread waiting for a turn whose asker gave up (its budget ran out, or it was cancelled) hands
the turn to the next writer of the process, or gives it back if none is waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import threading
from pathlib import Path

from tally.domain.errors import DeadlineExceeded


class WriterTurn:
    """The write turn of one process on one database file; see the module docstring."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self._held = False
        self._arriving: asyncio.Future[bool] | None = None  # a thread blocked in flock for us
        self._askers = 0

    async def take(self, seconds: float) -> None:
        """Wait up to ``seconds`` for this process's turn; ``DeadlineExceeded`` past them."""
        if self._held:
            raise RuntimeError("the write turn is already held by this process")
        if self._arriving is None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._arriving = self._wait_in_thread()
            except OSError:  # no flock here (some network file systems): SQLite's lock decides alone
                return
            else:
                self._held = True
                return
        arriving = self._arriving
        self._askers += 1
        try:
            async with asyncio.timeout(seconds):
                got = await asyncio.shield(arriving)
        except BaseException as error:  # the budget ran out, or the asker was cancelled
            self._askers -= 1
            if arriving.done() and self._arriving is arriving:
                self._give_back(arriving)  # it came as this asker left: nobody holds it for use
            # Still on its way: the next asker takes it, or it is given back on arrival.
            if isinstance(error, TimeoutError):
                raise DeadlineExceeded("The time budget ran out waiting for the database lock.") from None
            raise
        self._askers -= 1
        self._arriving = None
        self._held = got  # False: the wait failed (the file was closed); SQLite's lock still decides

    def give(self) -> None:
        """Let the other processes write."""
        if self._held:
            self._held = False
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self.give()
        os.close(self._fd)

    def _wait_in_thread(self) -> asyncio.Future[bool]:
        loop = asyncio.get_running_loop()
        arriving: asyncio.Future[bool] = loop.create_future()

        def wait() -> None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            except OSError:
                got = False
            else:
                got = True
            # A closed loop: the process is ending, and its lock goes with it.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._arrived, arriving, got)

        threading.Thread(target=wait, name="tally-writer-turn", daemon=True).start()
        return arriving

    def _arrived(self, arriving: asyncio.Future[bool], got: bool) -> None:
        arriving.set_result(got)
        if self._askers == 0 and self._arriving is arriving:
            self._give_back(arriving)  # every asker gave up meanwhile

    def _give_back(self, arriving: asyncio.Future[bool]) -> None:
        self._arriving = None
        if arriving.result():
            fcntl.flock(self._fd, fcntl.LOCK_UN)

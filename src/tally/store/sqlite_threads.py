"""SQLite work in a worker thread, seen through to its end even when the awaiting task is cancelled.

``sqlite3`` releases the GIL while SQLite steps a statement or syncs a file, so work handed to a
worker thread leaves the event loop free for requests. Two kinds go there:

- the writer's COMMIT, whose fsync waits on the disk (ADR 0035);
- every statement of a background read (``SqliteDatabase.background_read``, ADR 0044): a batch job
  step's reads, such as ``reconcile``'s sums over every entry, which on the loop held every request
  of the process for as long as they ran.

Nothing may touch a connection while a thread has it, so a cancellation never leaves the thread
running alone: it is noted (a background read also interrupts its statement), the work is waited
for, and the caller raises the cancellation once the work's outcome is known.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import Connection, Dialect, Executable, Result

from tally.store.sqlite_statements import SqliteStatements, driver_of
from tally.store.statement_plans import Rows

T = TypeVar("T")


async def see_through(work: Callable[[], T], on_cancel: Callable[[], None] | None = None) -> tuple[T, bool]:
    """``work()`` in a worker thread: its result, and whether the awaiting task was cancelled meanwhile.

    A cancellation calls ``on_cancel`` (once) and goes on waiting for the work; the work's own
    error is raised.
    """
    # Submitted to the thread at once: no task to start first, and one fewer to finish after.
    running = asyncio.get_running_loop().run_in_executor(None, work)
    cancelled = False
    while not running.done():
        try:
            await asyncio.shield(running)
        except asyncio.CancelledError:
            if not cancelled and on_cancel is not None:
                on_cancel()
            cancelled = True
        except BaseException:
            break
    return running.result(), cancelled


class ThreadedSqliteConnection:
    """A read connection whose statements each run in a worker thread, their rows fetched there.

    A cancelled statement is interrupted (``sqlite3.Connection.interrupt``, which any thread may
    call) and waited for; the caller then sees the cancellation, not the interruption's error.
    """

    __slots__ = ("_statements", "_sync")

    def __init__(self, sync: Connection, statements: SqliteStatements) -> None:
        self._sync = sync
        self._statements = statements

    @property
    def dialect(self) -> Dialect:
        return self._sync.dialect

    async def execute(self, statement: Executable, parameters: Any = None) -> Result[Any]:
        interrupted = False

        def interrupt() -> None:
            nonlocal interrupted
            interrupted = True
            driver_of(self._sync).interrupt()

        work = partial(_fetched, self._statements, self._sync, statement, parameters)
        try:
            rows, cancelled = await see_through(work, interrupt)
        except Exception as error:
            if interrupted:
                raise asyncio.CancelledError from error
            raise
        if cancelled:
            raise asyncio.CancelledError
        return rows


def _fetched(
    statements: SqliteStatements, conn: Connection, statement: Executable, parameters: Any
) -> Result[Any]:
    """The statement's result with every row already fetched (a fetch steps the statement too)."""
    result = statements.execute(conn, statement, parameters)
    return result if isinstance(result, Rows) else result.freeze()()

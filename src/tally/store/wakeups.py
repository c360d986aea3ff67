"""Waking workers when jobs are queued, instead of waiting for their next poll (ADR 0023).

``Wakeups`` wakes every waiter of this process: the database adapters signal it after a commit
that queued jobs. On PostgreSQL, ``listen`` also keeps a connection on ``LISTEN tally_jobs``; the
``pg_notify`` that a queueing transaction sends is delivered at its commit, so workers of every
process wake. Polling stays as the fallback: a lost notification only delays a job until the next
poll.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import psycopg

from tally.store.repositories.jobs import NOTIFY_CHANNEL

_RECONNECT_SECONDS = 1.0


class Wakeups:
    def __init__(self) -> None:
        self._waiters: set[asyncio.Future[None]] = set()
        self._listener: asyncio.Task[None] | None = None

    def signal(self) -> None:
        waiters, self._waiters = self._waiters, set()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        try:
            await waiter
        finally:
            self._waiters.discard(waiter)

    def listen(self, dsn: str) -> None:
        """Also wake on the PostgreSQL notifications of other processes' commits."""
        self._listener = asyncio.create_task(self._listen(dsn), name="tally-job-listener")

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener

    async def _listen(self, dsn: str) -> None:
        while True:
            conn: psycopg.AsyncConnection[Any] | None = None
            try:
                conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True, connect_timeout=2)
                await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                self.signal()  # anything queued while this connection was down
                async for _ in conn.notifies():
                    self.signal()
            except asyncio.CancelledError:
                raise
            except Exception:
                await asyncio.sleep(_RECONNECT_SECONDS)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()

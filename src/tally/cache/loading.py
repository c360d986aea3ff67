"""Stampede protection: one loader per key at a time.

In one process, ``SingleFlight`` makes concurrent misses of a key share one load. Across processes
sharing Redis or Memcached, ``LoadLock`` takes a short lock entry (``add``); a process that does not
get it waits a little for the winner's entry before loading on its own, so a popular key that
expires sends one query to the database, not one per process and request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from tally.cache.guarded import Failed, GuardedCache
from tally.services.deadline import remaining

V = TypeVar("V")
LOCK_TTL = 1.0  # seconds: a loader that died frees the key this soon
WAIT_STEP = 0.005  # seconds between looks for the winner's entry
LONGEST_WAIT = 0.05  # then load anyway: the lock protects the database, never blocks a request


class _LeaderGone(Exception):
    """The loader was cancelled (its own request's budget): each waiter loads for itself."""


class SingleFlight(Generic[V]):
    def __init__(self) -> None:
        self._running: dict[str, asyncio.Future[V]] = {}

    async def run(self, key: str, load: Callable[[], Awaitable[V]]) -> V:
        running = self._running.get(key)
        if running is not None:
            try:
                return await asyncio.shield(running)
            except _LeaderGone:
                return await load()
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._running[key] = future
        try:
            value = await load()
        except Exception as error:
            future.set_exception(error)  # waiters see the same failure (and may serve stale)
            raise
        except BaseException:
            future.set_exception(_LeaderGone())
            raise
        else:
            future.set_result(value)
            return value
        finally:
            del self._running[key]
            if future.done() and not future.cancelled():
                future.exception()  # retrieved: no "exception never retrieved" when nobody waited


class LoadLock:
    """A short lock entry per key in a shared cache (``add`` succeeds for one process)."""

    def __init__(self, cache: GuardedCache) -> None:
        self._cache = cache

    async def acquire(self, key: str) -> bool | Failed:
        """``True``: this process loads; ``False``: another does; ``FAILED``: no cache to wait on."""
        return await self._cache.add(f"lock:{key}", b"1", ttl=LOCK_TTL)

    async def release(self, key: str) -> None:
        await self._cache.delete(f"lock:{key}")


def waits() -> int:
    """How many looks a process that lost the lock may take within its budget (0: load at once)."""
    return int(min(LONGEST_WAIT, remaining(LONGEST_WAIT) / 4) / WAIT_STEP)

"""A cache that never fails a request: each call bounded in time, every failure a miss.

A call to a server gets ``min(TALLY_CACHE_TIMEOUT_MS, the request's remaining budget)`` (an
in-process cache does no I/O and is called without a timer); a backend error or
timeout is reported to the observer (``tally_cache_errors_total``) and answered as "nothing
cached" / "not stored", so the caller goes on to the database.

After a failure the backend rests for ``REST_SECONDS``: calls in that time fail at once, without
touching it (``CacheHealth``, shared by every cache on one backend). So a server that is down or
hung costs one bounded wait per process and rest, not one per call, and the first call after the
rest finds out whether it is back.

A write-through that cannot land leaves the old state in the cache for when the server answers
again (a timeout, a rest: the server may be alive). ``set_or_repair`` keeps such writes, highest
version per key, and ``repair`` (run every second by ``Caches``) lands them once the backend is
back; the version makes a late repair harmless. Until then the key is ``unsure`` and its readers
in this process skip the cache. The buffer is bounded (``REPAIR_KEYS``); past it, or if the process
dies first, the TTL bounds how long the old state can be read.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Protocol, TypeVar

import structlog

from tally.services.cache_ports import Cache, CacheUnavailable
from tally.services.deadline import remaining

T = TypeVar("T")
_log = structlog.get_logger(__name__)
_QUIET_SECONDS = 5.0  # at most one log line per backend per interval while it is down


class Failed(Enum):
    """A lookup that could not be answered (as opposed to ``None``: answered, nothing there)."""

    FAILED = "failed"


FAILED = Failed.FAILED


class CacheObserver(Protocol):
    def called(self, cache: str, backend: str, operation: str, seconds: float, *, ok: bool) -> None: ...


class CacheHealth:
    """Whether a backend is resting after a failure (see the module docstring)."""

    REST_SECONDS = 0.5

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._rest_until = 0.0
        self._quiet_until = 0.0

    @property
    def resting(self) -> bool:
        return self._clock() < self._rest_until

    def failed(self) -> bool:
        """Start a rest; return whether to log it (at most once per ``QUIET_SECONDS``)."""
        now = self._clock()
        self._rest_until = now + self.REST_SECONDS
        if now < self._quiet_until:
            return False
        self._quiet_until = now + _QUIET_SECONDS
        return True


class GuardedCache:
    """``name`` is the cache's (``accounts``, ``api_keys``, ``invalidation``): one label of its metrics."""

    REPAIR_KEYS = 100_000

    def __init__(
        self,
        cache: Cache,
        *,
        name: str,
        timeout: float,
        health: CacheHealth | None = None,
        observer: CacheObserver | None = None,
    ) -> None:
        self.cache = cache
        self.name = name
        self.backend = cache.backend
        self.in_process = cache.in_process
        self._timeout = timeout
        self._health = health or CacheHealth()
        self._observer = observer
        self._repairs: dict[str, tuple[bytes, float, int]] = {}  # key -> (value, ttl, version)
        self.dropped_repairs = 0

    def unsure(self, key: str) -> bool:
        """Whether a write of ``key`` is still waiting to land: its cached value may be older."""
        return key in self._repairs

    async def set_or_repair(
        self, key: str, value: bytes, *, ttl: float, version: int, must_land: bool = True
    ) -> None:
        """A versioned set; one that ``must_land`` (a write-through) is kept for ``repair`` when the
        backend fails it. Landing at or above a waiting repair's version makes the key sure again."""
        if await self.set(key, value, ttl=ttl, version=version) is FAILED:
            if must_land:
                self._keep_for_repair(key, value, ttl, version)
        elif key in self._repairs and self._repairs[key][2] <= version:
            del self._repairs[key]  # this write supersedes the one waiting

    async def repair(self) -> int:
        """Land the writes that failed, while the backend answers; return how many are left."""
        for key, (value, ttl, version) in list(self._repairs.items()):
            if self._health.resting:
                break
            if await self.set(key, value, ttl=ttl, version=version) is FAILED:
                break
            if self._repairs.get(key, (b"", 0.0, -1))[2] == version:
                del self._repairs[key]
        return len(self._repairs)

    def _keep_for_repair(self, key: str, value: bytes, ttl: float, version: int) -> None:
        waiting = self._repairs.get(key)
        if waiting is not None and waiting[2] > version:
            return
        if waiting is None and len(self._repairs) >= self.REPAIR_KEYS:
            self.dropped_repairs += 1
            return
        self._repairs[key] = (value, ttl, version)

    async def get(self, key: str) -> bytes | Failed | None:
        return await self._call("get", lambda: self.cache.get(key), FAILED)

    async def set(self, key: str, value: bytes, *, ttl: float, version: int | None = None) -> bool | Failed:
        return await self._call("set", lambda: self.cache.set(key, value, ttl=ttl, version=version), FAILED)

    async def add(self, key: str, value: bytes, *, ttl: float) -> bool | Failed:
        return await self._call("add", lambda: self.cache.add(key, value, ttl=ttl), FAILED)

    async def delete(self, key: str) -> None:
        await self._call("delete", lambda: self.cache.delete(key), None)

    async def _call(self, operation: str, call: Callable[[], Awaitable[T]], failed: T) -> T:
        if self._health.resting:
            if self._observer is not None:
                self._observer.called(self.name, self.backend, operation, 0.0, ok=False)
            return failed
        started = time.perf_counter()
        ok = False
        try:
            if self.in_process:  # no I/O: nothing to wait for, and a timer per call would cost
                result = await call()
            else:
                # A budget already spent still gets a moment: asyncio.timeout(0) would fail every call.
                async with asyncio.timeout(max(0.001, min(self._timeout, remaining(self._timeout)))):
                    result = await call()
        except (CacheUnavailable, TimeoutError) as error:
            if self._health.failed():
                where = {"cache": self.name, "backend": self.backend, "operation": operation}
                _log.warning("cache unavailable; resting it", **where, error=repr(error))
            return failed
        else:
            ok = True
            return result
        finally:
            if self._observer is not None:
                seconds = time.perf_counter() - started
                self._observer.called(self.name, self.backend, operation, seconds, ok=ok)

"""A cache that never fails a request: each call bounded in time, every failure a miss.

A call gets ``min(TALLY_CACHE_TIMEOUT_MS, the request's remaining budget)``; a backend error or
timeout is reported to the observer (``tally_cache_errors_total``) and answered as "nothing
cached" / "not stored", so the caller goes on to the database. A cache that is down costs each
request at most one bounded wait per call, never an error.
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


class GuardedCache:
    """``name`` is the cache's (``accounts``, ``api_keys``, ``invalidation``): one label of its metrics."""

    def __init__(
        self, cache: Cache, *, name: str, timeout: float, observer: CacheObserver | None = None
    ) -> None:
        self.cache = cache
        self.name = name
        self.backend = cache.backend
        self._timeout = timeout
        self._observer = observer
        self._quiet_until = 0.0

    async def get(self, key: str) -> bytes | Failed | None:
        return await self._call("get", lambda: self.cache.get(key), FAILED)

    async def set(self, key: str, value: bytes, *, ttl: float, version: int | None = None) -> bool:
        return await self._call("set", lambda: self.cache.set(key, value, ttl=ttl, version=version), False)

    async def add(self, key: str, value: bytes, *, ttl: float) -> bool:
        return await self._call("add", lambda: self.cache.add(key, value, ttl=ttl), False)

    async def delete(self, key: str) -> None:
        await self._call("delete", lambda: self.cache.delete(key), None)

    async def _call(self, operation: str, call: Callable[[], Awaitable[T]], failed: T) -> T:
        # A budget already spent still gets a moment: asyncio.timeout(0) would fail every call.
        limit = max(0.001, min(self._timeout, remaining(self._timeout)))
        started = time.perf_counter()
        ok = False
        try:
            async with asyncio.timeout(limit):
                result = await call()
        except (CacheUnavailable, TimeoutError) as error:
            self._complain(operation, error)
            return failed
        else:
            ok = True
            return result
        finally:
            if self._observer is not None:
                seconds = time.perf_counter() - started
                self._observer.called(self.name, self.backend, operation, seconds, ok=ok)

    def _complain(self, operation: str, error: Exception) -> None:
        now = time.monotonic()
        if now >= self._quiet_until:
            self._quiet_until = now + _QUIET_SECONDS
            _log.warning(
                "cache unavailable",
                cache=self.name,
                backend=self.backend,
                operation=operation,
                error=repr(error),
            )

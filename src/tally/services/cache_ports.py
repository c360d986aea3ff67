"""What the caching strategies need from a cache server, and from a channel of invalidations.

One interface, three backends (``tally.cache``): in-process (``MemoryCache``), Redis
(``RedisCache``), Memcached (``MemcachedCache``). Values are opaque bytes; the strategies
(``services.cached_reads``) decide what they hold and how long they are fresh.

Versions make concurrent writers safe without locks: a reader that loaded an account before a
transfer committed must not overwrite the entry the transfer wrote through after it. A versioned
``set`` stores only when the entry's current version is not greater than the new one, atomically
on the server (a Lua script on Redis, ``gets``/``cas`` on Memcached). A *tombstone* is an entry
whose value is empty: it keeps its version, so an older load cannot bring back what was dropped.

A backend's calls may raise ``CacheUnavailable`` (server down, timeout); the strategies never let
that fail a request (``GuardedCache``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol


class CacheUnavailable(Exception):
    """The cache server could not answer (refused, reset, timed out, or a protocol error)."""


class Cache(Protocol):
    backend: str  # "memory", "redis" or "memcached": a label for metrics and logs
    # In this process's memory: a call does no I/O, so it cannot hang and has nothing to overlap.
    in_process: bool

    async def get(self, key: str) -> bytes | None:
        """The value stored under ``key``, or ``None`` when absent, expired or a tombstone."""
        ...

    async def set(self, key: str, value: bytes, *, ttl: float, version: int | None = None) -> bool:
        """Store ``value`` for ``ttl`` seconds; return whether it was stored.

        With ``version``, store only when the key is absent, unversioned, or holds a version not
        greater than ``version`` (an equal version is replaced). Without, store unconditionally.
        An empty ``value`` is a tombstone: ``get`` answers ``None`` but the version stays.
        """
        ...

    async def add(self, key: str, value: bytes, *, ttl: float) -> bool:
        """Store only if ``key`` is absent (a lock for one loader per key); return whether stored."""
        ...

    async def delete(self, key: str) -> None: ...

    async def ping(self) -> None:
        """Raise ``CacheUnavailable`` unless the server answers."""
        ...

    async def close(self) -> None: ...


class InvalidationChannel(Protocol):
    """Tells the other processes which keys to drop from their in-process caches.

    Delivery is at most once and not durable (Redis pub/sub): a process that misses a message
    keeps the entry until its TTL. Messages carry the key's version so that the receiver can leave
    a tombstone rather than a hole a racing older load could fill.
    """

    async def publish(self, drops: Sequence[tuple[str, int | None]]) -> None: ...

    def listen(self) -> AsyncIterator[list[tuple[str, int | None]]]:
        """Batches of ``(key, version)`` published by any process (this one included), until closed."""
        ...

    async def close(self) -> None: ...

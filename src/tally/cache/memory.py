"""The in-process cache: a bounded least-recently-used map with a TTL per entry.

It serves one process (the default ``TALLY_CACHE_URL=memory://``, and the near cache in front of
a server); other processes learn of changes through an ``InvalidationChannel``. Expired entries
are dropped when next touched, or evicted like any other once the map is full.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Entry:
    value: bytes  # empty: a tombstone
    version: int | None
    expires_at: float  # on the injected clock


class MemoryCache:
    """``Cache`` held in this process; ``max_entries`` bounds it, the least recently used go first.

    ``clock`` (seconds, monotonic) is injectable so that tests move time instead of sleeping.
    Every method runs without awaiting anything, so each is atomic on the event loop.
    """

    backend = "memory"
    in_process = True

    def __init__(self, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, not {max_entries}")
        self._max_entries = max_entries
        self._clock = clock
        # Ordered from least to most recently used: a read or a write moves the key to the end.
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def __len__(self) -> int:
        """Entries held, expired ones not yet dropped included."""
        return len(self._entries)

    async def get(self, key: str) -> bytes | None:
        entry = self._live(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry.value or None

    async def set(self, key: str, value: bytes, *, ttl: float, version: int | None = None) -> bool:
        if version is not None:
            if version < 0:
                raise ValueError(f"a version is a non-negative integer, not {version}")
            current = self._live(key)
            if current is not None and current.version is not None and current.version > version:
                return False
        self._store(key, _Entry(value, version, self._clock() + ttl))
        return True

    async def add(self, key: str, value: bytes, *, ttl: float) -> bool:
        if self._live(key) is not None:
            return False
        self._store(key, _Entry(value, None, self._clock() + ttl))
        return True

    async def delete(self, key: str) -> None:
        self._entries.pop(key, None)

    async def ping(self) -> None:
        """Always answers: the cache is this process."""

    async def close(self) -> None:
        self._entries.clear()

    def _live(self, key: str) -> _Entry | None:
        """The entry under ``key`` unless absent or expired (an expired one is dropped)."""
        entry = self._entries.get(key)
        if entry is not None and self._clock() >= entry.expires_at:
            del self._entries[key]
            return None
        return entry

    def _store(self, key: str, entry: _Entry) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

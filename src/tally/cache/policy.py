"""What the account and key caches share: how long entries live, the clock, the result counter,
and how an entry is looked up."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from tally.cache.entries import Entry, readable
from tally.cache.guarded import FAILED, Failed, GuardedCache

T = TypeVar("T")
ResultCounter = Callable[[str, str], None]  # (cache name, result)


@dataclass(frozen=True, slots=True)
class EntryPolicy:
    ttl: float  # seconds an entry is fresh (0: no cache)
    stale: float  # seconds past freshness the backend keeps it, for stale-if-error
    count: ResultCounter
    clock: Callable[[], float]  # wall-clock seconds: entries are shared between processes

    @property
    def keep(self) -> float:
        return self.ttl + self.stale


async def look_up(
    cache: GuardedCache, key: str, decode: Callable[[bytes], Entry[T]]
) -> tuple[bytes | Failed | None, Entry[T] | None]:
    """The raw answer and the entry in it. A key whose write has not reached the cache yet
    (``unsure``) is not looked up: what the cache holds may be older, so the database answers
    (counted as an error, the backend's failure being why)."""
    raw = FAILED if cache.unsure(key) else await cache.get(key)
    return raw, readable(decode, raw)

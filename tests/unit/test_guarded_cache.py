"""A cache that fails never fails its caller, rests after a failure, and repairs lost writes.

In words: a failed call is a miss; after one failure the backend is left alone for a moment; a
versioned write that could not land is kept, its key marked unsure, and lands once the backend
answers again, unless a newer write of the key got there first.
"""

from __future__ import annotations

from tally.cache.guarded import FAILED, CacheHealth, GuardedCache
from tally.cache.memory import MemoryCache
from tally.services.cache_ports import CacheUnavailable


class Flaky(MemoryCache):
    """An in-process cache whose server can be "down" (every call refused), like a real one."""

    def __init__(self) -> None:
        super().__init__(100)
        self.down = False
        self.calls = 0

    async def get(self, key: str) -> bytes | None:
        self._answer()
        return await super().get(key)

    async def set(self, key: str, value: bytes, *, ttl: float, version: int | None = None) -> bool:
        self._answer()
        return await super().set(key, value, ttl=ttl, version=version)

    def _answer(self) -> None:
        self.calls += 1
        if self.down:
            raise CacheUnavailable("refused")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def guarded() -> tuple[GuardedCache, Flaky, Clock]:
    clock = Clock()
    backend = Flaky()
    return GuardedCache(backend, name="accounts", timeout=1.0, health=CacheHealth(clock)), backend, clock


async def test_a_failed_call_is_a_miss_and_the_backend_then_rests() -> None:
    cache, backend, clock = guarded()
    backend.down = True
    assert await cache.get("k") is FAILED
    assert await cache.get("k") is FAILED
    assert backend.calls == 1  # the second call did not touch the resting backend
    backend.down = False
    clock.now += CacheHealth.REST_SECONDS
    assert await cache.get("k") is None
    assert backend.calls == 2


async def test_a_write_that_could_not_land_is_repaired_once_the_backend_answers() -> None:
    cache, backend, clock = guarded()
    await cache.set_or_repair("k", b"old", ttl=60, version=1)
    backend.down = True
    await cache.set_or_repair("k", b"new", ttl=60, version=2)
    assert cache.unsure("k")
    assert await cache.repair() == 1  # still down (and resting): kept
    backend.down = False
    assert await cache.repair() == 1  # resting: not tried yet
    clock.now += CacheHealth.REST_SECONDS
    assert await cache.repair() == 0
    assert not cache.unsure("k")
    assert await cache.get("k") == b"new"


async def test_a_newer_write_supersedes_the_one_waiting_for_repair() -> None:
    cache, backend, clock = guarded()
    backend.down = True
    await cache.set_or_repair("k", b"v2", ttl=60, version=2)
    backend.down = False
    clock.now += CacheHealth.REST_SECONDS
    await cache.set_or_repair("k", b"v3", ttl=60, version=3)
    assert not cache.unsure("k")
    assert await cache.repair() == 0
    assert await cache.get("k") == b"v3"

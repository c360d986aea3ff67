"""The in-process cache: least recently used entries go first, entries expire on the injected clock,
and versioned writes follow the port's rules (``services.cache_ports.Cache``)."""

from __future__ import annotations

import pytest

from tally.cache.memory import MemoryCache

TTL = 10.0


class Clock:
    """Seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache(clock: Clock) -> MemoryCache:
    return MemoryCache(3, clock=clock)


async def test_inserting_past_the_bound_evicts_the_least_recently_inserted(cache: MemoryCache) -> None:
    for key in ("a", "b", "c", "d"):
        await cache.set(key, key.encode(), ttl=TTL)

    assert len(cache) == 3
    assert await cache.get("a") is None
    assert [await cache.get(key) for key in ("b", "c", "d")] == [b"b", b"c", b"d"]


async def test_a_read_makes_an_entry_the_most_recently_used(cache: MemoryCache) -> None:
    for key in ("a", "b", "c"):
        await cache.set(key, key.encode(), ttl=TTL)

    await cache.get("a")
    await cache.set("d", b"d", ttl=TTL)

    assert await cache.get("b") is None
    assert await cache.get("a") == b"a"


async def test_a_write_makes_an_entry_the_most_recently_used(cache: MemoryCache) -> None:
    for key in ("a", "b", "c"):
        await cache.set(key, key.encode(), ttl=TTL)

    await cache.set("a", b"a2", ttl=TTL)
    await cache.set("d", b"d", ttl=TTL)
    await cache.set("e", b"e", ttl=TTL)

    assert [await cache.get(key) for key in ("a", "b", "c", "d", "e")] == [b"a2", None, None, b"d", b"e"]


async def test_an_entry_is_served_until_its_ttl_and_not_after(cache: MemoryCache, clock: Clock) -> None:
    await cache.set("k", b"v", ttl=2.0)

    clock.now += 1.999
    assert await cache.get("k") == b"v"
    clock.now += 0.001
    assert await cache.get("k") is None
    assert len(cache) == 0


async def test_each_entry_keeps_its_own_ttl(cache: MemoryCache, clock: Clock) -> None:
    await cache.set("short", b"s", ttl=1.0)
    await cache.set("long", b"l", ttl=5.0)

    clock.now += 2.0

    assert await cache.get("short") is None
    assert await cache.get("long") == b"l"


# (stored first as (value, version), or None for nothing; then the version written; whether stored)
VERSIONED_WRITES = {
    "absent key": (None, 5, True),
    "unversioned entry": ((b"old", None), 5, True),
    "lower version": ((b"old", 4), 5, True),
    "equal version replaces": ((b"old", 5), 5, True),
    "higher version refuses": ((b"old", 6), 5, False),
    "tombstone of a lower version": ((b"", 4), 5, True),
    "tombstone of a higher version refuses": ((b"", 6), 5, False),
    "version zero over nothing": (None, 0, True),
    "versions past 2**53 compare exactly": ((b"old", 2**63), 2**63 - 1, False),
}


@pytest.mark.parametrize(("first", "version", "stored"), VERSIONED_WRITES.values(), ids=VERSIONED_WRITES)
async def test_a_versioned_write_stores_unless_a_greater_version_is_held(
    cache: MemoryCache, first: tuple[bytes, int | None] | None, version: int, stored: bool
) -> None:
    if first is not None:
        await cache.set("k", first[0], ttl=TTL, version=first[1])

    assert await cache.set("k", b"new", ttl=TTL, version=version) is stored
    kept = first[0] if first is not None else b""
    assert await cache.get("k") == (b"new" if stored else kept or None)


async def test_a_versioned_write_over_an_expired_entry_stores(cache: MemoryCache, clock: Clock) -> None:
    await cache.set("k", b"old", ttl=1.0, version=9)
    clock.now += 1.0

    assert await cache.set("k", b"new", ttl=TTL, version=1) is True
    assert await cache.get("k") == b"new"


async def test_a_tombstone_reads_as_nothing_but_keeps_its_version(cache: MemoryCache) -> None:
    await cache.set("k", b"balance@7", ttl=TTL, version=7)
    await cache.set("k", b"", ttl=TTL, version=8)

    assert await cache.get("k") is None
    assert await cache.set("k", b"balance@7", ttl=TTL, version=7) is False
    assert await cache.get("k") is None
    assert await cache.set("k", b"balance@8", ttl=TTL, version=8) is True
    assert await cache.get("k") == b"balance@8"


async def test_an_unversioned_write_overrides_any_version(cache: MemoryCache) -> None:
    await cache.set("k", b"v9", ttl=TTL, version=9)

    assert await cache.set("k", b"plain", ttl=TTL) is True
    assert await cache.get("k") == b"plain"
    assert await cache.set("k", b"v1", ttl=TTL, version=1) is True


async def test_a_negative_version_is_refused(cache: MemoryCache) -> None:
    with pytest.raises(ValueError, match="non-negative"):
        await cache.set("k", b"v", ttl=TTL, version=-1)


async def test_add_stores_only_when_the_key_is_absent(cache: MemoryCache) -> None:
    assert await cache.add("lock", b"first", ttl=TTL) is True
    assert await cache.add("lock", b"second", ttl=TTL) is False
    assert await cache.get("lock") == b"first"

    await cache.delete("lock")
    assert await cache.add("lock", b"third", ttl=TTL) is True
    assert await cache.get("lock") == b"third"


async def test_add_counts_an_expired_entry_as_absent(cache: MemoryCache, clock: Clock) -> None:
    await cache.add("lock", b"first", ttl=1.0)
    clock.now += 1.0

    assert await cache.add("lock", b"second", ttl=TTL) is True
    assert await cache.get("lock") == b"second"


async def test_add_counts_a_tombstone_as_present(cache: MemoryCache) -> None:
    await cache.set("k", b"", ttl=TTL, version=3)

    assert await cache.add("k", b"v", ttl=TTL) is False


async def test_delete_forgets_the_entry_and_its_version(cache: MemoryCache) -> None:
    await cache.set("k", b"v", ttl=TTL, version=9)
    await cache.delete("k")
    await cache.delete("never-there")

    assert await cache.get("k") is None
    assert await cache.set("k", b"v1", ttl=TTL, version=1) is True


async def test_ping_answers_and_close_empties(cache: MemoryCache) -> None:
    await cache.set("k", b"v", ttl=TTL)
    await cache.ping()

    await cache.close()

    assert len(cache) == 0
    assert await cache.get("k") is None


def test_a_cache_holds_at_least_one_entry() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        MemoryCache(0)

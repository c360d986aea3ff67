"""Key usage is written behind: counted in memory, flushed in one transaction, bounded.

In words: every use is counted once (per UTC day) and the last use is the newest; a flush that
fails keeps its uses for the next; the buffer never holds more keys than its bound, and what it
drops is counted.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tally.domain.errors import Unavailable
from tally.domain.keys import ApiKey, Scope
from tally.services.ledgers import KeyUsage
from tests.fakes import FakeDatabase

T0 = datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC)


class Ticking:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=300)
        return self.now


async def database_with_keys(*ids: str) -> FakeDatabase:
    database = FakeDatabase()
    async with database.write() as tx:
        for key_id in ids:
            await tx.keys.add(
                ApiKey(key_id, "led", key_id, frozenset({Scope.READ}), T0, None, None, key_id.encode())
            )
    return database


async def test_uses_are_counted_per_day_and_the_last_use_is_kept() -> None:
    database = await database_with_keys("k1", "k2")
    clock = Ticking()
    usage = KeyUsage(clock)
    for key_id in ("k1", "k1", "k2", "k1", "k1"):  # the 4th and 5th uses fall on the next day
        usage.record(key_id)
    assert await usage.flush(database) == 2
    assert len(usage) == 0
    async with database.read() as tx:
        assert await tx.keys.usage("k1") == [("2026-12-01", 4)]  # counted under the day of its last use
        assert await tx.keys.usage("k2") == [("2026-11-30", 1)]
        assert (await tx.keys.get("led", "k1")).last_used_at == clock.now  # type: ignore[union-attr]


async def test_a_failed_flush_keeps_its_uses_for_the_next() -> None:
    database = await database_with_keys("k1")
    usage = KeyUsage(Ticking())
    usage.record("k1")
    usage.record("k1")

    broken = database.write

    def refuse() -> object:
        raise Unavailable("down")

    database.write = refuse  # type: ignore[method-assign,assignment]
    with pytest.raises(Unavailable):
        await usage.flush(database)
    usage.record("k1")  # a use between the two flushes adds to what was kept
    database.write = broken  # type: ignore[method-assign]
    assert await usage.flush(database) == 1
    async with database.read() as tx:
        assert await tx.keys.usage("k1") == [("2026-11-30", 3)]


async def test_the_buffer_holds_at_most_its_bound_of_keys_and_counts_what_it_drops() -> None:
    usage = KeyUsage(Ticking(), max_keys=2)
    for key_id in ("k1", "k2", "k3", "k1", "k4"):
        usage.record(key_id)
    assert len(usage) == 2
    assert usage.dropped == 2  # k3 and k4; the known k1 still counts

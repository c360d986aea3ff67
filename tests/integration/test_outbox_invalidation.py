"""The outbox follower (``cache.invalidation.OutboxInvalidation``) on a real SQLite file.

It keeps an in-process cache in step with what other processes commit, by reading the event feed.
Events this process committed itself were written through already: it skips them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tally.cache.guarded import GuardedCache
from tally.cache.invalidation import OutboxInvalidation
from tally.cache.memory import MemoryCache
from tally.domain.keys import Ledger
from tally.services.ports import NewEvent
from tally.store.sqlite import SqliteDatabase
from tests.support import running_sqlite


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[SqliteDatabase]:
    async with running_sqlite(tmp_path / "feed.db") as db:
        async with db.write() as tx:
            await tx.ledgers.add(Ledger("ldg_1", "feed", await tx.now()))
        yield db


async def updated(database: SqliteDatabase, account_id: str) -> int:
    """Commit an ``account.updated`` event of ``account_id``; its pk."""
    data = {"id": account_id, "version": 2, "updated_at": datetime.now(UTC).isoformat()}
    async with database.write() as tx:
        return await tx.events.add(NewEvent("ldg_1", "account.updated", data, None), await tx.now())


async def test_it_applies_the_events_of_others_and_skips_its_own(database: SqliteDatabase) -> None:
    memory = MemoryCache(100)
    local = GuardedCache(memory, name="invalidation", timeout=1.0)
    applied: list[str] = []
    follower = OutboxInvalidation(database, local, poll=3600, keep=60, count=applied.append)
    await updated(database, "before")  # older than the cache: never applied
    await follower.catch_up()

    own = await updated(database, "mine")
    await follower.publish([("acct:ldg_1:mine", 7)], [own])  # this process committed it
    await updated(database, "theirs")
    await follower.catch_up()

    assert applied == ["outbox"]

    async def lands(account_id: str) -> bool:
        """Whether a state older than the event may still be cached (no marker keeps it out)."""
        return await memory.set(f"acct:ldg_1:{account_id}", b"old", ttl=60, version=0)

    assert not await lands("theirs")
    assert await lands("mine")
    assert await lands("before")

    await follower.catch_up()  # nothing new: nothing applied again
    assert applied == ["outbox"]

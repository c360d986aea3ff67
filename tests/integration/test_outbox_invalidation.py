"""The outbox follower (``cache.invalidation.OutboxInvalidation``) on a real SQLite file.

It keeps an in-process cache in step with what other processes commit, by reading the event feed.
Events this process committed itself were written through already: it skips them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tally.bootstrap import Tally
from tally.cache import invalidation
from tally.cache.guarded import GuardedCache
from tally.cache.invalidation import Drop, OutboxInvalidation
from tally.cache.memory import MemoryCache
from tally.cache.write_through import WriteThrough
from tally.domain.keys import Ledger
from tally.services.ports import Committed, NewEvent
from tally.store.sqlite import SqliteDatabase
from tests.support import (
    idem,
    new_ledger,
    open_account,
    running_sqlite,
    serving_in_process,
    settings_for,
    transfer,
)


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


async def nothing_to_write_through(_: Committed) -> None:
    pass


async def test_it_applies_the_events_of_others_and_skips_its_own(database: SqliteDatabase) -> None:
    memory = MemoryCache(100)
    local = GuardedCache(memory, name="invalidation", timeout=1.0)
    applied: list[str] = []
    follower = OutboxInvalidation(database, local, poll=3600, keep=60, count=applied.append)
    await updated(database, "before")  # older than the cache: never applied
    await follower.catch_up()

    database.listen_to_commits(nothing_to_write_through, follower.own)  # as this process's caches do
    await updated(database, "mine")
    database.listen_to_commits(nothing_to_write_through)  # as if another process committed
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


@pytest.mark.usefixtures("backend")
async def test_a_follower_reading_between_a_commit_and_its_write_through_skips_its_own_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The follower polls on its own timer, so it may read the feed after a commit and before that
    commit's write-through has run. It must still know the events as this process's own."""
    applied: list[list[Drop]] = []

    async def record(_local: GuardedCache, drops: list[Drop], _keep: float) -> None:
        applied.append(list(drops))

    monkeypatch.setattr(invalidation, "apply", record)
    tally = Tally(settings_for(tmp_path, worker_enabled=False, job_schedule=[]))
    follower = tally.caches.invalidation
    assert isinstance(follower, OutboxInvalidation)
    write_through = WriteThrough.__call__

    async def follow_first(self: WriteThrough, committed: Committed) -> None:
        await follower.catch_up()  # the poll comes first
        await write_through(self, committed)

    monkeypatch.setattr(WriteThrough, "__call__", follow_first)
    async with serving_in_process(tally) as client:
        keys = await new_ledger(client)
        await open_account(client, keys.write, id="world", normal_balance="debit", min_balance=None)
        await open_account(client, keys.write, id="alice")
        sent = await asyncio.gather(*(transfer(client, keys.write, "world", "alice", 1) for _ in range(20)))
        assert [response.status_code for response in sent] == [201] * 20
        batch = [{"debit_account_id": "world", "credit_account_id": "alice", "amount": 1}] * 50
        body = {"transfers": batch, "atomic": True}
        response = await client.post("/v1/transfers/batch", json=body, headers={**keys.write, **idem()})
        assert response.status_code == 201, response.text
        await follower.catch_up()
    assert applied == []


async def test_a_failing_events_listener_never_fails_the_committed_write(database: SqliteDatabase) -> None:
    def broken(_: object) -> None:
        raise RuntimeError("a listener's own bug")

    database.listen_to_commits(nothing_to_write_through, broken)
    pk = await updated(database, "committed")  # returns: the write committed, whatever the listener did
    async with database.read() as tx:
        assert (await tx.events.get(pk)) is not None

"""The outbox follower (``cache.invalidation.OutboxInvalidation``) on a real SQLite file.

It keeps an in-process cache in step with what other processes commit, by reading the event feed.
Events this process committed itself were written through already: it skips them.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from tally.bootstrap import Tally
from tally.cache import invalidation
from tally.cache.guarded import GuardedCache
from tally.cache.invalidation import Drop, OutboxInvalidation
from tally.cache.memory import MemoryCache
from tally.cache.write_through import WriteThrough
from tally.domain.errors import TransientConflict
from tally.domain.keys import Ledger
from tally.services.ports import Committed, NewEvent
from tally.store import sqlite as sqlite_store
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

    database.listen_to_commits(nothing_to_write_through, follower)  # as this process's caches do
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


def recorded_drops(monkeypatch: pytest.MonkeyPatch) -> list[list[Drop]]:
    """What the follower applies from now on, recorded instead of applied."""
    applied: list[list[Drop]] = []

    async def record(_local: GuardedCache, drops: list[Drop], _keep: float) -> None:
        applied.append(list(drops))

    monkeypatch.setattr(invalidation, "apply", record)
    return applied


def followed_only_by_the_test(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Tally, OutboxInvalidation]:
    """A Tally whose follower reads the feed only when the test calls ``catch_up``: its own polling
    task is not started, since two reads at once could each take the other's position as a start
    (one process runs one follower task). Reads go to the primary, which has every commit."""
    monkeypatch.setattr(OutboxInvalidation, "start", lambda _self: None)
    tally = Tally(settings_for(tmp_path, worker_enabled=False, job_schedule=[], replica_urls=[]))
    follower = tally.caches.invalidation
    assert isinstance(follower, OutboxInvalidation)
    return tally, follower


async def transfers_and_a_batch(tally: Tally, follower: OutboxInvalidation) -> None:
    """Two accounts, 20 concurrent transfers and a 50-transfer batch through ``tally``'s API; then
    the follower reads the feed to its end."""
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


@pytest.mark.usefixtures("backend")
async def test_a_follower_reading_between_a_commit_and_its_write_through_skips_its_own_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The follower polls on its own timer, so it may read the feed after a commit and before that
    commit's write-through has run. It must still know the events as this process's own."""
    applied = recorded_drops(monkeypatch)
    tally, follower = followed_only_by_the_test(tmp_path, monkeypatch)
    write_through = WriteThrough.__call__

    async def follow_first(self: WriteThrough, committed: Committed) -> None:
        await follower.catch_up()  # the poll comes first
        await write_through(self, committed)

    monkeypatch.setattr(WriteThrough, "__call__", follow_first)
    await transfers_and_a_batch(tally, follower)
    assert applied == []


@pytest.mark.usefixtures("backend")
async def test_a_follower_reading_between_the_commit_and_the_writers_next_turn_skips_its_own_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    """The COMMIT returns in a worker thread (SQLite) or from the server (PostgreSQL), and the
    follower's read may be served before the writer's task runs again: here it always is. The
    events must be known as this process's own by then (in a batch bench, 39 % were not)."""
    applied = recorded_drops(monkeypatch)
    tally, follower = followed_only_by_the_test(tmp_path, monkeypatch)
    polls: list[int] = []

    async def poll() -> None:
        if len(polls) % 2 == 0:  # not from inside the poll's own read (its COMMIT, on PostgreSQL)
            polls.append(1)
            await follower.catch_up()
            polls.append(1)

    if backend == "sqlite":
        commit_off_loop = sqlite_store._commit_off_loop

        async def commit_then_poll(conn: Connection) -> bool:
            cancelled = await commit_off_loop(conn)
            await poll()
            return cancelled

        monkeypatch.setattr(sqlite_store, "_commit_off_loop", commit_then_poll)
    else:
        commit = AsyncConnection.commit

        async def commit_then_poll_pg(self: AsyncConnection) -> None:
            await commit(self)
            await poll()

        monkeypatch.setattr(AsyncConnection, "commit", commit_then_poll_pg)
    await transfers_and_a_batch(tally, follower)
    assert len(polls) >= 2 * 3  # a poll after each commit: the accounts', the transfers', the batch's
    assert applied == []


class Told:
    """An events listener that notes what it is told and passes it on."""

    def __init__(self, follower: OutboxInvalidation) -> None:
        self.follower = follower
        self.committing_pks: list[int] = []

    def committing(self, events: Sequence[int]) -> None:
        self.committing_pks.extend(events)
        self.follower.committing(events)

    def abandoned(self, events: Sequence[int]) -> None:
        self.follower.abandoned(events)


async def test_the_pks_of_a_failed_commit_are_not_skipped_when_another_process_writes_under_them(
    database: SqliteDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The follower is told of a commit's events before the COMMIT is sent. When it fails, SQLite
    hands the freed rowids out again: the next process's events under them must be applied."""
    memory = MemoryCache(100)
    local = GuardedCache(memory, name="invalidation", timeout=1.0)
    applied: list[str] = []
    follower = OutboxInvalidation(database, local, poll=3600, keep=60, count=applied.append)
    await follower.catch_up()
    told = Told(follower)
    database.listen_to_commits(nothing_to_write_through, told)

    async def failing(_: Connection) -> bool:
        raise sqlite3.OperationalError("disk I/O error")

    with monkeypatch.context() as patched:
        patched.setattr(sqlite_store, "_commit_off_loop", failing)
        with pytest.raises(TransientConflict):  # the group's COMMIT failed: nothing applied
            await updated(database, "lost")
    database.listen_to_commits(nothing_to_write_through)  # as if another process committed
    theirs = await updated(database, "theirs")
    assert told.committing_pks == [theirs]  # the failed write's pk, given out again
    await follower.catch_up()

    assert applied == ["outbox"]
    assert not await memory.set("acct:ldg_1:theirs", b"old", ttl=60, version=0)


class Broken:
    def committing(self, _: Sequence[int]) -> None:
        raise RuntimeError("a listener's own bug")

    def abandoned(self, _: Sequence[int]) -> None:
        raise RuntimeError("a listener's own bug")


async def test_a_failing_events_listener_never_fails_the_committed_write(database: SqliteDatabase) -> None:
    database.listen_to_commits(nothing_to_write_through, Broken())
    pk = await updated(database, "committed")  # returns: the write committed, whatever the listener did
    async with database.read() as tx:
        assert (await tx.events.get(pk)) is not None

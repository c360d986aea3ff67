"""The webhook dispatcher on SQLite and PostgreSQL: pages that concern no subscription are read, not
written; a page that has subscribers writes its deliveries and its position together; a stored
position never goes back (ADR 0044).

The app runs with no workers, so the only dispatchers are the ones each test drives by hand.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tally.bootstrap import Tally
from tally.secretbox import new_key_text
from tally.services.ports import FeedPosition
from tally.services.webhooks import CONSUMER, PAGE, Dispatcher
from tests.support import (
    BACKENDS,
    LedgerKeys,
    new_ledger,
    open_account,
    primary_read,
    serving_in_process,
    settings_for,
    transfer,
)

pytestmark = pytest.mark.usefixtures("backend")


class NoWakeups:
    async def wait(self) -> None:
        await asyncio.Event().wait()


@dataclass
class Feed:
    tally: Tally
    client: httpx.AsyncClient
    keys: LedgerKeys

    async def transfers(self, count: int) -> None:
        for _ in range(count):
            response = await transfer(self.client, self.keys.write, "world", "alice", 1)
            assert response.status_code == 201, response.text

    async def stored(self) -> FeedPosition | None:
        async with primary_read(self.tally.database) as tx:
            return await tx.events.consumer_position(CONSUMER)

    async def tail(self) -> FeedPosition | None:
        async with primary_read(self.tally.database) as tx:
            return await tx.events.tail()

    def dispatcher(self) -> Dispatcher:
        return Dispatcher(self.tally.database, NoWakeups(), poll_seconds=60.0, max_attempts=3)


@pytest.fixture
async def feed(tmp_path: Path) -> AsyncIterator[Feed]:
    settings = settings_for(
        tmp_path,
        worker_enabled=False,
        job_schedule=[],
        hold_sweep_seconds=3600.0,
        secret_key=new_key_text(),
        webhook_allowed_hosts=["127.0.0.1"],
    )
    tally = Tally(settings)
    async with serving_in_process(tally, tokens=False) as client:
        keys = await new_ledger(client)
        await open_account(client, keys.write, id="world", normal_balance="debit", min_balance=None)
        await open_account(client, keys.write, id="alice")
        yield Feed(tally, client, keys)


def deliveries(directory: Path) -> int:
    return int(BACKENDS.rows(directory, "SELECT count(*) FROM deliveries")[0][0])


async def test_pages_without_subscribers_store_their_position_once_a_round_and_subscribed_pages_with_it(
    feed: Feed, tmp_path: Path
) -> None:
    await feed.transfers(2 * PAGE + 10)
    dispatcher = feed.dispatcher()
    read = [await dispatcher.dispatch()]
    while read[-1]:
        read.append(await dispatcher.dispatch())
    assert sum(read) >= 2 * PAGE + 10
    assert await feed.stored() is None  # nothing was written
    await dispatcher.store_position()
    assert await feed.stored() == await feed.tail()
    assert await feed.dispatcher().dispatch() == 0  # another dispatcher starts where it was stored

    response = await feed.client.post(
        "/v1/webhooks",
        json={"url": "http://127.0.0.1:9/hook", "event_types": ["transfer.created"]},
        headers=feed.keys.admin,
    )
    assert response.status_code == 201, response.text
    await feed.transfers(3)
    assert await dispatcher.dispatch() == 3
    # The page had subscribers: its deliveries and the position past it committed together.
    assert deliveries(tmp_path) == 3
    assert await feed.stored() == await feed.tail()
    assert await dispatcher.dispatch() == 0


async def test_two_dispatchers_of_one_feed_queue_each_delivery_once(feed: Feed, tmp_path: Path) -> None:
    response = await feed.client.post(
        "/v1/webhooks", json={"url": "http://127.0.0.1:9/hook", "event_types": ["*"]}, headers=feed.keys.admin
    )
    assert response.status_code == 201, response.text
    await feed.transfers(PAGE + 20)
    first, second = feed.dispatcher(), feed.dispatcher()
    while sum(await asyncio.gather(first.dispatch(), second.dispatch())) > 0:
        pass
    events = int(BACKENDS.rows(tmp_path, "SELECT count(*) FROM events")[0][0])
    after = int(BACKENDS.rows(tmp_path, "SELECT created_at FROM webhooks")[0][0])
    since = int(BACKENDS.rows(tmp_path, "SELECT count(*) FROM events WHERE created_at >= ?", (after,))[0][0])
    assert events > since >= PAGE + 20
    assert deliveries(tmp_path) == since


async def test_a_stored_position_never_goes_back(feed: Feed) -> None:
    database = feed.tally.database
    async with database.write() as tx:
        await tx.events.advance("test", FeedPosition(0, 20))
    async with database.write() as tx:
        await tx.events.advance("test", FeedPosition(0, 10))  # a slower consumer of the same name
    async with primary_read(database) as tx:
        assert await tx.events.consumer_position("test") == FeedPosition(0, 20)
    async with database.write() as tx:
        await tx.events.advance("test", FeedPosition(1, 5))  # later in the feed: a later xid
    async with primary_read(database) as tx:
        assert await tx.events.consumer_position("test") == FeedPosition(1, 5)

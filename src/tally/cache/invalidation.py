"""Event-based invalidation: what one process commits, the others' in-process caches drop.

The process that commits writes the new states through to its own cache and then tells the others:

- ``RedisInvalidation`` publishes each commit's ``(key, version)`` pairs on Redis pub/sub; every
  other process stores a tombstone at that version (an older load cannot fill the hole). Delivery
  takes milliseconds, but pub/sub keeps nothing for a process that was not listening: the TTL is the
  safety net.
- ``OutboxInvalidation`` needs no server besides the database: each process reads the event feed
  every ``TALLY_CACHE_INVALIDATION_POLL_MS`` and drops the accounts the new events name
  (``account.*`` carry the account's version; ``transfer.*`` name their legs' accounts, changed at
  the event's time). The bound is one poll interval plus the feed's horizon.

A shared cache (Redis or Memcached as ``TALLY_CACHE_URL``) needs neither: every process reads the
entry the commit wrote. The invalidation is best effort by design; it never fails a write.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import suppress
from datetime import datetime

import structlog

from tally.cache.entries import order_of
from tally.cache.guarded import GuardedCache
from tally.services.cache_ports import CacheUnavailable, InvalidationChannel
from tally.services.deadline import remaining
from tally.services.events import events_after, feed_tail
from tally.services.ports import Database, Event, FeedPosition

Drop = tuple[str, int | None]
_log = structlog.get_logger(__name__)
_ORIGIN = "@origin:"  # the first pair of each message names the process that sent it
_FEED_TYPES = ("account.created", "account.updated", "transfer.created", "transfer.posted",
               "transfer.voided", "transfer.expired")  # fmt: skip
_FEED_PAGE = 500
_OWN_EVENTS = 100_000  # pks of this process's own events kept to skip, at most


class RedisInvalidation:
    """Publishing follows every commit, so it is bounded like any cache call (``timeout`` and the
    budget); after a failure it pauses for ``QUIET_SECONDS`` rather than make every write wait on a
    server that is down. The other processes then keep their entries until the TTL."""

    QUIET_SECONDS = 1.0

    def __init__(
        self,
        channel: InvalidationChannel,
        local: GuardedCache,
        *,
        keep: float,
        timeout: float,
        count: Callable[[str], None],
    ) -> None:
        self._channel = channel
        self._local = local
        self._keep = keep
        self._timeout = timeout
        self._count = count
        self._origin = _ORIGIN + uuid.uuid4().hex
        self._task: asyncio.Task[None] | None = None
        self._quiet_until = 0.0

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="tally-cache-invalidation")

    async def publish(self, drops: Sequence[Drop]) -> None:
        if not drops or time.monotonic() < self._quiet_until:
            return
        try:
            async with asyncio.timeout(max(0.001, min(self._timeout, remaining(self._timeout)))):
                await self._channel.publish([(self._origin, None), *drops])
        except (CacheUnavailable, TimeoutError) as error:  # the others keep their entries until the TTL
            self._quiet_until = time.monotonic() + self.QUIET_SECONDS
            _log.warning("cache invalidation not published", error=repr(error), keys=len(drops))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        await self._channel.close()

    async def _listen(self) -> None:
        async for batch in self._channel.listen():
            if not batch or batch[0][0] == self._origin:
                continue  # this process wrote its own commits through already
            await apply(self._local, [pair for pair in batch if not pair[0].startswith(_ORIGIN)], self._keep)
            self._count("redis")


class OutboxInvalidation:
    def __init__(
        self,
        database: Database,
        local: GuardedCache,
        *,
        poll: float,
        keep: float,
        count: Callable[[str], None],
    ) -> None:
        self._database = database
        self._local = local
        self._poll = poll
        self._keep = keep
        self._count = count
        self._task: asyncio.Task[None] | None = None
        self._own: set[int] = set()  # pks of events this process committed and wrote through
        self._started = False  # whether the feed's tail was found
        self._position: FeedPosition | None = None  # where the feed was read to (None: its start)

    def start(self) -> None:
        self._task = asyncio.create_task(self._follow(), name="tally-cache-invalidation")

    async def publish(self, drops: Sequence[Drop]) -> None:
        """Nothing to send: the events are the message, written with the commit itself."""

    def committing(self, events: Sequence[int]) -> None:
        """``events`` are being committed by this process, which writes their changes through
        itself, so following the feed skips them. Told before the COMMIT is sent
        (``Database.listen_to_commits``): told with the write-through, after the commit's awaits,
        the follower read most of a batch's events as another process's (ADR 0045); told as the
        COMMIT returned, still 39 % of them, read by a poll that landed between the COMMIT and the
        writer's next turn on the event loop (ADR 0045, addendum)."""
        if len(self._own) + len(events) > _OWN_EVENTS:
            self._own.clear()  # events of types not followed are never met: forget, at worst redo
        self._own.update(events)

    def abandoned(self, events: Sequence[int]) -> None:
        """The COMMIT of ``events`` failed: skipping their pks would skip the events another
        process may write under them next."""
        self._own.difference_update(events)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task

    async def _follow(self) -> None:
        while True:
            try:
                await self.catch_up()
            except Exception as error:  # the database is down: try again next interval
                _log.warning("cache invalidation could not read the feed", error=repr(error))
            await asyncio.sleep(self._poll)

    async def catch_up(self) -> None:
        """Apply the events committed since the last call, but this process's own. The first call
        only finds the feed's tail: the cache starts empty, so only later events can make an entry
        stale."""
        if not self._started:
            self._position, self._started = await feed_tail(self._database), True
        while True:
            positions, others = await events_after(
                self._database, self._position, _FEED_TYPES, _FEED_PAGE, skip=self._own
            )
            self._own.difference_update(position.pk for position in positions)
            if others:
                await apply(self._local, drops_of(others), self._keep)
                self._count("outbox")
            if positions:
                self._position = positions[-1]
            if len(positions) < _FEED_PAGE:
                return


def drops_of(events: Sequence[Event]) -> list[Drop]:
    """The account entries these events make stale, with the version each change carries."""
    drops: list[Drop] = []
    for event in events:
        data = event.data
        if event.type.startswith("account."):
            updated_at = datetime.fromisoformat(data["updated_at"])
            drops.append((f"acct:{event.ledger_id}:{data['id']}", order_of(updated_at, data["version"])))
        else:
            # The transfer's accounts changed at the event's time (one clock per transaction);
            # version 0 within that microsecond keeps their new state, if already cached, in place.
            version = order_of(event.created_at, 0)
            drops.extend((f"acct:{event.ledger_id}:{leg['account_id']}", version) for leg in data["legs"])
    return drops


async def apply(local: GuardedCache, drops: Sequence[Drop], keep: float) -> None:
    for key, version in drops:
        if version is None:
            await local.delete(key)
        else:
            await local.set(key, b"", ttl=keep, version=version)

"""The caches of one process, assembled from settings: which strategy serves which kind of data.

| data | strategy | invalidation |
|---|---|---|
| accounts and balances | cache-aside + write-through with version | version, events, TTL |
| API key lookups | cache-aside; revocation written through | version, events, TTL |
| key ``last_used_at`` and usage counts | write-behind (``services.ledgers.KeyUsage``) | — |
| postings, transfers, entries | never cached: money is read from the database | — |

The invalidation channel is ``TALLY_CACHE_INVALIDATION``: ``redis://…`` (pub/sub), ``outbox``
(the event feed) or ``off``. By default: ``outbox`` for an in-process cache (a ``tally worker``,
another worker or another host may write the same database), ``off`` for Redis or Memcached,
which every process shares.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass

from tally.cache.accounts import AccountCache
from tally.cache.factory import open_cache, open_channel
from tally.cache.guarded import CacheHealth, CacheObserver, GuardedCache
from tally.cache.invalidation import OutboxInvalidation, RedisInvalidation
from tally.cache.keys import KeyCache
from tally.cache.policy import EntryPolicy
from tally.cache.write_through import WriteThrough
from tally.config import Settings
from tally.services.cache_ports import Cache
from tally.services.ports import Database

LookupCounter = Callable[[str, str, str], None]  # (cache, backend, result)


REPAIR_SECONDS = 1.0


@dataclass
class Caches:
    backend: Cache
    accounts: AccountCache
    keys: KeyCache
    invalidation: RedisInvalidation | OutboxInvalidation | None
    guarded: list[GuardedCache]
    _repairer: asyncio.Task[None] | None = None

    def start(self, *, invalidation: bool = True) -> None:
        """Start repairing failed write-throughs, and (``invalidation``) listening to the others."""
        if invalidation and self.invalidation is not None:
            self.invalidation.start()
        self._repairer = asyncio.create_task(self._repair(), name="tally-cache-repair")

    async def stop(self) -> None:
        if self._repairer is not None:
            self._repairer.cancel()
            with suppress(asyncio.CancelledError):
                await self._repairer
        if self.invalidation is not None:
            await self.invalidation.stop()
        await self.backend.close()

    async def _repair(self) -> None:
        while True:
            await asyncio.sleep(REPAIR_SECONDS)
            for cache in self.guarded:
                await cache.repair()


def build_caches(
    settings: Settings,
    database: Database,
    *,
    observer: CacheObserver | None = None,
    looked_up: LookupCounter | None = None,
    invalidated: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.time,
) -> Caches:
    """Build the caches and hook their write-through to ``database``'s commits."""
    cache = open_cache(
        settings.cache_url, max_entries=settings.cache_max_entries, timeout=settings.cache_timeout_ms / 1000
    )
    timeout = settings.cache_timeout_ms / 1000

    health = CacheHealth()  # one backend: a failure seen by one cache rests it for all
    made: list[GuardedCache] = []

    def guarded(name: str) -> GuardedCache:  # a metrics label per cache
        made.append(GuardedCache(cache, name=name, timeout=timeout, health=health, observer=observer))
        return made[-1]

    backend = cache.backend

    def count(name: str, result: str) -> None:
        if looked_up is not None:
            looked_up(name, backend, result)

    ttl, stale = settings.cache_ttl_ms / 1000, settings.cache_stale_ms / 1000
    key_ttl = settings.key_cache_ttl_ms / 1000
    channel = _channel(settings, backend)
    note = invalidated or (lambda _channel: None)
    invalidation: RedisInvalidation | OutboxInvalidation | None = None
    if channel == "outbox":
        poll = settings.cache_invalidation_poll_ms / 1000
        invalidation = OutboxInvalidation(
            database, guarded("invalidation"), poll=poll, keep=ttl + stale, count=note
        )
        key_ttl = min(key_ttl, poll)  # no event tells of a revocation: the poll interval bounds it
    elif channel is not None:
        invalidation = RedisInvalidation(
            open_channel(channel), guarded("invalidation"), keep=ttl + stale, timeout=timeout, count=note
        )
    accounts = AccountCache(
        guarded("accounts"),
        database,
        EntryPolicy(ttl, stale, count, clock),
        shared=backend != "memory",
        max_lag=settings.replica_max_lag_ms / 1000,
    )
    keys = KeyCache(guarded("api_keys"), database, EntryPolicy(key_ttl, stale, count, clock))
    own = invalidation if isinstance(invalidation, OutboxInvalidation) else None
    database.listen_to_commits(WriteThrough(accounts, keys, invalidation), own)
    return Caches(cache, accounts, keys, invalidation, made)


def _channel(settings: Settings, backend: str) -> str | None:
    """``outbox``, a Redis URL, or ``None`` (no channel)."""
    chosen = settings.cache_invalidation
    if chosen is None:
        # Another process may write the same database (`tally worker`, `--workers N`, another
        # host), and nothing tells this one: an in-process cache follows the feed. Cheap: one
        # indexed read per interval.
        return "outbox" if backend == "memory" else None
    if chosen.lower() == "off":
        return None
    if chosen.lower() == "outbox":
        return "outbox"
    return chosen  # open_channel refuses anything but redis:// and rediss://

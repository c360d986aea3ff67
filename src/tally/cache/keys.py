"""API key lookups in the cache: cache-aside by secret hash, revocations written through (ADR 0027).

Authentication runs on every request, so a cached lookup saves the one database read most
requests make. A revocation stores a tombstone at the "revoked" version (``entries.key_order``):
the next lookup reads the revoked key from the database, and no lookup that started before the
revocation can put the active key back. Other processes with in-process caches hear of it through
the invalidation channel; with the outbox channel, which carries no key events, key entries stay
fresh only as long as one poll interval, the bound a revocation takes to reach every process.

When no database answers, a cached key (revoked or not) still authenticates its requests, so that
``available`` reads can be served stale; a key never seen before is refused with 503.
"""

from __future__ import annotations

from collections.abc import Sequence

from tally.cache.entries import Entry, Remembered, decode_key, encode_key, key_order
from tally.cache.guarded import FAILED, GuardedCache
from tally.cache.loading import SingleFlight
from tally.cache.policy import EntryPolicy, look_up
from tally.domain.errors import Unavailable
from tally.domain.keys import ApiKey
from tally.services.consistency import lagging
from tally.services.ledgers import find_key
from tally.services.ports import Database

REVOKED = 1  # key_order of a revoked key


class KeyCache:
    name = "api_keys"

    def __init__(self, cache: GuardedCache, database: Database, policy: EntryPolicy) -> None:
        self._cache = cache
        self._database = database
        self._ttl = policy.ttl
        self._keep = policy.keep
        self._count = policy.count
        self._clock = policy.clock
        self._flight: SingleFlight[ApiKey | None] = SingleFlight()
        self._decode = Remembered(decode_key)  # a key is read on every request it authenticates

    @staticmethod
    def key(secret_hash: bytes) -> str:
        return f"key:{secret_hash.hex()}"

    async def lookup(self, secret_hash: bytes) -> ApiKey | None:
        if self._ttl <= 0:
            return await find_key(self._database, secret_hash)
        key = self.key(secret_hash)
        raw, entry = await look_up(self._cache, key, self._decode)  # unsure: a revocation not landed
        if entry is not None and self._clock() < entry.fresh_until:
            self._count(self.name, "hit")
            return entry.item
        self._count(self.name, "error" if raw is FAILED else "miss")
        try:
            return await self._flight.run(key, lambda: self._load(key, secret_hash))
        except Unavailable:
            if entry is None:
                raise
            self._count(self.name, "stale")
            return entry.item

    async def revoked(self, secret_hashes: Sequence[bytes]) -> list[tuple[str, int | None]]:
        drops: list[tuple[str, int | None]] = []
        for secret_hash in secret_hashes:
            key = self.key(secret_hash)
            await self._cache.set_or_repair(key, b"", ttl=self._keep, version=REVOKED)
            drops.append((key, REVOKED))
        return drops

    async def _load(self, key: str, secret_hash: bytes) -> ApiKey | None:
        found = await find_key(self._database, secret_hash)
        if found is not None and lagging() is None:
            now = self._clock()
            entry = Entry(found, now, now + self._ttl, None)
            value, version = encode_key(entry), key_order(found)
            await self._cache.set_or_repair(key, value, ttl=self._keep, version=version, must_land=False)
        return found

"""Accounts and their balances in the cache: cache-aside on reads, written through on commit,
served stale only when no database can answer (ADR 0027).

- **Cache-aside.** A read of ``available`` consistency looks in the cache first; a miss loads the
  account (one loader per key, ``loading``) and stores it with its version.
- **Write-through.** Every commit that changed an account stores the new state, carrying its
  version (``entries.account_order``), so a reader that loaded the older state before the commit
  can never put it back. An account with pending holds is stored as a tombstone instead: when it
  reads next depends on when its holds expire, which the next load works out.
- **Freshness.** An entry is fresh for ``TALLY_CACHE_TTL_MS``, and never past the next expiry of
  a hold on the account. A request carrying a consistency token is answered from an entry only when
  the entry covers the token; otherwise the database answers (and enforces the token).
- **Stale-if-error.** When the database answers ``Unavailable`` (primary down and no replica), an
  entry up to ``TALLY_CACHE_STALE_MS`` past its freshness is served, labelled ``Tally-Stale`` with
  ``Tally-As-Of``. ``strong`` reads never touch the cache, and writes never read from it: the cache
  never authorises a debit (DESIGN.md invariant 6).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from tally.cache.entries import Entry, account_order, decode_account, encode_account, readable
from tally.cache.guarded import FAILED, GuardedCache
from tally.cache.loading import WAIT_STEP, LoadLock, SingleFlight, waits
from tally.cache.policy import EntryPolicy, look_up
from tally.domain.accounts import Account
from tally.domain.errors import Unavailable
from tally.services.accounts import account_snapshot
from tally.services.consistency import Consistency, lagging, read_intent, report_lagging
from tally.services.ports import Committed, Database

_WRITES_IN_FLIGHT = 16  # concurrent cache writes of one commit (a batch changes many accounts)


class AccountCache:
    name = "accounts"

    def __init__(
        self, cache: GuardedCache, database: Database, policy: EntryPolicy, *, shared: bool, max_lag: float
    ) -> None:
        self._cache = cache
        self._database = database
        self._ttl = policy.ttl
        self._keep = policy.keep
        self._count = policy.count
        self._max_lag = max_lag
        self._clock = policy.clock
        self._flight: SingleFlight[tuple[Account, datetime]] = SingleFlight()
        self._lock = LoadLock(cache) if shared else None

    @staticmethod
    def key(ledger_id: str, account_id: str) -> str:
        return f"acct:{ledger_id}:{account_id}"

    @property
    def enabled(self) -> bool:
        return self._ttl > 0

    async def read(self, ledger_id: str, account_id: str) -> tuple[Account, datetime]:
        """The account as an ``available`` read shows it, and the moment it is current as of."""
        intent = read_intent()
        if not self.enabled or intent.level is Consistency.STRONG:
            snapshot = await account_snapshot(self._database, ledger_id, account_id)
            return snapshot.account, snapshot.at
        key = self.key(ledger_id, account_id)
        raw, entry = await look_up(self._cache, key, decode_account)
        usable = entry is not None and self._covers(entry, intent.token)
        now = self._clock()
        if entry is not None and usable and now < entry.fresh_until:
            self._count(self.name, "hit")
            # Labelled like the replica's answer it copies (ADR 0021), and while the primary is
            # down: writes that other processes committed before then may not have reached us.
            if entry.replica or not self._database.primary_up:
                report_lagging(_time(entry.as_of))
                return entry.item, _time(entry.as_of)
            return entry.item, _time(now)
        self._count(self.name, "error" if raw is FAILED else "miss")
        try:
            if intent.token is not None:  # loads honouring different tokens are not shared
                return await self._load(key, ledger_id, account_id)
            return await self._flight.run(key, lambda: self._load(key, ledger_id, account_id))
        except Unavailable:
            if entry is None or not usable:
                raise
            self._count(self.name, "stale")
            report_lagging(_time(entry.as_of))
            return entry.item, _time(entry.as_of)

    async def written(self, committed: Committed) -> list[tuple[str, int | None]]:
        """Write the committed states through; return the ``(key, version)`` others must drop."""
        if not self.enabled or not committed.accounts:
            return []
        now = self._clock()
        gate = asyncio.Semaphore(_WRITES_IN_FLIGHT)
        drops: list[tuple[str, int | None]] = []

        async def write(account: Account) -> None:
            key, version = self.key(account.ledger_id, account.id), account_order(account)
            held = account.balance.pending_debits or account.balance.pending_credits
            value = b"" if held else encode_account(Entry(account, now, now + self._ttl, committed.covers))
            async with gate:
                await self._cache.set_or_repair(key, value, ttl=self._keep, version=version)
            drops.append((key, version))

        if self._cache.in_process:  # no I/O to overlap: a task per account would only cost
            for account in committed.accounts:
                await write(account)
        else:
            await asyncio.gather(*(write(account) for account in committed.accounts))
        return drops

    async def _load(self, key: str, ledger_id: str, account_id: str) -> tuple[Account, datetime]:
        if self._lock is None or read_intent().token is not None:
            return await self._load_now(key, ledger_id, account_id)
        locked = await self._lock.acquire(key)
        if locked is True:
            try:
                return await self._load_now(key, ledger_id, account_id)
            finally:
                await self._lock.release(key)
        for _ in range(waits() if locked is False else 0):  # another process is loading it
            await asyncio.sleep(WAIT_STEP)
            raw = await self._cache.get(key)
            if raw is FAILED:
                break  # the cache went away: nothing to wait for
            waited = readable(decode_account, raw)
            if waited is not None and self._clock() < waited.fresh_until:
                return waited.item, _time(waited.as_of)
        return await self._load_now(key, ledger_id, account_id)

    async def _load_now(self, key: str, ledger_id: str, account_id: str) -> tuple[Account, datetime]:
        covers = self._database.read_covers()  # taken before the read: the read includes it
        snapshot = await account_snapshot(self._database, ledger_id, account_id)
        now = self._clock()
        # A replica within its lag bound is as good as the primary here: the version keeps an
        # older state from replacing a newer one. One further behind (the primary down) is not
        # cached: its state would pass for fresh for a whole TTL after the primary is back.
        replica = lagging()
        as_of = now if replica is None else replica.timestamp()
        if now - as_of <= self._max_lag:
            fresh = now + self._ttl
            if snapshot.changes_by is not None:
                fresh = min(fresh, snapshot.changes_by.timestamp())
            entry = Entry(snapshot.account, as_of, fresh, covers, replica=replica is not None)
            version = account_order(snapshot.account)
            value = encode_account(entry)
            await self._cache.set_or_repair(key, value, ttl=self._keep, version=version, must_land=False)
        return snapshot.account, snapshot.at

    def _covers(self, entry: Entry[Account], token: str | None) -> bool:
        if token is None:
            return True
        return entry.covers is not None and self._database.token_key(token) <= entry.covers


def _time(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)

"""Idempotent execution of a write: the key record and the effect commit in one transaction.

Contract (API.md, ADR 0005): under one (ledger, key), the first request that completes stores its
reply (every 2xx, and every 4xx decided while processing: rejections, lookups and rules checked
against the stored state); a later request with the same fingerprint gets that reply
again with no second effect; with another fingerprint it is refused (``IdempotencyKeyReused``); while
the first is still running in this process, it is refused (``IdempotencyKeyInUse``). A request that
fails otherwise commits nothing, so its key is free again.

Across processes the database orders two requests with one key: on SQLite the second waits for the
write lock, then finds the stored reply; on PostgreSQL the second one's insert of the key waits for
the first to commit, fails as a duplicate, and the retry (``services.retries``) finds the reply.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from tally.domain.errors import (
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    NotFound,
    Rejection,
    RequestError,
    TallyError,
)
from tally.services.ports import Database, IdempotencyRecord, StoredReply, Transaction
from tally.services.retries import retry_conflicts

RETENTION = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    key: str
    fingerprint: bytes


@dataclass(frozen=True, slots=True)
class Outcome:
    reply: StoredReply
    replayed: bool


Action = Callable[[Transaction], Awaitable[StoredReply]]
Reject = Callable[[TallyError], StoredReply]


class _RejectedAfterWrite(Exception):
    """Leaves the transaction so that a rejection found after a write rolls the write back."""

    def __init__(self, rejection: TallyError) -> None:
        super().__init__(rejection.detail)
        self.rejection = rejection


def replay(record: IdempotencyRecord, key: IdempotencyKey) -> Outcome:
    """What a request with ``key`` gets when ``record`` is stored under it: the stored reply again,
    or ``IdempotencyKeyReused`` if another request (another fingerprint) stored it."""
    if record.fingerprint != key.fingerprint:
        raise IdempotencyKeyReused("This Idempotency-Key was used with a different request.")
    return Outcome(record.reply, replayed=True)


class IdempotentExecutor:
    def __init__(self, database: Database) -> None:
        self._database = database
        self._in_flight: set[tuple[str, str]] = set()

    async def run(
        self, ledger_id: str, key: IdempotencyKey | None, action: Action, reject: Reject
    ) -> Outcome:
        """Run ``action`` in a write transaction, once per key; ``reject`` renders a rejection."""
        if key is None:
            return await self._attempt(ledger_id, None, action, reject)
        slot = self.claim(ledger_id, key)
        try:
            return await self._attempt(ledger_id, key, action, reject)
        finally:
            self.release(slot)

    @property
    def in_flight(self) -> int:
        """Keys claimed by requests under way in this process."""
        return len(self._in_flight)

    def claim(self, ledger_id: str, key: IdempotencyKey) -> tuple[str, str]:
        """Mark ``key`` in flight in this process, or refuse it (``IdempotencyKeyInUse``)."""
        slot = (ledger_id, key.key)
        if slot in self._in_flight:
            raise IdempotencyKeyInUse("A request with this Idempotency-Key is still in flight.")
        self._in_flight.add(slot)
        return slot

    def release(self, slot: tuple[str, str]) -> None:
        self._in_flight.discard(slot)

    async def run_claimed(
        self, ledger_id: str, key: IdempotencyKey, action: Action, reject: Reject
    ) -> Outcome:
        """``run`` for a key this caller has claimed (and releases)."""
        return await self._attempt(ledger_id, key, action, reject)

    async def _attempt(
        self, ledger_id: str, key: IdempotencyKey | None, action: Action, reject: Reject
    ) -> Outcome:
        try:
            return await retry_conflicts(lambda: self._transaction(ledger_id, key, action, reject))
        except _RejectedAfterWrite as rejected:
            # The rejection surfaced after a row was written: that write is rolled back, and the
            # rejection alone is stored in a fresh transaction.
            reply = reject(rejected.rejection)

            async def stored(_: Transaction) -> StoredReply:
                return reply

            return await retry_conflicts(lambda: self._transaction(ledger_id, key, stored, reject))

    async def _transaction(
        self, ledger_id: str, key: IdempotencyKey | None, action: Action, reject: Reject
    ) -> Outcome:
        async with self._database.write() as tx:
            if key is not None:
                record = await tx.idempotency.get(ledger_id, key.key)
                if record is not None:
                    return replay(record, key)
            try:
                reply = await action(tx)
            except (Rejection, NotFound, RequestError) as rejection:
                # Every 4xx decided while processing is the request's outcome, kept for retries.
                if tx.wrote:
                    raise _RejectedAfterWrite(rejection) from rejection
                reply = reject(rejection)
            if key is not None:
                now = await tx.now()
                await tx.idempotency.add(
                    IdempotencyRecord(ledger_id, key.key, key.fingerprint, reply, now),
                    keep_until=now + RETENTION,
                )
            return Outcome(reply, replayed=False)

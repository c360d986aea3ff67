"""Use cases of ledgers and their API keys, and authentication of a bearer secret."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from tally.domain.errors import NotFound, Unauthenticated
from tally.domain.ids import new_id
from tally.domain.keys import ApiKey, Ledger, Scope, hash_secret, new_secret, secret_kind
from tally.services.consistency import preferring_primary
from tally.services.ports import Database, Page, Transaction
from tally.services.retries import retry_conflicts

ROOT_KEY_HASH = "root_key_hash"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the root key (``ledger_id`` and ``key`` are ``None``) or a ledger's key."""

    ledger_id: str | None
    key: ApiKey | None

    @property
    def is_root(self) -> bool:
        return self.key is None

    @property
    def key_id(self) -> str | None:
        return None if self.key is None else self.key.id


ROOT = Principal(None, None)


async def create_ledger(tx: Transaction, name: str) -> Ledger:
    ledger = Ledger(new_id("led"), name, await tx.now())
    await tx.ledgers.add(ledger)
    return ledger


async def create_key(
    tx: Transaction, ledger_id: str, name: str, scopes: frozenset[Scope]
) -> tuple[ApiKey, str]:
    """Create a key; returns it with its secret, which is shown this once and never stored."""
    await require_ledger(tx, ledger_id)
    secret = new_secret("key")
    key = ApiKey(
        id=new_id("key"),
        ledger_id=ledger_id,
        name=name,
        scopes=scopes,
        created_at=await tx.now(),
        revoked_at=None,
        last_used_at=None,
        secret_hash=hash_secret(secret),
    )
    await tx.keys.add(key)
    return key, secret


async def revoke_key(tx: Transaction, ledger_id: str, key_id: str) -> None:
    await require_ledger(tx, ledger_id)
    key = await tx.keys.get(ledger_id, key_id)
    if key is None:
        raise NotFound(f"Key {key_id} does not exist.")
    if key.revoked_at is None:
        await tx.keys.revoke(ledger_id, key_id, await tx.now())


async def list_keys(database: Database, ledger_id: str, *, after: int | None, limit: int) -> Page[ApiKey]:
    async with database.read() as tx:
        await require_ledger(tx, ledger_id)
        return await tx.keys.list(ledger_id, after=after, limit=limit)


async def require_ledger(tx: Transaction, ledger_id: str) -> Ledger:
    ledger = await tx.ledgers.get(ledger_id)
    if ledger is None:
        raise NotFound(f"Ledger {ledger_id} does not exist.")
    return ledger


class KeyUsage:
    """Write-behind of each key's ``last_used_at`` (ADR 0013).

    Authentication only records the time in memory; ``flush`` writes what was recorded in one
    transaction. The composition root flushes on an interval and at shutdown, so a crash loses at
    most one interval of ``last_used_at`` updates and nothing else. The buffer holds one entry per
    key used since the last flush, so its size is bounded by the number of keys.
    """

    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._clock = clock
        self._pending: dict[str, datetime] = {}

    def record(self, key_id: str) -> None:
        self._pending[key_id] = self._clock()

    def __len__(self) -> int:
        return len(self._pending)

    async def flush(self, database: Database) -> int:
        """Write the recorded times; return how many keys were touched."""
        pending, self._pending = self._pending, {}
        if pending:
            try:
                async with database.write() as tx:
                    for key_id, at in pending.items():
                        await tx.keys.touch(key_id, at)
            except BaseException:
                # Keep what could not be written for the next flush (newer times win).
                self._pending = {**pending, **self._pending}
                raise
        return len(pending)


class Authenticator:
    """Turns a bearer secret into a ``Principal``.

    A secret with a bad prefix or checksum is refused before any database work. The root key is
    compared by hash in constant time; a ledger key is found by the hash of its secret.
    """

    def __init__(self, database: Database, root_key_hash: bytes, usage: KeyUsage) -> None:
        self._database = database
        self._root_key_hash = root_key_hash
        self._usage = usage

    async def authenticate(self, secret: str) -> Principal:
        kind = secret_kind(secret)
        if kind is None:
            raise Unauthenticated("The API key is malformed.")
        digest = hash_secret(secret)
        if kind == "root":
            if hmac.compare_digest(digest, self._root_key_hash):
                return ROOT
            raise Unauthenticated("The API key is not valid.")
        with preferring_primary():  # a revoked key is refused at once while the primary answers
            async with self._database.read() as tx:
                key = await tx.keys.by_hash(digest)
        if key is None or not hmac.compare_digest(key.secret_hash, digest):
            raise Unauthenticated("The API key is not valid.")
        if key.revoked_at is not None:
            raise Unauthenticated("The API key has been revoked.")
        self._usage.record(key.id)
        return Principal(key.ledger_id, key)


async def root_key_hash(database: Database, configured: str | None) -> tuple[bytes, str | None]:
    """The root key's hash, and the new secret when one had to be generated (first start only).

    A configured key wins. Otherwise the hash stored at first start is used; when there is none,
    a key is generated and only its hash stored. Two processes starting at once agree on one key.
    """
    if configured is not None:
        return hash_secret(configured), None
    async with database.read() as tx:
        stored = await tx.instance.get(ROOT_KEY_HASH)
    if stored is not None:
        return stored, None
    secret = new_secret("root")

    async def put() -> bytes:
        async with database.write() as tx:
            return await tx.instance.put_if_absent(ROOT_KEY_HASH, hash_secret(secret))

    kept = await retry_conflicts(put)  # another process may be storing its own at this moment
    return kept, secret if kept == hash_secret(secret) else None

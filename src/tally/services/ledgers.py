"""Use cases of ledgers and their API keys, and authentication of a bearer secret."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

from tally.domain.errors import KeyNotActive, NotFound, Unauthenticated, ValidationFailed
from tally.domain.ids import new_id
from tally.domain.keys import ApiKey, Ledger, Scope, hash_secret, new_secret, secret_kind
from tally.services import audit
from tally.services.audit import Actor, AuditAction
from tally.services.consistency import preferring_primary
from tally.services.ports import Database, Page, Transaction
from tally.services.retries import retry_conflicts
from tally.services.views import timestamp

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


async def create_ledger(tx: Transaction, name: str, actor: Actor) -> Ledger:
    """Create a ledger; the act is recorded on the new ledger (the root key's acts have no other)."""
    ledger = Ledger(new_id("led"), name, await tx.now())
    await tx.ledgers.add(ledger)
    await audit.record(
        tx,
        actor,
        AuditAction.LEDGER_CREATED,
        ledger_id=ledger.id,
        target=("ledger", ledger.id),
        details={"name": name},
    )
    return ledger


async def create_key(
    tx: Transaction,
    ledger_id: str,
    name: str,
    scopes: frozenset[Scope],
    actor: Actor,
    *,
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """Create a key; returns it with its secret, which is shown this once and never stored.

    From ``expires_at`` on, the key is refused as if revoked; it must be in the future (database clock).
    """
    await require_ledger(tx, ledger_id)
    if expires_at is not None and expires_at <= await tx.now():
        raise ValidationFailed.at(("body", "expires_at"), "expires_at must be in the future.")
    key, secret = await _new_key(tx, ledger_id, name, scopes, expires_at)
    await audit.record(
        tx,
        actor,
        AuditAction.KEY_CREATED,
        ledger_id=ledger_id,
        target=("key", key.id),
        details={"name": name, "scopes": _scope_names(scopes), "expires_at": timestamp(expires_at)},
    )
    return key, secret


async def rotate_key(
    tx: Transaction, ledger_id: str, key_id: str, actor: Actor, *, overlap: timedelta
) -> tuple[ApiKey, str]:
    """Replace a working key: a new key with its name and scopes (and no expiry), and the old one set
    to expire ``overlap`` from now — or at its own expiry, when that comes first. Both work meanwhile.

    ``KeyNotActive`` for a revoked or expired key: what it could do is over, so nothing carries on.
    """
    await require_ledger(tx, ledger_id)
    old = await tx.keys.get(ledger_id, key_id)
    if old is None:
        raise NotFound(f"Key {key_id} does not exist.")
    now = await tx.now()
    if old.revoked_at is not None or old.expired(now):
        raise KeyNotActive(f"Key {key_id} is {'revoked' if old.revoked_at else 'expired'}.")
    new, secret = await _new_key(tx, ledger_id, old.name, old.scopes, None)
    old_expires_at = now + overlap if old.expires_at is None else min(old.expires_at, now + overlap)
    await tx.keys.expire(ledger_id, key_id, old_expires_at)
    await audit.record(
        tx,
        actor,
        AuditAction.KEY_ROTATED,
        ledger_id=ledger_id,
        target=("key", key_id),
        details={
            "new_key_id": new.id,
            "old_key_expires_at": timestamp(old_expires_at),
            "scopes": _scope_names(old.scopes),
        },
    )
    return new, secret


async def _new_key(
    tx: Transaction, ledger_id: str, name: str, scopes: frozenset[Scope], expires_at: datetime | None
) -> tuple[ApiKey, str]:
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
        expires_at=expires_at,
    )
    await tx.keys.add(key)
    return key, secret


def _scope_names(scopes: frozenset[Scope]) -> list[str]:
    return sorted(scope.value for scope in scopes)


async def revoke_key(tx: Transaction, ledger_id: str, key_id: str, actor: Actor) -> None:
    """Revoke a key at once; revoking a revoked key changes and records nothing."""
    await require_ledger(tx, ledger_id)
    key = await tx.keys.get(ledger_id, key_id)
    if key is None:
        raise NotFound(f"Key {key_id} does not exist.")
    if key.revoked_at is None:
        await tx.keys.revoke(ledger_id, key_id, await tx.now())
        await audit.record(tx, actor, AuditAction.KEY_REVOKED, ledger_id=ledger_id, target=("key", key_id))


async def list_keys(database: Database, ledger_id: str, *, after: int | None, limit: int) -> Page[ApiKey]:
    async with database.read() as tx:
        await require_ledger(tx, ledger_id)
        return await tx.keys.list(ledger_id, after=after, limit=limit)


async def key_usage(database: Database, ledger_id: str, key_id: str) -> Sequence[tuple[str, int]]:
    """The key's requests per UTC day, oldest first, as flushed so far (ADR 0028)."""
    async with database.read() as tx:
        await require_ledger(tx, ledger_id)
        if await tx.keys.get(ledger_id, key_id) is None:
            raise NotFound(f"Key {key_id} does not exist.")
        return await tx.keys.usage(key_id)


async def require_ledger(tx: Transaction, ledger_id: str) -> Ledger:
    ledger = await tx.ledgers.get(ledger_id)
    if ledger is None:
        raise NotFound(f"Ledger {ledger_id} does not exist.")
    return ledger


@dataclass(slots=True)
class _Use:
    last: datetime
    requests: int


class KeyUsage:
    """Write-behind of each key's ``last_used_at`` and daily request count (ADR 0028).

    Authentication only records the use in memory; ``flush`` writes what was recorded in one
    transaction. The composition root flushes every ``TALLY_KEY_USAGE_FLUSH_MS`` and at shutdown,
    so a crash loses at most one interval of usage and nothing else. The buffer holds one entry per
    key used since the last flush, at most ``max_keys``: uses of further keys are dropped (and
    counted) rather than let memory grow. Postings and balances are never written behind.
    """

    def __init__(
        self, clock: Callable[[], datetime] = lambda: datetime.now(UTC), *, max_keys: int = 10_000
    ) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._pending: dict[str, _Use] = {}
        self.dropped = 0  # uses not recorded because the buffer was full

    def record(self, key_id: str) -> None:
        now = self._clock()
        use = self._pending.get(key_id)
        if use is not None:
            use.last, use.requests = max(use.last, now), use.requests + 1
        elif len(self._pending) < self._max_keys:
            self._pending[key_id] = _Use(now, 1)
        else:
            self.dropped += 1

    def __len__(self) -> int:
        return len(self._pending)

    async def flush(self, database: Database) -> int:
        """Write the recorded uses; return how many keys were written.

        A flush that fails keeps its uses for the next one. Should the failure hide a commit (the
        connection lost while committing), those requests are counted twice: counts are usage
        statistics, not money, and the bounded over-count is stated in ADR 0028.
        """
        pending, self._pending = self._pending, {}
        if pending:
            try:
                async with database.write() as tx:
                    for key_id, use in sorted(pending.items()):
                        await tx.keys.touch(key_id, use.last)
                        await tx.keys.count_usage(key_id, use.last.strftime("%Y-%m-%d"), use.requests)
            except BaseException:
                for key_id, use in pending.items():  # keep them for the next flush
                    newer = self._pending.get(key_id)
                    if newer is not None:
                        use.last, use.requests = max(use.last, newer.last), use.requests + newer.requests
                    self._pending[key_id] = use
                raise
        return len(pending)


KeyLookup = Callable[[bytes], Awaitable[ApiKey | None]]


async def find_key(database: Database, secret_hash: bytes) -> ApiKey | None:
    """The key with this secret hash, read on the primary while it answers."""
    with preferring_primary():  # a revoked key is refused at once while the primary answers
        async with database.read() as tx:
            return await tx.keys.by_hash(secret_hash)


class Authenticator:
    """Turns a bearer secret into a ``Principal``.

    A secret with a bad prefix or checksum is refused before any database work. The root key is
    compared by hash in constant time; a ledger key is found by the hash of its secret. A key's
    expiry is compared with ``clock`` at every request, so a cached lookup (which may be older than
    the expiry) never lets an expired key through.
    """

    def __init__(
        self,
        database: Database,
        root_key_hash: bytes,
        usage: KeyUsage,
        lookup: KeyLookup | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._root_key_hash = root_key_hash
        self._usage = usage
        self._clock = clock
        self._lookup = lookup or partial(find_key, database)  # the key cache, when there is one

    async def authenticate(self, secret: str) -> Principal:
        kind = secret_kind(secret)
        if kind is None:
            raise Unauthenticated("The API key is malformed.")
        digest = hash_secret(secret)
        if kind == "root":
            if hmac.compare_digest(digest, self._root_key_hash):
                return ROOT
            raise Unauthenticated("The API key is not valid.")
        key = await self._lookup(digest)
        if key is None or not hmac.compare_digest(key.secret_hash, digest):
            raise Unauthenticated("The API key is not valid.")
        if key.revoked_at is not None:
            raise Unauthenticated("The API key has been revoked.")
        if key.expired(self._clock()):
            raise Unauthenticated("The API key has expired.")
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

"""What a cache entry holds, and its bytes (orjson): an account or an API key with its freshness.

Entries carry wall-clock times (``fresh_until``, ``as_of`` in epoch seconds), not monotonic ones:
a Redis or Memcached entry is read by every process. ``covers`` is the ``Database.token_key`` the
entry's state includes every write up to (``None``: no promise, so no request carrying a
consistency token is answered from it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

import orjson

from tally.domain.accounts import Account, AccountStatus, Balance, Bounds, NormalBalance
from tally.domain.keys import ApiKey, Scope

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Entry(Generic[T]):
    item: T
    as_of: float  # when the item was known current (epoch seconds)
    fresh_until: float  # served as current until then; after, only when no database answers
    covers: int | None
    replica: bool = False  # loaded from a replica: its hits are labelled stale, as the load was


def account_order(account: Account) -> int:
    """The version a cache stores an account under: later states of one account order higher.

    ``updated_at`` moves with every change, balances and PATCHes alike, in commit order (a write
    reads its time after its locks, ADR 0020); ``version`` separates two changes within one
    microsecond. Shifted by 12 bits the pair stays below 2**63 for the next centuries.
    """
    return order_of(account.updated_at, account.version)


def order_of(updated_at: datetime, version: int) -> int:
    return (_micros(updated_at) << 12) | (version & 0xFFF)


def key_order(key: ApiKey) -> int:
    """Revocation is final: a revoked key's entry is never replaced by an older, active one."""
    return 1 if key.revoked_at is not None else 0


def readable(decode: Callable[[bytes], Entry[T]], raw: object) -> Entry[T] | None:
    """The entry in ``raw``; ``None`` for a miss, a tombstone, or bytes this version cannot read
    (written by another release during a rolling upgrade: a miss, never an error)."""
    if not isinstance(raw, bytes) or not raw:
        return None
    try:
        return decode(raw)
    except (ValueError, KeyError, TypeError):
        return None


class Remembered(Generic[T]):
    """``decode``, remembering the last ``size`` entries decoded by their bytes.

    An entry read again unchanged (an API key, on every request it authenticates) is not parsed
    and built again: the same bytes always decode to the same entry, and entries are immutable.
    With the in-process cache the bytes are the very object stored, whose hash Python keeps.
    """

    def __init__(self, decode: Callable[[bytes], Entry[T]], size: int = 1024) -> None:
        self._decode = decode
        self._size = size
        self._decoded: dict[bytes, Entry[T]] = {}

    def __call__(self, raw: bytes) -> Entry[T]:
        entry = self._decoded.get(raw)
        if entry is None:
            entry = self._decode(raw)
            if len(self._decoded) >= self._size:
                self._decoded.clear()
            self._decoded[raw] = entry
        return entry


def encode_account(entry: Entry[Account]) -> bytes:
    a = entry.item
    return _dump(
        entry,
        {
            "pk": a.pk, "ledger_id": a.ledger_id, "id": a.id, "name": a.name, "currency": a.currency,
            "normal_balance": a.normal_balance.value, "min": a.bounds.min_balance,
            "max": a.bounds.max_balance, "status": a.status.value, "metadata": a.metadata,
            "posted": a.balance.posted, "pending_debits": a.balance.pending_debits,
            "pending_credits": a.balance.pending_credits, "version": a.version,
            "created_at": _micros(a.created_at), "updated_at": _micros(a.updated_at),
        },
    )  # fmt: skip


def decode_account(raw: bytes) -> Entry[Account]:
    entry, a = _load(raw)
    account = Account(
        pk=a["pk"],
        ledger_id=a["ledger_id"],
        id=a["id"],
        name=a["name"],
        currency=a["currency"],
        normal_balance=NormalBalance(a["normal_balance"]),
        bounds=Bounds(a["min"], a["max"]),
        status=AccountStatus(a["status"]),
        metadata=a["metadata"],
        balance=Balance(a["posted"], a["pending_debits"], a["pending_credits"]),
        version=a["version"],
        created_at=_time(a["created_at"]),
        updated_at=_time(a["updated_at"]),
    )
    return Entry(account, *entry)


def encode_key(entry: Entry[ApiKey]) -> bytes:
    k = entry.item
    return _dump(
        entry,
        {
            "id": k.id, "ledger_id": k.ledger_id, "name": k.name,
            "scopes": sorted(scope.value for scope in k.scopes), "created_at": _micros(k.created_at),
            "revoked_at": None if k.revoked_at is None else _micros(k.revoked_at),
            "expires_at": None if k.expires_at is None else _micros(k.expires_at),
            "secret_hash": k.secret_hash.hex(),
        },
    )  # fmt: skip


def decode_key(raw: bytes) -> Entry[ApiKey]:
    entry, k = _load(raw)
    key = ApiKey(
        id=k["id"],
        ledger_id=k["ledger_id"],
        name=k["name"],
        scopes=frozenset(Scope(scope) for scope in k["scopes"]),
        created_at=_time(k["created_at"]),
        revoked_at=None if k["revoked_at"] is None else _time(k["revoked_at"]),
        last_used_at=None,  # written behind (KeyUsage); a cached copy would only be older
        secret_hash=bytes.fromhex(k["secret_hash"]),
        # An entry of a release before key expiry (ADR 0036) has none: during a rolling upgrade,
        # such an entry lets an expiring key pass until it goes stale (TALLY_KEY_CACHE_TTL_MS).
        expires_at=None if k.get("expires_at") is None else _time(k["expires_at"]),
    )
    return Entry(key, *entry)


def _dump(entry: Entry[Any], item: dict[str, Any]) -> bytes:
    header = {"at": entry.as_of, "fresh": entry.fresh_until, "cov": entry.covers, "rep": entry.replica}
    return orjson.dumps({"i": item, **header})


def _load(raw: bytes) -> tuple[tuple[float, float, int | None, bool], dict[str, Any]]:
    data = orjson.loads(raw)
    return (data["at"], data["fresh"], data["cov"], bool(data.get("rep"))), data["i"]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _micros(at: datetime) -> int:
    return (at - _EPOCH) // _MICROSECOND  # exact, unlike timestamp() * 1e6


def _time(micros: int) -> datetime:
    return _EPOCH + micros * _MICROSECOND

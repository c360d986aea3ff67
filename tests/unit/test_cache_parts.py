"""The parts of the caching strategies that need no server: entries, orders, loaders, invalidations.

In words:
- an entry's bytes give back the same account or key, and its freshness;
- later states of one account order higher, a PATCH included (same version, later time);
- a revoked key orders above the active one, so a stale load never brings it back;
- concurrent loads of one key run once, and each waiter gets the result or the failure;
- a cancelled loader does not cancel its waiters: they load for themselves;
- events name the entries they make stale, with versions that keep newer states in place.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from tally.cache.entries import (
    Entry,
    Remembered,
    account_order,
    decode_account,
    decode_key,
    encode_account,
    encode_key,
    key_order,
    order_of,
    readable,
)
from tally.cache.invalidation import drops_of
from tally.cache.loading import SingleFlight
from tally.domain.accounts import Account, AccountStatus, Balance, Bounds, NormalBalance
from tally.domain.errors import Unavailable
from tally.domain.keys import ApiKey, Scope
from tally.services.ports import Event, FeedPosition

AT = datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=UTC)


def account(**changes: object) -> Account:
    values: dict[str, object] = {
        "pk": 7, "ledger_id": "led_1", "id": "alice", "name": "Alice", "currency": "EUR",
        "normal_balance": NormalBalance.CREDIT, "bounds": Bounds(-50, 10_000), "status": AccountStatus.OPEN,
        "metadata": {"tier": "gold", "n": [1, 2]}, "balance": Balance(120, 30, 5), "version": 9,
        "created_at": AT - timedelta(days=1), "updated_at": AT,
    }  # fmt: skip
    values.update(changes)
    return Account(**values)  # type: ignore[arg-type]


def test_an_account_entry_round_trips_with_its_freshness() -> None:
    entry = Entry(account(), as_of=1.5, fresh_until=31.5, covers=42, replica=True)
    back = decode_account(encode_account(entry))
    assert back == entry


def test_a_key_entry_round_trips_without_its_last_use() -> None:
    key = ApiKey("key_1", "led_1", "reader", frozenset({Scope.READ}), AT, None, AT, b"\x01\x02")
    back = decode_key(encode_key(Entry(key, 1.0, 2.0, None)))
    assert back.item == replace(key, last_used_at=None)
    assert (back.as_of, back.fresh_until, back.covers) == (1.0, 2.0, None)


def test_remembered_decodes_each_bytes_once_and_forgets_past_its_size() -> None:
    decoded: list[bytes] = []

    def decode(raw: bytes) -> Entry[ApiKey]:
        decoded.append(raw)
        return decode_key(raw)

    key = ApiKey("key_1", "led_1", "reader", frozenset({Scope.READ}), AT, None, None, b"\x01")
    fresh, later = encode_key(Entry(key, 1.0, 2.0, None)), encode_key(Entry(key, 1.0, 3.0, None))
    remembered = Remembered(decode, size=2)
    first = remembered(fresh)
    assert remembered(bytes(fresh)) is first  # equal bytes, another object: not decoded again
    assert remembered(later).fresh_until == 3.0  # another entry (a reload): decoded
    assert decoded == [fresh, later]
    remembered(encode_key(Entry(key, 1.0, 4.0, None)))  # a third: the two remembered are forgotten
    assert remembered(fresh) == first
    assert len(decoded) == 4
    with pytest.raises(ValueError, match="invalid literal"):
        remembered(b"not json")  # as decode_key raises: readable() makes it a miss


def test_later_states_of_an_account_order_higher() -> None:
    first = account()
    paid = account(version=10, updated_at=AT + timedelta(microseconds=1))
    renamed = account(version=10, name="A.", updated_at=AT + timedelta(seconds=1))
    same_instant = account(version=11, updated_at=AT + timedelta(microseconds=1))
    assert account_order(first) < account_order(paid) < account_order(same_instant) < account_order(renamed)
    assert account_order(renamed) < 2**63  # fits every backend's version


def test_a_revoked_key_orders_above_the_active_one() -> None:
    active = ApiKey("key_1", "led_1", "k", frozenset({Scope.READ}), AT, None, None, b"h")
    revoked = ApiKey("key_1", "led_1", "k", frozenset({Scope.READ}), AT, AT, None, b"h")
    assert key_order(active) < key_order(revoked)


async def test_concurrent_loads_of_one_key_run_once() -> None:
    flight: SingleFlight[int] = SingleFlight()
    release = asyncio.Event()
    calls = 0

    async def load() -> int:
        nonlocal calls
        calls += 1
        await release.wait()
        return 42

    waiting = [asyncio.create_task(flight.run("acct:1", load)) for _ in range(20)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*waiting) == [42] * 20
    assert calls == 1
    assert await flight.run("acct:1", load) == 42  # done: the next miss loads again
    assert calls == 2


async def test_every_waiter_sees_the_loaders_failure() -> None:
    flight: SingleFlight[int] = SingleFlight()
    release = asyncio.Event()

    async def load() -> int:
        await release.wait()
        raise Unavailable("down")

    waiting = [asyncio.create_task(flight.run("k", load)) for _ in range(5)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(result, Unavailable) for result in results)


async def test_a_cancelled_loader_leaves_its_waiters_to_load_for_themselves() -> None:
    flight: SingleFlight[str] = SingleFlight()
    started = asyncio.Event()

    async def stuck() -> str:
        started.set()
        await asyncio.Event().wait()
        return "never"

    async def quick() -> str:
        return "own"

    leader = asyncio.create_task(flight.run("k", stuck))
    await started.wait()
    waiter = asyncio.create_task(flight.run("k", quick))
    await asyncio.sleep(0)
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    assert await waiter == "own"


def event(type_: str, data: dict[str, object], at: datetime = AT) -> Event:
    return Event(1, "evt_1", "led_1", type_, data, None, at, FeedPosition(0, 1))


def test_events_name_the_accounts_they_make_stale() -> None:
    updated = event(
        "account.updated", {"id": "alice", "version": 9, "updated_at": "2026-11-30T12:00:00.123456Z"}
    )
    legs = [{"account_id": "alice"}, {"account_id": "bob"}]
    moved = event("transfer.created", {"id": "tr_1", "legs": legs}, AT + timedelta(seconds=1))
    later = AT + timedelta(seconds=1)
    assert drops_of([updated, moved]) == [
        ("acct:led_1:alice", account_order(account())),
        ("acct:led_1:alice", order_of(later, 0)),
        ("acct:led_1:bob", order_of(later, 0)),
    ]
    # The transfer's own state (same instant, its version) is not older than the tombstone.
    assert order_of(later, 0) <= account_order(account(version=10, updated_at=later))


def test_an_entry_this_release_cannot_read_is_a_miss_not_an_error() -> None:
    assert readable(decode_account, b"") is None  # a tombstone
    assert readable(decode_account, None) is None
    assert readable(decode_account, b'{"i": {"id": "alice"}, "at": 1, "fresh": 2, "cov": null}') is None
    assert readable(decode_account, b"\x00not json") is None
    entry = Entry(account(), as_of=1.0, fresh_until=2.0, covers=None)
    assert readable(decode_account, encode_account(entry)) == entry

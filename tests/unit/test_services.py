"""Use cases of accounts and transfers, and idempotent execution, on the in-memory fake database."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import orjson
import pytest

from tally.domain.accounts import Account, AccountStatus, Bounds, Direction, NormalBalance
from tally.domain.errors import (
    AccountClosed,
    AccountNotEmpty,
    IdConflict,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    InsufficientFunds,
    NotFound,
    TallyError,
    ValidationFailed,
)
from tally.domain.transfers import LegRequest, Transfer, TransferRequest
from tally.services.accounts import ChangeAccount, OpenAccount, balance_as_of, change_account, open_account
from tally.services.audit import Actor
from tally.services.idempotency import IdempotencyKey, IdempotentExecutor
from tally.services.ports import StoredReply, Transaction
from tally.services.transfers import create_transfer
from tests.fakes import FakeClock, FakeDatabase

LEDGER = "led_test"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db(clock: FakeClock) -> FakeDatabase:
    return FakeDatabase(clock)


async def open_(
    db: FakeDatabase,
    account_id: str | None,
    *,
    side: NormalBalance = NormalBalance.CREDIT,
    bounds: Bounds | None = None,
    currency: str = "USD",
    request_hash: bytes = b"open",
) -> Account:
    command = OpenAccount(currency, account_id, normal_balance=side, bounds=bounds or Bounds())
    async with db.write() as tx:
        account, _ = await open_account(tx, LEDGER, command, request_hash=request_hash, request_id="r-open")
    return account


async def world_and_alice(db: FakeDatabase) -> tuple[Account, Account]:
    world = await open_(db, "world", side=NormalBalance.DEBIT, bounds=Bounds(min_balance=None))
    return world, await open_(db, "alice")


def pay(debit: str, credit: str, amount: int, transfer_id: str | None = None) -> TransferRequest:
    legs = (LegRequest(debit, Direction.DEBIT, amount), LegRequest(credit, Direction.CREDIT, amount))
    return TransferRequest(legs=legs, id=transfer_id, simple=True)


async def transfer(db: FakeDatabase, request: TransferRequest, request_hash: bytes = b"t") -> Transfer:
    async with db.write() as tx:
        created, _ = await create_transfer(tx, LEDGER, request, request_hash=request_hash, request_id="r-t")
    return created


def stored(db: FakeDatabase, account_id: str) -> Account:
    return next(a for a in db.state.accounts.values() if a.id == account_id)


async def test_opening_an_account_stores_it_and_emits_one_event(db: FakeDatabase) -> None:
    async with db.write() as tx:
        account, created = await open_account(
            tx, LEDGER, OpenAccount("USD", name="a"), request_hash=b"h", request_id="req-1"
        )
    assert created
    assert account.id.startswith("acc_")
    assert stored(db, account.id).name == "a"
    [event] = db.state.events
    assert (event.event.type, event.event.request_id) == ("account.created", "req-1")
    assert event.event.data["id"] == account.id


async def test_a_client_id_opened_again_with_the_same_body_returns_the_account(db: FakeDatabase) -> None:
    first = await open_(db, "alice", request_hash=b"same")
    async with db.write() as tx:
        again, created = await open_account(
            tx, LEDGER, OpenAccount("USD", "alice"), request_hash=b"same", request_id=None
        )
        assert not tx.wrote
    assert not created
    assert again == first
    assert len(db.state.accounts) == 1
    assert len(db.state.events) == 1


async def test_a_client_id_opened_again_with_another_body_is_an_id_conflict(db: FakeDatabase) -> None:
    await open_(db, "alice", request_hash=b"one")
    with pytest.raises(IdConflict):
        await open_(db, "alice", currency="EUR", request_hash=b"two")
    assert len(db.state.accounts) == 1


async def change(db: FakeDatabase, account_id: str, command: ChangeAccount) -> Account:
    async with db.write() as tx:
        return await change_account(tx, LEDGER, account_id, command, actor=Actor("key_1", "r-change"))


async def test_freezing_an_account_emits_an_update_and_keeps_its_version(db: FakeDatabase) -> None:
    await open_(db, "alice")
    frozen = await change(db, "alice", ChangeAccount(status=AccountStatus.FROZEN))
    assert frozen.status is AccountStatus.FROZEN
    assert stored(db, "alice").status is AccountStatus.FROZEN
    assert stored(db, "alice").version == 0
    assert [(e.event.type, e.event.request_id) for e in db.state.events[1:]] == [
        ("account.updated", "r-change")
    ]


async def test_a_change_that_changes_nothing_writes_nothing(db: FakeDatabase) -> None:
    await open_(db, "alice")
    async with db.write() as tx:
        unchanged = ChangeAccount(status=AccountStatus.OPEN)
        await change_account(tx, LEDGER, "alice", unchanged, actor=Actor("key_1", None))
        assert not tx.wrote
    assert len(db.state.events) == 1


async def test_changing_an_unknown_account_is_not_found(db: FakeDatabase) -> None:
    with pytest.raises(NotFound):
        await change(db, "ghost", ChangeAccount(name="x"))


async def test_changing_one_bound_keeps_the_other(db: FakeDatabase) -> None:
    await open_(db, "alice", bounds=Bounds(min_balance=-50, max_balance=None))
    changed = await change(db, "alice", ChangeAccount(max_balance=500, sets_max_balance=True))
    assert changed.bounds == Bounds(-50, 500)
    cleared = await change(db, "alice", ChangeAccount(min_balance=None, sets_min_balance=True))
    assert stored(db, "alice").bounds == cleared.bounds == Bounds(None, 500)


async def test_a_minimum_above_the_maximum_is_refused_and_nothing_changes(db: FakeDatabase) -> None:
    await open_(db, "alice", bounds=Bounds(max_balance=10))
    with pytest.raises(ValidationFailed):
        await change(db, "alice", ChangeAccount(min_balance=11, sets_min_balance=True))
    assert stored(db, "alice").bounds == Bounds(0, 10)


async def test_bounds_the_balance_breaks_and_closing_a_funded_account_are_refused(db: FakeDatabase) -> None:
    await world_and_alice(db)
    await transfer(db, pay("world", "alice", 100))
    with pytest.raises(InsufficientFunds):
        await change(db, "alice", ChangeAccount(max_balance=99, sets_max_balance=True))
    with pytest.raises(AccountNotEmpty):
        await change(db, "alice", ChangeAccount(status=AccountStatus.CLOSED))
    assert stored(db, "alice").status is AccountStatus.OPEN


async def test_a_closed_account_refuses_every_change(db: FakeDatabase) -> None:
    await open_(db, "alice")
    await change(db, "alice", ChangeAccount(status=AccountStatus.CLOSED))
    with pytest.raises(AccountClosed):
        await change(db, "alice", ChangeAccount(status=AccountStatus.OPEN))


async def test_a_transfer_moves_balances_and_writes_entries_and_one_event(db: FakeDatabase) -> None:
    world, alice = await world_and_alice(db)
    created = await transfer(db, pay("world", "alice", 250))
    assert created.id.startswith("tr_")
    assert (stored(db, "world").balance.posted, stored(db, "world").version) == (250, 1)
    assert (stored(db, "alice").balance.posted, stored(db, "alice").version) == (250, 1)
    entries = {e.account_pk: e for e in db.state.entries}
    assert entries[world.pk].direction is Direction.DEBIT
    assert entries[alice.pk].direction is Direction.CREDIT
    assert {(e.amount, e.posted_after, e.account_version, e.transfer_id) for e in entries.values()} == {
        (250, 250, 1, created.id)
    }
    event = db.state.events[-1].event
    assert (event.type, event.request_id, event.data["id"]) == ("transfer.created", "r-t", created.id)
    assert len(db.state.events) == 3


async def test_a_rejected_transfer_writes_nothing(db: FakeDatabase) -> None:
    await world_and_alice(db)
    before = db.state.events[:]
    async with db.write() as tx:
        with pytest.raises(InsufficientFunds):
            await create_transfer(tx, LEDGER, pay("alice", "world", 1), request_hash=b"t", request_id=None)
        assert not tx.wrote  # the executor relies on this to store the rejection with the key
    assert db.state.events == before
    assert db.state.entries == []
    assert db.state.transfers == {}
    assert stored(db, "alice").version == 0


async def test_a_transfer_id_reused_with_the_same_body_returns_the_transfer(db: FakeDatabase) -> None:
    await world_and_alice(db)
    first = await transfer(db, pay("world", "alice", 5, "t-1"))
    assert await transfer(db, pay("world", "alice", 5, "t-1")) == first
    assert stored(db, "alice").balance.posted == 5


async def test_a_transfer_id_reused_with_another_body_is_an_id_conflict(db: FakeDatabase) -> None:
    await world_and_alice(db)
    await transfer(db, pay("world", "alice", 5, "t-1"))
    with pytest.raises(IdConflict):
        await transfer(db, pay("world", "alice", 6, "t-1"), request_hash=b"other")


async def test_an_id_conflict_answers_before_a_broken_bound(db: FakeDatabase) -> None:
    # API.md error precedence: state (409 id_conflict) before balance rules (422 insufficient_funds).
    await world_and_alice(db)
    await transfer(db, pay("world", "alice", 5, "t-1"))
    with pytest.raises(IdConflict):
        await transfer(db, pay("alice", "world", 6, "t-1"), request_hash=b"other")


async def test_balance_as_of_reads_now_the_past_and_before_the_first_posting(
    db: FakeDatabase, clock: FakeClock
) -> None:
    await world_and_alice(db)
    opened_at = clock.now
    paid_at = clock.advance(seconds=10)
    await transfer(db, pay("world", "alice", 100))
    repaid_at = clock.advance(seconds=10)
    await transfer(db, pay("alice", "world", 30))
    clock.advance(seconds=10)

    now = await balance_as_of(db, LEDGER, "alice", None)
    assert (now.balance.posted, now.version, now.as_of) == (70, 2, clock.now)
    between = await balance_as_of(db, LEDGER, "alice", paid_at + timedelta(seconds=1))
    assert (between.balance.posted, between.version, between.as_of) == (
        100,
        1,
        paid_at + timedelta(seconds=1),
    )
    at_the_posting = await balance_as_of(db, LEDGER, "alice", repaid_at)
    assert (at_the_posting.balance.posted, at_the_posting.version) == (70, 2)
    before = await balance_as_of(db, LEDGER, "alice", opened_at)
    assert (before.balance.posted, before.version) == (0, 0)
    future = await balance_as_of(db, LEDGER, "alice", clock.now + timedelta(days=1))
    assert (future.balance.posted, future.version) == (70, 2)
    with pytest.raises(NotFound):
        await balance_as_of(db, LEDGER, "ghost", None)


def reply(data: object, status: int = 201) -> StoredReply:
    return StoredReply(status, orjson.dumps(data))


def reject(rejection: TallyError) -> StoredReply:
    return reply({"code": type(rejection).__name__, "detail": rejection.detail}, 422)


KEY = IdempotencyKey("key-1", b"fingerprint-1")


async def test_a_replay_returns_the_stored_reply_and_runs_the_action_once(db: FakeDatabase) -> None:
    executor = IdempotentExecutor(db)
    runs: list[int] = []

    async def action(tx: Transaction) -> StoredReply:
        runs.append(1)
        account, _ = await open_account(tx, LEDGER, OpenAccount("USD"), request_hash=b"h", request_id=None)
        return reply({"id": account.id})

    first = await executor.run(LEDGER, KEY, action, reject)
    again = await executor.run(LEDGER, KEY, action, reject)
    assert not first.replayed
    assert again.replayed
    assert again.reply == first.reply
    assert runs == [1]
    assert len(db.state.accounts) == 1


async def test_a_key_used_with_another_fingerprint_is_refused(db: FakeDatabase) -> None:
    executor = IdempotentExecutor(db)

    async def action(tx: Transaction) -> StoredReply:
        return reply({})

    await executor.run(LEDGER, KEY, action, reject)
    with pytest.raises(IdempotencyKeyReused):
        await executor.run(LEDGER, IdempotencyKey(KEY.key, b"another"), action, reject)
    other_ledger = await executor.run("led_other", IdempotencyKey(KEY.key, b"another"), action, reject)
    assert not other_ledger.replayed


async def test_a_key_still_in_flight_is_refused_as_in_use(db: FakeDatabase) -> None:
    executor = IdempotentExecutor(db)
    started, release = asyncio.Event(), asyncio.Event()

    async def slow(tx: Transaction) -> StoredReply:
        started.set()
        await release.wait()
        return reply({"slow": True})

    first = asyncio.create_task(executor.run(LEDGER, KEY, slow, reject))
    await started.wait()
    with pytest.raises(IdempotencyKeyInUse):
        await executor.run(LEDGER, KEY, slow, reject)
    release.set()
    assert (await first).reply == reply({"slow": True})
    assert (await executor.run(LEDGER, KEY, slow, reject)).replayed


async def test_a_rejection_after_a_write_rolls_the_write_back_and_is_stored(db: FakeDatabase) -> None:
    executor = IdempotentExecutor(db)

    async def opens_then_refuses(tx: Transaction) -> StoredReply:
        await open_account(tx, LEDGER, OpenAccount("USD", "doomed"), request_hash=b"h", request_id=None)
        raise InsufficientFunds("refused after a write")

    outcome = await executor.run(LEDGER, KEY, opens_then_refuses, reject)
    assert outcome.reply == reply({"code": "InsufficientFunds", "detail": "refused after a write"}, 422)
    assert db.state.accounts == {}
    assert db.state.events == []
    replay = await executor.run(LEDGER, KEY, opens_then_refuses, reject)
    assert (replay.replayed, replay.reply) == (True, outcome.reply)
    assert db.state.accounts == {}


async def test_a_stored_rejection_is_replayed_even_after_the_state_changed(db: FakeDatabase) -> None:
    await world_and_alice(db)
    executor = IdempotentExecutor(db)

    async def pay_world(tx: Transaction) -> StoredReply:
        created, _ = await create_transfer(
            tx, LEDGER, pay("alice", "world", 10), request_hash=b"p", request_id=None
        )
        return reply({"id": created.id})

    refused = await executor.run(LEDGER, KEY, pay_world, reject)
    assert refused.reply.status == 422
    await transfer(db, pay("world", "alice", 50))
    replay = await executor.run(LEDGER, KEY, pay_world, reject)
    assert (replay.replayed, replay.reply) == (True, refused.reply)
    assert stored(db, "alice").balance.posted == 50


async def test_an_unexpected_error_stores_nothing_and_frees_the_key(db: FakeDatabase) -> None:
    executor = IdempotentExecutor(db)

    async def crashes(tx: Transaction) -> StoredReply:
        await open_account(tx, LEDGER, OpenAccount("USD", "half"), request_hash=b"h", request_id=None)
        raise RuntimeError("boom")

    async def works(tx: Transaction) -> StoredReply:
        return reply({"ok": True})

    with pytest.raises(RuntimeError):
        await executor.run(LEDGER, KEY, crashes, reject)
    assert db.state.accounts == {}
    assert db.state.idempotency == {}
    outcome = await executor.run(LEDGER, KEY, works, reject)
    assert (outcome.replayed, outcome.reply) == (False, reply({"ok": True}))


async def test_without_a_key_every_run_acts(db: FakeDatabase) -> None:
    executor = IdempotentExecutor(db)

    async def action(tx: Transaction) -> StoredReply:
        await open_account(tx, LEDGER, OpenAccount("USD"), request_hash=b"h", request_id=None)
        return reply({})

    await executor.run(LEDGER, None, action, reject)
    await executor.run(LEDGER, None, action, reject)
    assert len(db.state.accounts) == 2
    assert db.state.idempotency == {}


async def test_writes_are_serialised_by_the_write_lock(db: FakeDatabase) -> None:
    inside: list[int] = []
    overlap: list[int] = []

    async def writer() -> None:
        async with db.write():
            inside.append(1)
            overlap.append(len(inside))
            await asyncio.sleep(0)
            inside.pop()

    await asyncio.gather(*(writer() for _ in range(5)))
    assert overlap == [1] * 5
    assert db.commits == 5

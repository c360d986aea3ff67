"""Balances on both normal sides, the bounds, postings and the status rules of an account."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from tally.domain.accounts import (
    Account,
    AccountStatus,
    Balance,
    Bounds,
    Direction,
    EntryKind,
    NormalBalance,
    signed,
)
from tally.domain.errors import (
    AccountClosed,
    AccountNotEmpty,
    AccountNotOpen,
    AmountOverflow,
    InsufficientFunds,
    ValidationFailed,
)
from tally.domain.money import INT64_MAX
from tally.domain.postings import Movement, apply
from tests.support import assert_no_defaults

CREDIT = NormalBalance.CREDIT
DEBIT = NormalBalance.DEBIT
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def account(
    *,
    side: NormalBalance = CREDIT,
    bounds: Bounds | None = None,
    status: AccountStatus = AccountStatus.OPEN,
    balance: Balance | None = None,
    version: int = 0,
) -> Account:
    return Account(
        pk=1,
        ledger_id="led_1",
        id="alice",
        name="alice",
        currency="USD",
        normal_balance=side,
        bounds=bounds or Bounds(),
        status=status,
        metadata={},
        balance=balance or Balance(),
        version=version,
        created_at=T0,
        updated_at=T0,
    )


def post(target: Account, direction: Direction, amount: int) -> Account:
    """One posting to one account, as ``transfers.plan`` makes it: open accounts only, then ``apply``."""
    target.require_open()
    movement = Movement(target.id, EntryKind.POSTING, direction, amount)
    return apply({target.id: target}, [movement], check_bounds=True).accounts[target.id]


def change(
    target: Account,
    *,
    status: AccountStatus | None = None,
    bounds: Bounds | None = None,
    name: str | None = None,
) -> Account:
    return target.change(name=name, metadata=None, status=status, bounds=bounds)


def test_available_of_a_credit_normal_account_subtracts_pending_debits_only() -> None:
    balance = Balance(posted=1000, pending_debits=300, pending_credits=500)
    assert balance.available(CREDIT) == 700


def test_available_of_a_debit_normal_account_subtracts_pending_credits_only() -> None:
    balance = Balance(posted=1000, pending_debits=500, pending_credits=300)
    assert balance.available(DEBIT) == 700


@pytest.mark.parametrize("side", list(NormalBalance))
def test_pending_inflows_never_raise_available(side: NormalBalance) -> None:
    inflow = Balance(posted=100, pending_credits=50 if side is CREDIT else 0)
    inflow = replace(inflow, pending_debits=50 if side is DEBIT else 0)
    assert inflow.pending_inflows(side) == 50
    assert inflow.available(side) == 100


def test_a_balance_is_zero_only_with_nothing_posted_or_pending() -> None:
    assert Balance().is_zero
    assert not Balance(pending_debits=1).is_zero
    assert not Balance(pending_credits=1).is_zero
    assert not Balance(posted=-1).is_zero


@pytest.mark.parametrize(
    ("side", "direction", "expected"),
    [
        (CREDIT, Direction.CREDIT, 25),
        (CREDIT, Direction.DEBIT, -25),
        (DEBIT, Direction.DEBIT, 25),
        (DEBIT, Direction.CREDIT, -25),
    ],
)
def test_a_posting_on_the_normal_side_raises_posted_and_the_other_lowers_it(
    side: NormalBalance, direction: Direction, expected: int
) -> None:
    assert signed(side, direction, 25) == expected


def test_a_null_minimum_admits_any_negative_balance() -> None:
    Bounds(min_balance=None).admit(CREDIT, Balance(posted=-(2**62)))


def test_a_negative_minimum_is_an_overdraft_limit() -> None:
    bounds = Bounds(min_balance=-100)
    bounds.admit(CREDIT, Balance(posted=-100))
    with pytest.raises(InsufficientFunds):
        bounds.admit(CREDIT, Balance(posted=-101))


def test_the_default_minimum_of_zero_refuses_an_available_balance_below_it() -> None:
    Bounds().admit(CREDIT, Balance(posted=0))
    with pytest.raises(InsufficientFunds):
        Bounds().admit(CREDIT, Balance(posted=100, pending_debits=101))


def test_the_maximum_counts_posted_plus_pending_inflows() -> None:
    bounds = Bounds(min_balance=None, max_balance=100)
    bounds.admit(DEBIT, Balance(posted=60, pending_debits=40, pending_credits=999))
    with pytest.raises(InsufficientFunds):
        bounds.admit(DEBIT, Balance(posted=60, pending_debits=41))


def test_a_minimum_above_the_maximum_is_a_validation_error() -> None:
    with pytest.raises(ValidationFailed) as refused:
        Bounds(min_balance=10, max_balance=9)
    assert refused.value.errors[0].loc == ("body", "max_balance")


def test_equal_minimum_and_maximum_are_allowed() -> None:
    assert Bounds(min_balance=5, max_balance=5).max_balance == 5


def test_a_posting_moves_posted_on_the_normal_side_and_the_version_by_one() -> None:
    after = post(account(version=3), Direction.CREDIT, 40)
    assert after.balance.posted == 40
    assert after.version == 4
    again = post(after, Direction.DEBIT, 15)
    assert again.balance.posted == 25
    assert again.version == 5


def test_a_posting_that_breaks_the_minimum_is_refused() -> None:
    with pytest.raises(InsufficientFunds):
        post(account(), Direction.DEBIT, 1)


@pytest.mark.parametrize("status", [AccountStatus.FROZEN, AccountStatus.CLOSED])
def test_a_frozen_or_closed_account_takes_no_posting(status: AccountStatus) -> None:
    with pytest.raises(AccountNotOpen):
        post(account(status=status, bounds=Bounds(min_balance=None)), Direction.CREDIT, 1)


def test_a_posting_past_the_64_bit_range_is_refused_as_overflow() -> None:
    full = account(balance=Balance(posted=INT64_MAX))
    with pytest.raises(AmountOverflow):
        post(full, Direction.CREDIT, 1)


def test_a_posting_below_the_64_bit_range_is_refused_as_overflow() -> None:
    empty = account(side=DEBIT, bounds=Bounds(min_balance=None), balance=Balance(posted=-INT64_MAX))
    with pytest.raises(AmountOverflow):
        post(empty, Direction.CREDIT, 2)


def test_a_posting_leaves_the_original_account_untouched() -> None:
    before = account()
    post(before, Direction.CREDIT, 10)
    assert before.balance.posted == 0
    assert before.version == 0


def test_any_change_to_a_closed_account_is_refused() -> None:
    closed = account(status=AccountStatus.CLOSED)
    with pytest.raises(AccountClosed):
        change(closed, name="renamed")
    with pytest.raises(AccountClosed):
        change(closed, status=AccountStatus.OPEN)


def test_closing_an_account_with_a_posted_balance_is_refused() -> None:
    with pytest.raises(AccountNotEmpty):
        change(account(balance=Balance(posted=1)), status=AccountStatus.CLOSED)


def test_closing_an_account_with_only_a_pending_balance_is_refused() -> None:
    with pytest.raises(AccountNotEmpty):
        change(account(balance=Balance(pending_credits=1)), status=AccountStatus.CLOSED)


@pytest.mark.parametrize(
    ("start", "target"),
    [
        (AccountStatus.OPEN, AccountStatus.FROZEN),
        (AccountStatus.FROZEN, AccountStatus.OPEN),
        (AccountStatus.OPEN, AccountStatus.CLOSED),
        (AccountStatus.FROZEN, AccountStatus.CLOSED),
    ],
)
def test_an_empty_account_moves_between_the_allowed_statuses(
    start: AccountStatus, target: AccountStatus
) -> None:
    assert change(account(status=start), status=target).status is target


def test_bounds_that_the_current_balance_breaks_are_refused() -> None:
    funded = account(balance=Balance(posted=50))
    with pytest.raises(InsufficientFunds):
        change(funded, bounds=Bounds(min_balance=51))
    with pytest.raises(InsufficientFunds):
        change(funded, bounds=Bounds(min_balance=0, max_balance=49))


def test_bounds_the_balance_keeps_are_applied_without_moving_the_version() -> None:
    funded = account(balance=Balance(posted=50), version=2)
    changed = change(funded, bounds=Bounds(min_balance=-10, max_balance=50))
    assert changed.bounds == Bounds(-10, 50)
    assert changed.version == 2
    assert changed.balance == funded.balance


def test_a_change_that_sets_nothing_returns_an_equal_account() -> None:
    same = account()
    assert change(same, status=AccountStatus.OPEN) == same


def test_a_new_balance_keeps_every_other_field_of_the_account() -> None:
    before = replace(account(version=4), request_hash=b"hash", metadata={"k": "v"})
    assert_no_defaults(before)
    balance = Balance(posted=5, pending_debits=1, pending_credits=2)

    assert before.with_balance(balance) == replace(before, balance=balance, version=5)


@pytest.mark.parametrize("kind", list(EntryKind))
@pytest.mark.parametrize("direction", list(Direction))
def test_a_movement_changes_one_part_of_a_balance_and_keeps_the_others(
    kind: EntryKind, direction: Direction
) -> None:
    before = Balance(posted=100, pending_debits=10, pending_credits=20)
    moved = before.moved(CREDIT, kind, direction, 3)

    if kind is EntryKind.POSTING:
        expected = replace(before, posted=100 + signed(CREDIT, direction, 3))
    else:
        part = "pending_debits" if direction is Direction.DEBIT else "pending_credits"
        expected = replace(before, **{part: getattr(before, part) + (3 if kind is EntryKind.HOLD else -3)})
    assert moved == expected

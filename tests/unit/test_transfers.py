"""A transfer request is checked on its own, then planned against the accounts it names."""

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
    NormalBalance,
)
from tally.domain.errors import (
    AccountNotFound,
    AccountNotOpen,
    AmountOverflow,
    CurrencyMismatch,
    InsufficientFunds,
    SameAccount,
    UnbalancedTransfer,
    ValidationFailed,
)
from tally.domain.money import INT64_MAX
from tally.domain.transfers import Leg, LegRequest, Transfer, TransferRequest, TransferStatus, plan
from tests.support import assert_no_defaults

DEBIT = Direction.DEBIT
CREDIT = Direction.CREDIT
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def account(
    account_id: str,
    *,
    currency: str = "USD",
    side: NormalBalance = NormalBalance.CREDIT,
    min_balance: int | None = 0,
    posted: int = 0,
    status: AccountStatus = AccountStatus.OPEN,
) -> Account:
    return Account(
        pk=hash(account_id) & 0xFFFF,
        ledger_id="led_1",
        id=account_id,
        name=None,
        currency=currency,
        normal_balance=side,
        bounds=Bounds(min_balance=min_balance),
        status=status,
        metadata={},
        balance=Balance(posted=posted),
        version=0,
        created_at=T0,
        updated_at=T0,
    )


def simple(debit: str, credit: str, amount: int, currency: str | None = None) -> TransferRequest:
    legs = (LegRequest(debit, DEBIT, amount), LegRequest(credit, CREDIT, amount))
    return TransferRequest(legs=legs, currency=currency, simple=True)


def multi(*legs: tuple[str, Direction, int]) -> TransferRequest:
    return TransferRequest(legs=tuple(LegRequest(*leg) for leg in legs))


def by_id(*accounts: Account) -> dict[str, Account]:
    return {a.id: a for a in accounts}


WORLD = account("world", side=NormalBalance.DEBIT, min_balance=None)


def test_a_balanced_request_passes_its_own_check() -> None:
    simple("a", "b", 5).check()
    multi(("a", DEBIT, 5), ("b", CREDIT, 3), ("c", CREDIT, 2)).check()


@pytest.mark.parametrize("count", [0, 1])
def test_fewer_than_two_legs_is_a_validation_error(count: int) -> None:
    legs = (("a", DEBIT, 5),)[:count]
    with pytest.raises(ValidationFailed) as refused:
        multi(*legs).check()
    assert refused.value.errors[0].loc == ("body", "legs")


def test_the_simple_form_naming_one_account_twice_is_same_account() -> None:
    with pytest.raises(SameAccount):
        simple("a", "a", 5).check()


def test_a_multi_leg_request_naming_one_account_twice_points_at_the_repeated_leg() -> None:
    with pytest.raises(ValidationFailed) as refused:
        multi(("a", DEBIT, 5), ("b", CREDIT, 5), ("a", CREDIT, 0)).check()
    assert refused.value.errors[0].loc == ("body", "legs", 2, "account_id")


def test_debits_that_differ_from_credits_are_unbalanced() -> None:
    with pytest.raises(UnbalancedTransfer):
        multi(("a", DEBIT, 5), ("b", CREDIT, 4)).check()


def test_a_plan_moves_every_leg_account_and_tags_legs_with_their_currency() -> None:
    alice = account("alice")
    result = plan(simple("world", "alice", 70), by_id(WORLD, alice))
    after = {a.id: a for a in result.accounts}
    assert after["world"].balance.posted == 70  # a debit raises a debit-normal account
    assert after["alice"].balance.posted == 70
    assert {a.version for a in result.accounts} == {1}
    assert [(leg.account_id, leg.currency) for leg in result.legs] == [
        ("world", "USD"),
        ("alice", "USD"),
    ]


def test_an_unknown_account_is_account_not_found() -> None:
    with pytest.raises(AccountNotFound):
        plan(simple("world", "ghost", 1), by_id(WORLD))


def test_an_unknown_account_answers_before_a_frozen_one() -> None:
    frozen = account("frozen", status=AccountStatus.FROZEN)
    with pytest.raises(AccountNotFound):
        plan(simple("frozen", "ghost", 1), by_id(frozen))


@pytest.mark.parametrize("status", [AccountStatus.FROZEN, AccountStatus.CLOSED])
def test_a_leg_on_an_account_that_is_not_open_is_refused(status: AccountStatus) -> None:
    stuck = account("stuck", status=status)
    with pytest.raises(AccountNotOpen):
        plan(simple("world", "stuck", 1), by_id(WORLD, stuck))


def test_a_simple_transfer_between_two_currencies_is_a_currency_mismatch() -> None:
    euro = account("euro", currency="EUR")
    with pytest.raises(CurrencyMismatch):
        plan(simple("world", "euro", 1), by_id(WORLD, euro))


def test_a_simple_transfer_naming_another_currency_than_its_accounts_is_a_mismatch() -> None:
    with pytest.raises(CurrencyMismatch):
        plan(simple("world", "alice", 1, currency="EUR"), by_id(WORLD, account("alice")))


def test_a_simple_transfer_naming_its_accounts_currency_passes() -> None:
    result = plan(simple("world", "alice", 1, currency="USD"), by_id(WORLD, account("alice")))
    assert result.legs[1].currency == "USD"


def test_a_multi_leg_transfer_must_balance_in_every_currency() -> None:
    # Balanced in total (5 = 5), but USD is debited 5 while EUR is credited 5.
    euro = account("euro", currency="EUR")
    with pytest.raises(UnbalancedTransfer) as refused:
        plan(multi(("world", DEBIT, 5), ("euro", CREDIT, 5)), by_id(WORLD, euro))
    assert "EUR" in refused.value.detail
    assert "USD" in refused.value.detail


def test_a_multi_leg_transfer_balanced_per_currency_passes() -> None:
    world_eur = account("world_eur", currency="EUR", side=NormalBalance.DEBIT, min_balance=None)
    accounts = by_id(WORLD, world_eur, account("alice"), account("euro", currency="EUR"))
    request = multi(("world", DEBIT, 5), ("alice", CREDIT, 5), ("world_eur", DEBIT, 7), ("euro", CREDIT, 7))
    result = plan(request, accounts)
    assert [leg.currency for leg in result.legs] == ["USD", "USD", "EUR", "EUR"]
    assert [a.balance.posted for a in result.accounts] == [5, 5, 7, 7]


def test_a_leg_that_breaks_a_bound_is_insufficient_funds() -> None:
    poor = account("poor", posted=10)
    with pytest.raises(InsufficientFunds):
        plan(simple("poor", "alice", 11), by_id(poor, account("alice")))


def test_a_leg_that_overflows_a_balance_is_amount_overflow() -> None:
    rich = account("rich", posted=INT64_MAX)
    with pytest.raises(AmountOverflow):
        plan(simple("world", "rich", 1), by_id(WORLD, rich))


def test_a_plan_leaves_the_accounts_it_was_given_untouched() -> None:
    accounts = by_id(WORLD, account("alice"))
    plan(simple("world", "alice", 9), accounts)
    assert accounts["alice"].balance.posted == 0
    assert accounts["world"].version == 0


def test_a_stored_transfer_keeps_every_field_but_its_pk() -> None:
    legs = (Leg("world", DEBIT, 5, "USD"), Leg("alice", CREDIT, 5, "USD"))
    before = Transfer(
        pk=0,
        ledger_id="led_1",
        id="tr_1",
        status=TransferStatus.PENDING,
        legs=legs,
        description="d",
        metadata={"k": "v"},
        reverses="tr_0",
        reversed_amount=1,
        expires_at=T0,
        created_at=T0,
        posted_at=T0,
        request_hash=b"hash",
        held_amount=5,
    )
    assert_no_defaults(before)

    assert before.stored_as(9) == replace(before, pk=9)

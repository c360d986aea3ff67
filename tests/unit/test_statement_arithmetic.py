"""The arithmetic of statements and reconciliation, on plain values.

Invariants: a served series is continuous (each day opens at the previous day's close), quiet days
carry the balance and sum to zero, and a gap in the served days never carries a balance across it.
Reconciliation recomputes ``posted`` on the account's normal side and each pending side as holds
minus releases, and reports every field where stored, recomputed and recorded values disagree.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from tally.domain.accounts import Account, AccountStatus, Balance, Bounds, NormalBalance
from tally.domain.errors import ValidationFailed
from tally.jobs.reconcile import account_differences, currency_sums
from tally.services.ports import BalanceAt
from tally.services.statement_ports import CurrencyTotals, DayStatement, EntryTotals
from tally.services.statements import check_range, days_needing_a_balance, resumed_at, series

D1, D2, D3, D4, D5 = (date(2026, 1, day) for day in range(1, 6))


def stored(day: date, opening: int, closing: int) -> DayStatement:
    return DayStatement(7, day, opening, closing, max(0, opening - closing), max(0, closing - opening), 1)


def test_quiet_days_carry_the_previous_close_with_zero_sums() -> None:
    days = [D1, D2, D3]
    rows = {D2: stored(D2, 100, 130)}
    assert days_needing_a_balance(days, rows) == [D1]
    out = series(7, days, rows, {D1: 100})
    assert [(s.day, s.opening_balance, s.closing_balance, s.postings) for s in out] == [
        (D1, 100, 100, 0),
        (D2, 100, 130, 1),
        (D3, 130, 130, 0),
    ]
    assert all(s.debits == s.credits == 0 for s in out if s.postings == 0)


def test_a_day_not_served_breaks_the_carry() -> None:
    days = [D1, D2, D4, D5]  # D3's run has not finished
    rows = {D2: stored(D2, 0, 50)}
    assert days_needing_a_balance(days, rows) == [D1, D4]
    out = series(7, days, rows, {D1: 0, D4: 80})
    assert [(s.opening_balance, s.closing_balance) for s in out] == [(0, 0), (0, 50), (80, 80), (80, 80)]


def test_a_series_opening_on_a_stored_day_needs_no_lookup() -> None:
    rows = {D1: stored(D1, 5, 9)}
    assert days_needing_a_balance([D1, D2], rows) == []
    assert [s.closing_balance for s in series(7, [D1, D2], rows, {})] == [9, 9]


@pytest.mark.parametrize(("first", "last"), [(D2, D1), (date(2025, 1, 1), date(2026, 1, 2))])
def test_ranges_backwards_or_longer_than_366_days_are_refused(first: date, last: date) -> None:
    with pytest.raises(ValidationFailed):
        check_range(first, last)


def test_a_leap_year_fits_in_one_range() -> None:
    check_range(date(2024, 1, 1), date(2024, 12, 31))


def test_a_cursor_must_fall_inside_the_range() -> None:
    assert resumed_at(D1, D5, None) == D1
    assert resumed_at(D1, D5, D3.toordinal()) == D3
    for position in (D1.toordinal(), D5.toordinal() + 1, -4):
        with pytest.raises(ValidationFailed):
            resumed_at(D1, D5, position)


def account(side: NormalBalance, balance: Balance, version: int) -> Account:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    return Account(
        pk=3, ledger_id="led_1", id="alice", name=None, currency="USD", normal_balance=side,
        bounds=Bounds(), status=AccountStatus.OPEN, metadata={}, balance=balance, version=version,
        created_at=at, updated_at=at, request_hash=None,
    )  # fmt: skip


def test_a_consistent_account_has_no_difference_on_either_side() -> None:
    credit = EntryTotals(posting_debits=30, posting_credits=100, held_debits=20, released_debits=5,
                         last=BalanceAt(Balance(70, 15, 0), 4))  # fmt: skip
    assert account_differences(account(NormalBalance.CREDIT, Balance(70, 15, 0), 4), credit) == []
    debit = EntryTotals(posting_debits=100, posting_credits=30, last=BalanceAt(Balance(70), 2))
    assert account_differences(account(NormalBalance.DEBIT, Balance(70), 2), debit) == []
    assert account_differences(account(NormalBalance.CREDIT, Balance(), 0), EntryTotals()) == []


def test_a_stored_balance_off_its_entries_is_reported_field_by_field() -> None:
    totals = EntryTotals(posting_credits=100, last=BalanceAt(Balance(100), 1))
    found = account_differences(account(NormalBalance.CREDIT, Balance(101), 1), totals)
    assert found == [
        {"account_id": "alice", "ledger_id": "led_1", "field": "posted", "stored": 101, "recomputed": 100}
    ]


def test_entries_whose_running_totals_disagree_with_their_sums_are_reported() -> None:
    totals = EntryTotals(posting_credits=100, held_credits=9, last=BalanceAt(Balance(90, 0, 9), 2))
    found = account_differences(account(NormalBalance.CREDIT, Balance(100, 0, 9), 3), totals)
    assert [(d["field"], d["stored"], d["recomputed"]) for d in found] == [
        ("posted_after", 90, 100),
        ("version", 3, 2),
    ]


def test_a_currency_sums_to_zero_when_debits_equal_credits_and_holds_match() -> None:
    balanced = currency_sums(CurrencyTotals("USD", 50, 50, 9, 9, 4, 4))
    assert balanced == {
        "debits": 50,
        "credits": 50,
        "pending_debits": 5,
        "pending_credits": 5,
        "balanced": True,
    }
    assert not currency_sums(CurrencyTotals("USD", 50, 47))["balanced"]
    assert not currency_sums(CurrencyTotals("USD", 50, 50, held_debits=3))["balanced"]
    assert currency_sums(CurrencyTotals("USD", 2**64, 2**64))["debits"] == str(2**64)

"""Accounts and their balances: the normal side, the bounds, the status rules.

A balance has three stored parts: ``posted`` (signed, on the account's normal side: credits − debits
for a credit-normal account), ``pending_debits`` and ``pending_credits`` (held amounts, never
negative). ``available`` subtracts pending outflows only; pending inflows never count (ADR 0007).

The bounds are conservative and hold after every change (API.md):
``available ≥ min_balance`` and ``posted + pending inflows ≤ max_balance``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from tally.domain.errors import (
    AccountClosed,
    AccountNotEmpty,
    AccountNotOpen,
    InsufficientFunds,
    ValidationFailed,
)
from tally.domain.money import checked


class NormalBalance(StrEnum):
    CREDIT = "credit"
    DEBIT = "debit"


class Direction(StrEnum):
    DEBIT = "debit"
    CREDIT = "credit"


class EntryKind(StrEnum):
    """What an entry records: a posting (moves ``posted``), a hold placed, or a hold released."""

    POSTING = "posting"
    HOLD = "hold"
    RELEASE = "release"


class AccountStatus(StrEnum):
    OPEN = "open"
    FROZEN = "frozen"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Balance:
    posted: int = 0
    pending_debits: int = 0
    pending_credits: int = 0

    def pending_outflows(self, side: NormalBalance) -> int:
        return self.pending_debits if side is NormalBalance.CREDIT else self.pending_credits

    def pending_inflows(self, side: NormalBalance) -> int:
        return self.pending_credits if side is NormalBalance.CREDIT else self.pending_debits

    def available(self, side: NormalBalance) -> int:
        return self.posted - self.pending_outflows(side)

    @property
    def is_zero(self) -> bool:
        return self.posted == 0 and self.pending_debits == 0 and self.pending_credits == 0

    def moved(self, side: NormalBalance, kind: EntryKind, direction: Direction, amount: int) -> Balance:
        """This balance after one movement; every part is checked against the 64-bit range.

        A posting moves ``posted``; a hold adds to the pending side of its direction; a release
        takes a hold (or what is left of it) back off that side.
        """
        # Built directly: ``dataclasses.replace`` costs twice as much, and this runs per leg.
        posted, debits, credits = self.posted, self.pending_debits, self.pending_credits
        if kind is EntryKind.POSTING:
            return Balance(checked(posted + signed(side, direction, amount)), debits, credits)
        sign = 1 if kind is EntryKind.HOLD else -1
        if direction is Direction.DEBIT:
            return Balance(posted, checked(debits + sign * amount), credits)
        return Balance(posted, debits, checked(credits + sign * amount))


def signed(side: NormalBalance, direction: Direction, amount: int) -> int:
    """The change to ``posted`` of an account on ``side`` when ``amount`` is posted in ``direction``."""
    return amount if direction.value == side.value else -amount


@dataclass(frozen=True, slots=True)
class Bounds:
    """``None`` means unbounded on that side."""

    min_balance: int | None = 0
    max_balance: int | None = None

    def __post_init__(self) -> None:
        if (
            self.min_balance is not None
            and self.max_balance is not None
            and self.min_balance > self.max_balance
        ):
            raise ValidationFailed.at(("body", "max_balance"), "max_balance must not be below min_balance")

    def admit(self, side: NormalBalance, balance: Balance) -> None:
        """Refuse with ``InsufficientFunds`` when ``balance`` breaks a bound."""
        if self.min_balance is not None and balance.available(side) < self.min_balance:
            raise InsufficientFunds(
                f"The available balance would fall below the minimum of {self.min_balance}."
            )
        if self.max_balance is not None and balance.posted + balance.pending_inflows(side) > self.max_balance:
            raise InsufficientFunds(f"The balance would rise above the maximum of {self.max_balance}.")


@dataclass(frozen=True, slots=True)
class Account:
    pk: int
    ledger_id: str
    id: str
    name: str | None
    currency: str
    normal_balance: NormalBalance
    bounds: Bounds
    status: AccountStatus
    metadata: dict[str, Any]
    balance: Balance
    version: int
    created_at: datetime
    updated_at: datetime
    request_hash: bytes | None = None

    @property
    def available(self) -> int:
        return self.balance.available(self.normal_balance)

    def with_balance(self, balance: Balance, *, check_bounds: bool = True) -> Account:
        """A new balance, checked against the 64-bit range and (unless told not to) the bounds.

        The version moves by one. Only a release skips the bounds: taking a hold back lowers pending
        outflows or inflows, which can only bring a balance further inside its bounds, and a release
        (a void, an expiry) must never be refused.
        """
        checked(balance.available(self.normal_balance))
        checked(balance.posted + balance.pending_inflows(self.normal_balance))
        if check_bounds:
            self.bounds.admit(self.normal_balance, balance)
        # Built directly: ``dataclasses.replace`` costs three times as much, and this runs per leg.
        return Account(
            pk=self.pk,
            ledger_id=self.ledger_id,
            id=self.id,
            name=self.name,
            currency=self.currency,
            normal_balance=self.normal_balance,
            bounds=self.bounds,
            status=self.status,
            metadata=self.metadata,
            balance=balance,
            version=self.version + 1,
            created_at=self.created_at,
            updated_at=self.updated_at,
            request_hash=self.request_hash,
        )

    def require_open(self) -> None:
        if self.status is not AccountStatus.OPEN:
            raise AccountNotOpen(f"Account {self.id} is {self.status.value}.")

    def change(
        self,
        *,
        name: str | None,
        metadata: dict[str, Any] | None,
        status: AccountStatus | None,
        bounds: Bounds | None,
    ) -> Account:
        """Apply a PATCH. ``None`` leaves a field as it is. Balances and version do not move."""
        if self.status is AccountStatus.CLOSED:
            raise AccountClosed(f"Account {self.id} is closed; it cannot change.")
        updated = self
        if bounds is not None:
            bounds.admit(self.normal_balance, self.balance)
            updated = replace(updated, bounds=bounds)
        if status is not None and status is not self.status:
            if status is AccountStatus.CLOSED and not self.balance.is_zero:
                raise AccountNotEmpty(
                    f"Account {self.id} has a posted or pending balance; it cannot be closed."
                )
            updated = replace(updated, status=status)
        if name is not None:
            updated = replace(updated, name=name)
        if metadata is not None:
            updated = replace(updated, metadata=metadata)
        return updated

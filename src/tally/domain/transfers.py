"""Transfers: sets of legs whose debits equal their credits in every currency.

A ``TransferRequest`` is what a client asked for, checked on its own (``check``); ``plan`` then
checks it against the locked accounts and returns every account's new state, so that a store can
write all of it or nothing. Nothing is written before every rule has passed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from tally.domain.accounts import Account, Direction
from tally.domain.errors import (
    AccountNotFound,
    CurrencyMismatch,
    SameAccount,
    UnbalancedInCurrency,
    UnbalancedTransfer,
    ValidationFailed,
)


class TransferStatus(StrEnum):
    POSTED = "posted"
    PENDING = "pending"
    VOIDED = "voided"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class LegRequest:
    account_id: str
    direction: Direction
    amount: int


@dataclass(frozen=True, slots=True)
class TransferRequest:
    """A transfer as asked for. ``currency`` is set only by the simple form, where it is optional."""

    legs: tuple[LegRequest, ...]
    id: str | None = None
    currency: str | None = None
    description: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    simple: bool = False

    def check(self) -> None:
        """The rules decided by the body alone: two or more legs, no account twice, balanced."""
        if len(self.legs) < 2:
            raise ValidationFailed.at(("body", "legs"), "A transfer needs at least two legs.")
        seen: set[str] = set()
        for index, leg in enumerate(self.legs):
            if leg.account_id in seen:
                if self.simple:
                    raise SameAccount("The debit and credit accounts must differ.")
                raise ValidationFailed.at(
                    ("body", "legs", index, "account_id"), "Each account may appear in one leg only."
                )
            seen.add(leg.account_id)
        debits = sum(leg.amount for leg in self.legs if leg.direction is Direction.DEBIT)
        credits = sum(leg.amount for leg in self.legs if leg.direction is Direction.CREDIT)
        if debits != credits:
            raise UnbalancedTransfer(f"Debits ({debits}) and credits ({credits}) of the transfer differ.")


@dataclass(frozen=True, slots=True)
class Leg:
    account_id: str
    direction: Direction
    amount: int
    currency: str


@dataclass(frozen=True, slots=True)
class Transfer:
    pk: int
    ledger_id: str
    id: str
    status: TransferStatus
    legs: tuple[Leg, ...]
    description: str | None
    metadata: Mapping[str, Any]
    reverses: str | None
    reversed_amount: int
    expires_at: datetime | None
    created_at: datetime
    posted_at: datetime | None
    request_hash: bytes | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """What a transfer does: its legs with currencies, and each touched account after it."""

    legs: tuple[Leg, ...]
    accounts: tuple[Account, ...]


def plan(request: TransferRequest, accounts: Mapping[str, Account]) -> Plan:
    """Check ``request`` against the locked ``accounts`` (by id) and compute the posting.

    The order of checks follows the API's precedence: lookups, then state, then business rules.
    """
    legs: list[Leg] = []
    for leg in request.legs:
        account = accounts.get(leg.account_id)
        if account is None:
            raise AccountNotFound(f"Account {leg.account_id} does not exist.")
        legs.append(Leg(leg.account_id, leg.direction, leg.amount, account.currency))
    for leg in request.legs:
        accounts[leg.account_id].require_open()
    _check_currencies(request, legs)
    after = tuple(accounts[leg.account_id].post(leg.direction, leg.amount) for leg in legs)
    return Plan(tuple(legs), after)


def _check_currencies(request: TransferRequest, legs: list[Leg]) -> None:
    if request.simple:
        currencies = {leg.currency for leg in legs}
        if len(currencies) > 1:
            raise CurrencyMismatch("The two accounts hold different currencies.")
        if request.currency is not None and request.currency not in currencies:
            raise CurrencyMismatch(f"The accounts hold {legs[0].currency}, not {request.currency}.")
        return
    net: defaultdict[str, int] = defaultdict(int)
    for leg in legs:
        net[leg.currency] += leg.amount if leg.direction is Direction.DEBIT else -leg.amount
    unbalanced = sorted(currency for currency, total in net.items() if total != 0)
    if unbalanced:
        raise UnbalancedInCurrency(f"Debits and credits differ in {', '.join(unbalanced)}.")

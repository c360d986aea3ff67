"""Transfers: sets of legs whose debits equal their credits in every currency.

A ``TransferRequest`` is what a client asked for, checked on its own (``check``); ``plan`` then
checks it against the locked accounts and returns every account's new state, so that a store can
write all of it or nothing. Nothing is written before every rule has passed.

A pending request places a hold: its legs add to the accounts' pending sides instead of ``posted``
(ADR 0014). ``tally.domain.holds`` resolves holds; ``tally.domain.reversals`` corrects postings.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from tally.domain.accounts import Account, Direction, EntryKind
from tally.domain.errors import (
    AccountNotFound,
    CurrencyMismatch,
    SameAccount,
    UnbalancedInCurrency,
    UnbalancedTransfer,
    ValidationFailed,
)
from tally.domain.postings import Change, Movement, apply


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
    pending: bool = False
    expires_at: datetime | None = None

    def check(self) -> None:
        """The rules decided by the body alone: two or more legs, no account twice, balanced."""
        if self.expires_at is not None and not self.pending:
            raise ValidationFailed.at(("body", "expires_at"), "Only a pending transfer (a hold) expires.")
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
    held_amount: int | None = None  # what a two-leg hold held; its legs show what was posted

    @property
    def is_simple(self) -> bool:
        """Two legs, one debit and one credit: the transfer also reads in the simple form."""
        return len(self.legs) == 2 and self.legs[0].direction is not self.legs[1].direction

    @property
    def amount(self) -> int:
        """The sum of the debit legs (for a simple transfer, its amount)."""
        return sum(leg.amount for leg in self.legs if leg.direction is Direction.DEBIT)

    def is_due(self, now: datetime) -> bool:
        """A hold whose ``expires_at`` has come: from that instant it reads, and acts, as expired."""
        return (
            self.status is TransferStatus.PENDING and self.expires_at is not None and self.expires_at <= now
        )

    def stored_as(self, pk: int) -> Transfer:
        """The transfer with the pk its row got (built directly: ``replace`` costs three times as much)."""
        return Transfer(
            pk=pk,
            ledger_id=self.ledger_id,
            id=self.id,
            status=self.status,
            legs=self.legs,
            description=self.description,
            metadata=self.metadata,
            reverses=self.reverses,
            reversed_amount=self.reversed_amount,
            expires_at=self.expires_at,
            created_at=self.created_at,
            posted_at=self.posted_at,
            request_hash=self.request_hash,
            held_amount=self.held_amount,
        )

    def seen_at(self, now: datetime) -> Transfer:
        """The transfer as it reads at ``now``: a due hold is expired, whether or not it was swept."""
        return replace(self, status=TransferStatus.EXPIRED) if self.is_due(now) else self


@dataclass(frozen=True, slots=True)
class Plan:
    """What a transfer does: its legs with currencies, and the change to the accounts."""

    legs: tuple[Leg, ...]
    change: Change

    @property
    def accounts(self) -> tuple[Account, ...]:
        return tuple(self.change.accounts.values())


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
    kind = EntryKind.HOLD if request.pending else EntryKind.POSTING
    movements = [Movement(leg.account_id, kind, leg.direction, leg.amount) for leg in legs]
    return Plan(tuple(legs), apply(accounts, movements, check_bounds=True))


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

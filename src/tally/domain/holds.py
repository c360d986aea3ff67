"""Resolving a hold: post it (in full, or in part when it has two legs), void it, or let it expire.

A hold resolves exactly once. Posting and voiding need the transfer to read ``pending`` at the
database's ``now``: a hold whose ``expires_at`` has come reads ``expired`` from that instant, swept
or not, and can be neither posted nor voided (ADR 0014).

Posting releases what was held and posts what is posted; for a partial post the rest is simply
released. Voids and expiries only release, which never breaks a bound, so they are never refused
for one and are allowed on a frozen account.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime

from tally.domain.accounts import Account, EntryKind
from tally.domain.errors import AmountExceedsPending, PartialPostNotSupported, TransferNotPending
from tally.domain.postings import Change, Movement, apply
from tally.domain.transfers import Transfer, TransferStatus


def require_pending(transfer: Transfer, now: datetime | None) -> None:
    """Refuse a transfer that is not pending at ``now`` (``None``: by its stored status alone)."""
    status = transfer.status if now is None else transfer.seen_at(now).status
    if status is not TransferStatus.PENDING:
        raise TransferNotPending(f"Transfer {transfer.id} is {status.value}, not pending.")


def post(
    transfer: Transfer, accounts: Mapping[str, Account], amount: int | None, now: datetime
) -> tuple[Transfer, Change]:
    """Post a pending transfer: all of it, or ``amount`` of a two-leg hold (the rest is released)."""
    require_pending(transfer, now)
    if amount is not None:
        if not transfer.is_simple:
            raise PartialPostNotSupported("Only a two-leg hold can be posted in part; omit amount.")
        if amount > transfer.amount:
            raise AmountExceedsPending(f"The hold is for {transfer.amount}; {amount} is more.")
    for leg in transfer.legs:
        accounts[leg.account_id].require_open()
    movements: list[Movement] = []
    legs = []
    for leg in transfer.legs:
        posted = leg.amount if amount is None else amount
        movements.append(Movement(leg.account_id, EntryKind.RELEASE, leg.direction, leg.amount))
        movements.append(Movement(leg.account_id, EntryKind.POSTING, leg.direction, posted))
        legs.append(replace(leg, amount=posted))
    change = apply(accounts, movements, check_bounds=True)
    return replace(transfer, status=TransferStatus.POSTED, legs=tuple(legs), posted_at=now), change


def void(transfer: Transfer, accounts: Mapping[str, Account], now: datetime) -> tuple[Transfer, Change]:
    """Release a pending transfer's hold in full."""
    require_pending(transfer, now)
    return release(transfer, accounts, TransferStatus.VOIDED)


def expire(transfer: Transfer, accounts: Mapping[str, Account]) -> tuple[Transfer, Change]:
    """Release a due hold; the caller has checked that it is due."""
    return release(transfer, accounts, TransferStatus.EXPIRED)


def release(
    transfer: Transfer, accounts: Mapping[str, Account], status: TransferStatus
) -> tuple[Transfer, Change]:
    movements = [
        Movement(leg.account_id, EntryKind.RELEASE, leg.direction, leg.amount) for leg in transfer.legs
    ]
    return replace(transfer, status=status), apply(accounts, movements, check_bounds=False)

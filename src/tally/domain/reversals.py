"""Reversals: the only correction of a posted transfer (entries are append-only).

A reversal is a new posted transfer with the original's legs swapped. A two-leg transfer may be
reversed in several parts; a multi-leg one only as a whole (there is no single amount to take part
of). What has been reversed in total never exceeds the original, and the original keeps the
running total in ``reversed_amount``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from tally.domain.accounts import Account, Direction, EntryKind
from tally.domain.errors import PartialReversalNotSupported, ReversalExceedsOriginal, TransferNotPosted
from tally.domain.postings import Change, Movement, apply
from tally.domain.transfers import Leg, Transfer, TransferStatus


@dataclass(frozen=True, slots=True)
class Reversal:
    legs: tuple[Leg, ...]
    original: Transfer  # with its new ``reversed_amount``
    change: Change


def require_posted(original: Transfer) -> None:
    if original.status is not TransferStatus.POSTED:
        raise TransferNotPosted(
            f"Transfer {original.id} is {original.status.value}; only posted ones reverse."
        )


def reverse(original: Transfer, accounts: Mapping[str, Account], amount: int | None) -> Reversal:
    """Plan the reversal of ``amount`` of ``original`` (``None``: all that is left)."""
    require_posted(original)
    left = original.amount - original.reversed_amount
    if original.is_simple:
        taken = left if amount is None else amount
    else:
        if amount is not None and amount != original.amount:
            raise PartialReversalNotSupported("A multi-leg transfer is reversed as a whole; omit amount.")
        taken = original.amount  # all of it, refused below once anything was reversed
    if left == 0 or taken > left:
        raise ReversalExceedsOriginal(f"{left} of transfer {original.id} is left to reverse.")
    legs = tuple(
        replace(
            leg,
            direction=Direction.CREDIT if leg.direction is Direction.DEBIT else Direction.DEBIT,
            amount=taken if original.is_simple else leg.amount,
        )
        for leg in original.legs
    )
    for leg in legs:
        accounts[leg.account_id].require_open()
    movements = [Movement(leg.account_id, EntryKind.POSTING, leg.direction, leg.amount) for leg in legs]
    change = apply(accounts, movements, check_bounds=True)
    return Reversal(legs, replace(original, reversed_amount=original.reversed_amount + taken), change)

"""Movements and changes: how a transfer's legs move balances, and the entries that record it.

Every operation on a transfer (create, post a hold, void it, let it expire, reverse it) is a
sequence of ``Movement``s. ``apply`` runs them against the locked accounts and returns a ``Change``:
each movement with the balance right after it (the entry to append), and each touched account after
the whole operation. An account's version moves by one per operation, however many movements it
saw; the bounds are checked once, on the state the operation leaves (ADR 0015).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from tally.domain.accounts import Account, Balance, Direction, EntryKind


@dataclass(frozen=True, slots=True)
class Movement:
    account_id: str
    kind: EntryKind
    direction: Direction
    amount: int


@dataclass(frozen=True, slots=True)
class Recorded:
    """One entry to append: a movement and the account's balance right after it."""

    movement: Movement
    balance_after: Balance


@dataclass(frozen=True, slots=True)
class Change:
    entries: tuple[Recorded, ...]
    accounts: dict[str, Account]  # every touched account after the change, by id

    def entry_account(self, entry: Recorded) -> Account:
        return self.accounts[entry.movement.account_id]


def apply(accounts: Mapping[str, Account], movements: Sequence[Movement], *, check_bounds: bool) -> Change:
    """Run ``movements`` in order against ``accounts`` (which it leaves untouched).

    Raises ``AmountOverflow`` when a part of a balance would leave the 64-bit range and, when
    ``check_bounds``, ``InsufficientFunds`` when a touched account ends outside its bounds.
    """
    balances: dict[str, Balance] = {}
    entries: list[Recorded] = []
    for movement in movements:
        account = accounts[movement.account_id]
        before = balances.get(movement.account_id, account.balance)
        after = before.moved(account.normal_balance, movement.kind, movement.direction, movement.amount)
        balances[movement.account_id] = after
        entries.append(Recorded(movement, after))
    touched = {
        account_id: accounts[account_id].with_balance(balance, check_bounds=check_bounds)
        for account_id, balance in balances.items()
    }
    return Change(tuple(entries), touched)


def settled(accounts: dict[str, Account], change: Change) -> None:
    """Carry a change into ``accounts``, so the next operation in the same transaction sees it."""
    accounts.update(change.accounts)


def without_pending(account: Account, released: Sequence[tuple[Direction, int]], count: int) -> Account:
    """``account`` as it reads once ``count`` due holds releasing ``released`` have expired.

    Used by reads, which see an expired hold as released before any sweeper has run (ADR 0014).
    """
    balance = account.balance
    for direction, amount in released:
        balance = balance.moved(account.normal_balance, EntryKind.RELEASE, direction, amount)
    return replace(account, balance=balance, version=account.version + count)

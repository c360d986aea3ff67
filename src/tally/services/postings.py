"""What every write that moves balances shares: locking accounts, expiring due holds, recording.

Expiry is swept on touch (ADR 0014): before a write changes an account, every hold on it whose
``expires_at`` has come is expired first, in expiry order, with its release entries dated at that
``expires_at``. So no entry of an account is ever written after the expiry of one of its unswept
holds, which is what lets reads (``seen``) and history (``balance_as_of``) treat a due hold as
released without anyone having swept it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime

from tally.domain import holds
from tally.domain.accounts import Account, Direction
from tally.domain.postings import Change, settled, without_pending
from tally.domain.transfers import Transfer
from tally.services.ports import NewEntry, NewEvent, Transaction
from tally.services.views import transfer_view


async def lock_accounts(tx: Transaction, ledger_id: str, account_ids: Iterable[str]) -> dict[str, Account]:
    """The existing accounts among ``account_ids``, locked, with their due holds expired first.

    The transaction's time is read here, after the locks (ADR 0020): a write that waited for an
    account behind another one gets a later time than it, so each account's entries are dated in
    the order they were written, which ``balance_as_of`` relies on.
    """
    accounts = await tx.accounts.lock(ledger_id, sorted(set(account_ids)))
    now = await tx.now()
    due: dict[int, Transfer] = {}
    while True:
        holding = [a.pk for a in accounts.values() if not _without_holds(a)]
        found = dict.fromkeys(h.transfer_pk for h in await tx.holds.due(holding, now))
        new = [pk for pk in found if pk not in due]
        if not new:
            break
        for pk in new:
            transfer = await tx.transfers.lock_by_pk(pk)
            if transfer is not None:
                due[pk] = transfer
        # A due hold may also hold on an account not asked for: lock it too, and look again,
        # since that account may carry due holds of its own that must be expired in order.
        missing = {leg.account_id for pk in new if pk in due for leg in due[pk].legs} - accounts.keys()
        if not missing:
            break
        accounts.update(await tx.accounts.lock(ledger_id, sorted(missing)))
    for transfer in sorted(due.values(), key=lambda t: (t.expires_at or now, t.pk)):
        await _expire(tx, transfer, accounts, now)
    return accounts


async def _expire(tx: Transaction, transfer: Transfer, accounts: dict[str, Account], now: datetime) -> None:
    expired, change = holds.expire(transfer, accounts)
    # Dated at the instant the hold expired: ``balance_as_of`` between then and now must see it gone.
    # Expiry is a timer's doing, not the request's that happened to sweep it (API.md: request_id null).
    await record_resolution(
        tx,
        expired,
        change,
        now,
        entries_at=transfer.expires_at or now,
        event="transfer.expired",
        request_id=None,
    )
    settled(accounts, change)


async def record_resolution(
    tx: Transaction,
    resolved: Transfer,
    change: Change,
    now: datetime,
    *,
    entries_at: datetime,
    event: str,
    request_id: str | None,
) -> None:
    """Write down a hold that resolved (posted, voided or expired): balances first, then the
    transfer, its entries, the end of its open-hold rows and its event."""
    await save_balances(tx, change, now)
    await tx.transfers.save(resolved)
    await append_entries(tx, resolved.pk, change, entries_at)
    await tx.holds.remove(resolved.pk)
    await tx.events.add(NewEvent(resolved.ledger_id, event, transfer_view(resolved), request_id), now)


async def save_balances(tx: Transaction, change: Change, now: datetime) -> None:
    await tx.accounts.save_balances(list(change.accounts.values()), now)


async def append_entries(tx: Transaction, transfer_pk: int, change: Change, at: datetime) -> None:
    await tx.entries.add_many([(transfer_pk, new_entries(change))], at)


def new_entries(change: Change) -> list[NewEntry]:
    """The entries a change writes, each with its account's balance after it."""
    return [
        NewEntry(
            change.entry_account(entry).pk,
            entry.movement.kind,
            entry.movement.direction,
            entry.movement.amount,
            entry.balance_after,
            change.entry_account(entry).version,
        )
        for entry in change.entries
    ]


async def seen(tx: Transaction, accounts: Sequence[Account], at: datetime) -> list[Account]:
    """``accounts`` as they read at ``at``: holds due by then count as released (and versioned)."""
    holding = [a.pk for a in accounts if not _without_holds(a)]
    if not holding:
        return list(accounts)
    released: defaultdict[int, list[tuple[Direction, int]]] = defaultdict(list)
    expiries: defaultdict[int, set[int]] = defaultdict(set)
    for leg in await tx.holds.due(holding, at):
        released[leg.account_pk].append((leg.direction, leg.amount))
        expiries[leg.account_pk].add(leg.transfer_pk)
    return [
        without_pending(a, released[a.pk], len(expiries[a.pk])) if a.pk in released else a for a in accounts
    ]


def _without_holds(account: Account) -> bool:
    return account.balance.pending_debits == 0 and account.balance.pending_credits == 0

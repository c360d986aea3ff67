"""Use cases of holds: post (in full or in part), void, and the sweeper that expires due holds.

The transfer row is locked before its accounts, on every path that changes an existing transfer,
so two resolutions of one hold queue behind each other and the second finds it no longer pending.
"""

from __future__ import annotations

from datetime import datetime

from tally.domain import holds
from tally.domain.accounts import Account
from tally.domain.errors import NotFound
from tally.domain.transfers import Transfer, TransferStatus
from tally.services.ports import Database, Transaction
from tally.services.postings import lock_accounts, record_resolution

SWEEP_BATCH = 100  # holds expired per sweeper transaction, to keep each write short


async def post_hold(
    tx: Transaction, ledger_id: str, transfer_id: str, amount: int | None, *, request_id: str | None
) -> Transfer:
    """Post a pending transfer; ``amount`` posts part of a two-leg hold and releases the rest."""
    transfer, accounts, now = await _pending(tx, ledger_id, transfer_id)
    posted, change = holds.post(transfer, accounts, amount, now)
    if amount is not None:  # a partial post: the legs now show what was posted
        await tx.transfers.save_leg_amounts(posted)
    await record_resolution(
        tx, posted, change, now, entries_at=now, event="transfer.posted", request_id=request_id
    )
    return posted


async def void_hold(tx: Transaction, ledger_id: str, transfer_id: str, *, request_id: str | None) -> Transfer:
    """Release a pending transfer's hold in full."""
    transfer, accounts, now = await _pending(tx, ledger_id, transfer_id)
    voided, change = holds.void(transfer, accounts, now)
    await record_resolution(
        tx, voided, change, now, entries_at=now, event="transfer.voided", request_id=request_id
    )
    return voided


async def _pending(
    tx: Transaction, ledger_id: str, transfer_id: str
) -> tuple[Transfer, dict[str, Account], datetime]:
    """The pending transfer, locked, and its accounts, locked; the time is read after both."""
    transfer = await tx.transfers.lock(ledger_id, transfer_id)
    if transfer is None:
        raise NotFound(f"Transfer {transfer_id} does not exist.")
    holds.require_pending(transfer, None)  # posted or voided: refused before any account is locked
    accounts = await lock_accounts(tx, ledger_id, (leg.account_id for leg in transfer.legs))
    now = await tx.now()
    # A hold that came due is refused as expired (the sweep just wrote it down; the refusal rolls
    # that back, and the sweeper writes it down again).
    holds.require_pending(transfer, now)
    return transfer, accounts, now


async def expire_due_holds(database: Database) -> int:
    """Expire holds whose ``expires_at`` has come, oldest first; returns how many were due.

    Reads already treat a due hold as expired; sweeping writes it down (status, release entries,
    the ``transfer.expired`` event) so the outbox announces it.
    """
    async with database.read() as tx:
        # Most ticks find nothing due: looking first on a reader keeps them off the write lock.
        if not await tx.holds.expiring(await tx.now(), 1):
            return 0
    async with database.write() as tx:
        return await expire_holds_due(tx, await tx.now(), SWEEP_BATCH)


async def expire_holds_due(tx: Transaction, at: datetime, limit: int) -> int:
    """In ``tx``, expire up to ``limit`` holds due at or before ``at``, oldest expiry first; how many
    were due (the sweeper's transaction, and a step of the ``expire-holds`` batch job).

    Fix ``at`` before calling: a locked account that changed after it makes the transaction run
    again (``TransientConflict``, ADR 0020).
    """
    due = await tx.holds.expiring(at, limit)
    for pk in due:
        transfer = await tx.transfers.lock_by_pk(pk)
        if transfer is None or transfer.status is not TransferStatus.PENDING:
            continue  # expired a moment ago, with the accounts of another due hold
        # Locking its accounts expires it, with every other due hold on them, in order.
        await lock_accounts(tx, transfer.ledger_id, (leg.account_id for leg in transfer.legs))
    return len(due)

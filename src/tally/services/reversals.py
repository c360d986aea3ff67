"""Use case of reversals: a new posted transfer with the original's legs swapped."""

from __future__ import annotations

from tally.domain import reversals
from tally.domain.errors import NotFound
from tally.domain.ids import new_id
from tally.domain.transfers import Transfer, TransferStatus
from tally.services.ports import NewEvent, Transaction
from tally.services.postings import append_entries, lock_accounts, save_balances
from tally.services.views import transfer_view


async def reverse_transfer(
    tx: Transaction,
    ledger_id: str,
    transfer_id: str,
    amount: int | None,
    *,
    description: str | None,
    request_id: str | None,
) -> Transfer:
    """Reverse ``amount`` of a posted transfer (``None``: what is left); return the reversal."""
    original = await tx.transfers.lock(ledger_id, transfer_id)
    if original is None:
        raise NotFound(f"Transfer {transfer_id} does not exist.")
    reversals.require_posted(original)
    accounts = await lock_accounts(tx, ledger_id, (leg.account_id for leg in original.legs))
    now = await tx.now()
    reversal = reversals.reverse(original, accounts, amount)
    await save_balances(tx, reversal.change, now)
    await tx.transfers.save(reversal.original)
    transfer = await tx.transfers.add(
        Transfer(
            pk=0,
            ledger_id=ledger_id,
            id=new_id("tr"),
            status=TransferStatus.POSTED,
            legs=reversal.legs,
            description=description,
            metadata={},
            reverses=original.id,
            reversed_amount=0,
            expires_at=None,
            created_at=now,
            posted_at=now,
        ),
        {leg.account_id: accounts[leg.account_id].pk for leg in reversal.legs},
        reverses_pk=original.pk,
    )
    await append_entries(tx, transfer.pk, reversal.change, now)
    await tx.events.add(NewEvent(ledger_id, "transfer.created", transfer_view(transfer), request_id), now)
    return transfer

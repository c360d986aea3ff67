"""Use cases of transfers: create (simple or multi-leg), read, list.

Writes follow one order on every database (DESIGN.md): lock the accounts in ``pk`` order, check
everything, update the balances, then insert the transfer, its legs, its entries and its event.
Taking the balance row locks first and in one order is what keeps hot accounts free of deadlocks.
"""

from __future__ import annotations

from tally.domain.errors import AccountNotFound, IdConflict, NotFound
from tally.domain.ids import new_id
from tally.domain.transfers import Transfer, TransferRequest, TransferStatus, plan
from tally.services.ports import Database, NewEntry, NewEvent, Page, Transaction
from tally.services.views import transfer_view


async def create_transfer(
    tx: Transaction,
    ledger_id: str,
    request: TransferRequest,
    *,
    request_hash: bytes,
    request_id: str | None,
) -> tuple[Transfer, bool]:
    """Post a transfer; with a client id already used, return it (same body) or refuse.

    Returns the transfer and whether it was created now. ``request.check()`` must have passed.
    """
    account_ids = [leg.account_id for leg in request.legs]
    if request.id is not None:
        existing = await tx.transfers.get(ledger_id, request.id)
        if existing is not None:
            if existing.request_hash == request_hash:
                return existing, False
            # Lookups answer before state, and state before business rules (API.md precedence).
            found = await tx.accounts.lock(ledger_id, account_ids)
            for account_id in account_ids:
                if account_id not in found:
                    raise AccountNotFound(f"Account {account_id} does not exist.")
            raise IdConflict(f"Transfer {request.id} exists with a different body.")
    accounts = await tx.accounts.lock(ledger_id, account_ids)
    posting = plan(request, accounts)
    now = await tx.now()
    await tx.accounts.save_balances(posting.accounts, now)
    transfer = await tx.transfers.add(
        Transfer(
            pk=0,
            ledger_id=ledger_id,
            id=request.id or new_id("tr"),
            status=TransferStatus.POSTED,
            legs=posting.legs,
            description=request.description,
            metadata=request.metadata,
            reverses=None,
            reversed_amount=0,
            expires_at=None,
            created_at=now,
            posted_at=now,
            request_hash=request_hash,
        ),
        {account.id: account.pk for account in posting.accounts},
    )
    await tx.entries.add(
        transfer.pk,
        [
            NewEntry(account.pk, leg.direction, leg.amount, account.balance, account.version)
            for leg, account in zip(posting.legs, posting.accounts, strict=True)
        ],
        now,
    )
    await tx.events.add(NewEvent(ledger_id, "transfer.created", transfer_view(transfer), request_id), now)
    return transfer, True


async def get_transfer(database: Database, ledger_id: str, transfer_id: str) -> Transfer:
    async with database.read() as tx:
        transfer = await tx.transfers.get(ledger_id, transfer_id)
    if transfer is None:
        raise NotFound(f"Transfer {transfer_id} does not exist.")
    return transfer


async def list_transfers(
    database: Database,
    ledger_id: str,
    *,
    account_id: str | None,
    status: TransferStatus | None,
    before: int | None,
    limit: int,
) -> Page[Transfer]:
    async with database.read() as tx:
        account_pk = None
        if account_id is not None:
            account = await tx.accounts.get(ledger_id, account_id)
            if account is None:
                return Page([], None)
            account_pk = account.pk
        return await tx.transfers.list(
            ledger_id, account_pk=account_pk, status=status, before=before, limit=limit
        )

"""Use cases of transfers: create (simple or multi-leg, posted or held), in batches, read, list.

Writes follow one order on every database (DESIGN.md): lock the accounts in ``pk`` order, check
everything, update the balances, then insert the transfer, its legs, its entries and its event.
Taking the balance row locks first and in one order is what keeps hot accounts free of deadlocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from tally.domain.accounts import Account
from tally.domain.errors import (
    AccountNotFound,
    BatchFailed,
    IdConflict,
    NotFound,
    Rejection,
    RequestError,
    TallyError,
    ValidationFailed,
)
from tally.domain.ids import new_id
from tally.domain.postings import settled
from tally.domain.transfers import Transfer, TransferRequest, TransferStatus, plan
from tally.services.ports import Database, NewEvent, Page, Transaction
from tally.services.postings import add_hold, append_entries, lock_accounts, save_balances
from tally.services.views import transfer_view


async def create_transfer(
    tx: Transaction,
    ledger_id: str,
    request: TransferRequest,
    *,
    request_hash: bytes,
    request_id: str | None,
) -> tuple[Transfer, bool]:
    """Post a transfer or place a hold; with a client id already used, return it (same body) or refuse.

    Returns the transfer and whether it was created now. ``request.check()`` must have passed.
    """
    accounts = await lock_accounts(tx, ledger_id, (leg.account_id for leg in request.legs))
    now = await tx.now()
    return await _create(
        tx, ledger_id, request, accounts, now=now, request_hash=request_hash, request_id=request_id
    )


async def _create(
    tx: Transaction,
    ledger_id: str,
    request: TransferRequest,
    accounts: dict[str, Account],
    *,
    now: datetime,
    request_hash: bytes,
    request_id: str | None,
) -> tuple[Transfer, bool]:
    """Create against ``accounts`` (locked, swept), and carry the change into them.

    Every rule is checked before the first write, so a refused request leaves nothing behind.
    """
    if request.id is not None:
        existing = await tx.transfers.get(ledger_id, request.id)
        if existing is not None:
            if existing.request_hash == request_hash:
                return existing.seen_at(now), False
            # Lookups answer before state, and state before business rules (API.md precedence).
            for leg in request.legs:
                if leg.account_id not in accounts:
                    raise AccountNotFound(f"Account {leg.account_id} does not exist.")
            raise IdConflict(f"Transfer {request.id} exists with a different body.")
    if request.expires_at is not None and request.expires_at <= now:
        raise ValidationFailed.at(("body", "expires_at"), "expires_at must be in the future.")
    posting = plan(request, accounts)
    await save_balances(tx, posting.change, now)
    draft = Transfer(
        pk=0,
        ledger_id=ledger_id,
        id=request.id or new_id("tr"),
        status=TransferStatus.PENDING if request.pending else TransferStatus.POSTED,
        legs=posting.legs,
        description=request.description,
        metadata=request.metadata,
        reverses=None,
        reversed_amount=0,
        expires_at=request.expires_at,
        created_at=now,
        posted_at=None if request.pending else now,
        request_hash=request_hash,
    )
    if request.pending and draft.is_simple:
        draft = replace(draft, held_amount=draft.amount)
    transfer = await tx.transfers.add(
        draft, {leg.account_id: accounts[leg.account_id].pk for leg in posting.legs}
    )
    await append_entries(tx, transfer.pk, posting.change, now)
    if request.pending:
        await add_hold(tx, transfer, accounts)
    await tx.events.add(NewEvent(ledger_id, "transfer.created", transfer_view(transfer), request_id), now)
    settled(accounts, posting.change)
    return transfer, True


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One transfer of a batch: the request, or the error that its body alone already shows."""

    request: TransferRequest | None
    request_hash: bytes
    error: TallyError | None = None


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    index: int
    status: Literal["created", "exists", "error"]
    transfer: Transfer | None = None
    error: TallyError | None = None


async def create_batch(
    tx: Transaction,
    ledger_id: str,
    items: Sequence[BatchItem],
    *,
    atomic: bool,
    request_id: str | None,
) -> list[ItemOutcome]:
    """Apply ``items`` in order in one transaction; item n sees what item n−1 did.

    Every item is tried, so that an atomic batch reports all of its failures (``BatchFailed``, and
    the transaction rolls back); otherwise failed items are reported and the rest is applied. The
    accounts of the whole batch are locked once, up front, in one order.
    """
    named = (leg.account_id for item in items if item.request for leg in item.request.legs)
    accounts = await lock_accounts(tx, ledger_id, named)
    now = await tx.now()
    outcomes: list[ItemOutcome] = []
    for index, item in enumerate(items):
        if item.request is None:
            outcomes.append(ItemOutcome(index, "error", error=item.error))
            continue
        try:
            transfer, created = await _create(
                tx,
                ledger_id,
                item.request,
                accounts,
                now=now,
                request_hash=item.request_hash,
                request_id=request_id,
            )
        except (Rejection, RequestError, NotFound) as error:
            outcomes.append(ItemOutcome(index, "error", error=error))
        else:
            outcomes.append(ItemOutcome(index, "created" if created else "exists", transfer=transfer))
    failures = [(o.index, o.error) for o in outcomes if o.error is not None]
    if atomic and failures:
        raise BatchFailed(failures)
    return outcomes


async def get_transfer(database: Database, ledger_id: str, transfer_id: str) -> Transfer:
    async with database.read() as tx:
        transfer = await tx.transfers.get(ledger_id, transfer_id)
        now = await tx.now()
    if transfer is None:
        raise NotFound(f"Transfer {transfer_id} does not exist.")
    return transfer.seen_at(now)


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
        now = await tx.now()
        account_pk = None
        if account_id is not None:
            account = await tx.accounts.get(ledger_id, account_id)
            if account is None:
                return Page([], None)
            account_pk = account.pk
        page = await tx.transfers.list(
            ledger_id, account_pk=account_pk, status=status, now=now, before=before, limit=limit
        )
    return Page([transfer.seen_at(now) for transfer in page.items], page.next_after)

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
    IdempotencyKeyReused,
    NotFound,
    Rejection,
    RequestError,
    TallyError,
    ValidationFailed,
)
from tally.domain.ids import new_id
from tally.domain.postings import Change, settled
from tally.domain.transfers import Transfer, TransferRequest, TransferStatus, plan
from tally.services.idempotency import RETENTION, IdempotencyKey, Outcome, Reject, replay
from tally.services.ports import (
    Database,
    HeldLeg,
    IdempotencyRecord,
    NewEvent,
    Page,
    StoredReply,
    Transaction,
)
from tally.services.postings import lock_accounts, new_entries
from tally.services.views import JsonObject, json_reply, transfer_view


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
    known = {} if request.id is None else await tx.transfers.get_many(ledger_id, [request.id])
    decided = _decide(ledger_id, request, accounts, known, now=now, request_hash=request_hash)
    if isinstance(decided, Transfer):
        return decided, False
    [(transfer, _)] = await _write(tx, ledger_id, [decided], now=now, request_ids=[request_id])
    return transfer, True


@dataclass(frozen=True, slots=True)
class _Draft:
    """A transfer decided against the locked accounts, not written yet."""

    transfer: Transfer  # pk 0 until written
    change: Change
    account_pks: dict[str, int]


def _decide(
    ledger_id: str,
    request: TransferRequest,
    accounts: dict[str, Account],
    known: dict[str, Transfer],
    *,
    now: datetime,
    request_hash: bytes,
) -> Transfer | _Draft:
    """The stored transfer this request repeats, or a draft of the new one, carried into ``accounts``.

    ``known`` holds the transfers with the client ids of this request (and of the batch so far).
    Every rule is checked before anything changes, so a refused request leaves nothing behind.
    """
    if request.id is not None:
        existing = known.get(request.id)
        if existing is not None:
            if existing.request_hash == request_hash:
                return existing.seen_at(now)
            # Lookups answer before state, and state before business rules (API.md precedence).
            for leg in request.legs:
                if leg.account_id not in accounts:
                    raise AccountNotFound(f"Account {leg.account_id} does not exist.")
            raise IdConflict(f"Transfer {request.id} exists with a different body.")
    if request.expires_at is not None and request.expires_at <= now:
        raise ValidationFailed.at(("body", "expires_at"), "expires_at must be in the future.")
    posting = plan(request, accounts)
    transfer = Transfer(
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
    if request.pending and transfer.is_simple:
        transfer = replace(transfer, held_amount=transfer.amount)
    settled(accounts, posting.change)
    known[transfer.id] = transfer
    return _Draft(
        transfer, posting.change, {leg.account_id: accounts[leg.account_id].pk for leg in posting.legs}
    )


async def _write(
    tx: Transaction,
    ledger_id: str,
    drafts: Sequence[_Draft],
    *,
    now: datetime,
    request_ids: Sequence[str | None],
) -> list[tuple[Transfer, JsonObject]]:
    """Write the drafts, one statement per table however many there are: the balances as the last
    draft left them, then the transfers, their legs, entries, holds and events (each event naming
    its draft's request in ``request_ids``). Returns each transfer with its view (its event's data,
    which a response may show as it is)."""
    final: dict[int, Account] = {}
    for draft in drafts:
        final.update((account.pk, account) for account in draft.change.accounts.values())
    await tx.accounts.save_balances(list(final.values()), now)
    transfers = await tx.transfers.add_many([(draft.transfer, draft.account_pks) for draft in drafts])
    await tx.entries.add_many(
        [(transfer.pk, new_entries(draft.change)) for transfer, draft in zip(transfers, drafts, strict=True)],
        now,
    )
    held = [
        HeldLeg(
            transfer.pk, draft.account_pks[leg.account_id], leg.direction, leg.amount, transfer.expires_at
        )
        for transfer, draft in zip(transfers, drafts, strict=True)
        if transfer.status is TransferStatus.PENDING
        for leg in transfer.legs
    ]
    if held:
        await tx.holds.add(held)
    views = [transfer_view(transfer) for transfer in transfers]
    await tx.events.add_many(
        [
            NewEvent(ledger_id, "transfer.created", view, request_id)
            for view, request_id in zip(views, request_ids, strict=True)
        ],
        now,
    )
    return list(zip(transfers, views, strict=True))


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
    view: JsonObject | None = None  # the transfer's view, when it was made with it (created now)


async def create_batch(
    tx: Transaction,
    ledger_id: str,
    items: Sequence[BatchItem],
    *,
    atomic: bool,
    request_id: str | None,
) -> list[ItemOutcome]:
    """Apply ``items`` in order in one transaction; item n sees what item n−1 did.

    Every item is decided in memory first, so that an atomic batch reports all of its failures
    (``BatchFailed``, and nothing is written); otherwise failed items are reported and the rest is
    applied. The accounts of the whole batch are locked once, up front, in one order, and the
    transfers already using the batch's client ids are read in one statement; the created transfers
    are then written with one statement per table (``_write``).
    """
    named = (leg.account_id for item in items if item.request for leg in item.request.legs)
    accounts = await lock_accounts(tx, ledger_id, named)
    now = await tx.now()
    ids = {item.request.id for item in items if item.request is not None and item.request.id is not None}
    known = await tx.transfers.get_many(ledger_id, sorted(ids)) if ids else {}
    outcomes: list[ItemOutcome] = []
    drafts: list[_Draft] = []
    for index, item in enumerate(items):
        if item.request is None:
            outcomes.append(ItemOutcome(index, "error", error=item.error))
            continue
        try:
            decided = _decide(
                ledger_id, item.request, accounts, known, now=now, request_hash=item.request_hash
            )
        except (Rejection, RequestError, NotFound) as error:
            outcomes.append(ItemOutcome(index, "error", error=error))
        else:
            if isinstance(decided, _Draft):
                drafts.append(decided)
                outcomes.append(ItemOutcome(index, "created", transfer=decided.transfer))
            else:
                outcomes.append(ItemOutcome(index, "exists", transfer=decided))
    failures = [(o.index, o.error) for o in outcomes if o.error is not None]
    if atomic and failures:
        raise BatchFailed(failures)
    if not drafts:
        return outcomes
    written = {
        t.id: (t, view)
        for t, view in await _write(tx, ledger_id, drafts, now=now, request_ids=[request_id] * len(drafts))
    }
    # Outcomes name drafts (pk 0); a repeat of a transfer created earlier in this batch, too.
    return [_written_in(outcome, written, now) for outcome in outcomes]


def _written_in(
    outcome: ItemOutcome, written: dict[str, tuple[Transfer, JsonObject]], now: datetime
) -> ItemOutcome:
    if outcome.transfer is None or outcome.transfer.pk != 0:
        return outcome
    stored, view = written[outcome.transfer.id]
    if outcome.status == "created":
        return replace(outcome, transfer=stored, view=view)
    return replace(outcome, transfer=stored.seen_at(now))


@dataclass(frozen=True, slots=True)
class KeyedTransfer:
    """One ``POST /v1/transfers`` of a group (``services.transfer_groups``): its own idempotency
    key, its request id (for its event) and how its rejection is rendered."""

    ledger_id: str
    key: IdempotencyKey
    request: TransferRequest
    request_hash: bytes
    request_id: str | None
    reject: Reject


async def create_transfers(tx: Transaction, members: Sequence[KeyedTransfer]) -> list[Outcome | TallyError]:
    """Each member as ``create_transfer`` run alone through the idempotent executor would answer it,
    all in one transaction; a ``TallyError`` for a member is raised to its request as it is.

    Per ledger: the members' idempotency records are read in one statement (a replay answers the
    stored reply; another request's key is refused, nothing stored); the others' accounts are
    locked once in ``pk`` order and their client ids looked up once; each is decided in arrival
    order against what the ones before it did, and a rejection changes nothing, so it never fails
    a neighbour; the created transfers are written with one statement per table (``_write``). The
    new replies, rejections included, are stored with one statement, each under its own key.
    """
    results: dict[int, Outcome | TallyError] = {}
    by_ledger: dict[str, list[int]] = {}
    for index, member in enumerate(members):
        by_ledger.setdefault(member.ledger_id, []).append(index)
    records: list[IdempotencyRecord] = []
    now: datetime | None = None
    for ledger_id, indexes in by_ledger.items():
        stored = await tx.idempotency.get_many(ledger_id, [members[i].key.key for i in indexes])
        fresh: list[int] = []
        for i in indexes:
            record = stored.get(members[i].key.key)
            if record is None:
                fresh.append(i)
                continue
            try:
                results[i] = replay(record, members[i].key)
            except IdempotencyKeyReused as refused:  # not stored: raised to its request, as alone
                results[i] = refused
        if not fresh:
            continue
        now, replies = await _decide_and_write(tx, ledger_id, [members[i] for i in fresh])
        for i, reply in zip(fresh, replies, strict=True):
            results[i] = Outcome(reply, replayed=False)
            records.append(
                IdempotencyRecord(ledger_id, members[i].key.key, members[i].key.fingerprint, reply, now)
            )
    if now is not None:
        await tx.idempotency.add_many(records, keep_until=now + RETENTION)
    return [results[i] for i in range(len(members))]  # every member has its answer


async def _decide_and_write(
    tx: Transaction, ledger_id: str, members: Sequence[KeyedTransfer]
) -> tuple[datetime, list[StoredReply]]:
    """The reply of each member of one ledger, its transfer written if it made one."""
    named = (leg.account_id for member in members for leg in member.request.legs)
    accounts = await lock_accounts(tx, ledger_id, named)
    now = await tx.now()
    ids = sorted({member.request.id for member in members if member.request.id is not None})
    known = await tx.transfers.get_many(ledger_id, ids) if ids else {}
    decided: list[Transfer | _Draft | StoredReply] = []
    for member in members:
        try:
            decided.append(
                _decide(ledger_id, member.request, accounts, known, now=now, request_hash=member.request_hash)
            )
        except (Rejection, RequestError, NotFound) as rejection:
            decided.append(member.reject(rejection))  # stored, as alone (services.idempotency)
    drafts = [(d, m.request_id) for d, m in zip(decided, members, strict=True) if isinstance(d, _Draft)]
    written: dict[str, tuple[Transfer, JsonObject]] = {}
    if drafts:
        pairs = await _write(
            tx, ledger_id, [d for d, _ in drafts], now=now, request_ids=[r for _, r in drafts]
        )
        written = {transfer.id: (transfer, view) for transfer, view in pairs}
    replies: list[StoredReply] = []
    for outcome in decided:
        if isinstance(outcome, StoredReply):
            replies.append(outcome)
        elif isinstance(outcome, _Draft):
            replies.append(json_reply(201, written[outcome.transfer.id][1]))
        else:  # a transfer with this client id and body: stored, or created earlier in the group (pk 0)
            existing = written[outcome.id][0].seen_at(now) if outcome.pk == 0 else outcome
            replies.append(json_reply(200, transfer_view(existing)))
    return now, replies


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

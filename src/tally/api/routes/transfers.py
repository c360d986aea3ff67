"""Transfers: create (simple or multi-leg, posted or held), batches, holds, reversals, read, list."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from tally.api.problems import problem_for
from tally.api.replies import (
    decode_cursor,
    idempotency_key,
    page_reply,
    rejecter,
    request_hash,
    request_id,
    respond_json,
    respond_outcome,
    run_write,
)
from tally.api.routing import Access, TallyRoute, access, ledger_of
from tally.api.schemas import (
    BatchOut,
    ClientId,
    Cursor,
    HoldPost,
    HoldVoid,
    Limit,
    TransferBatch,
    TransferCreate,
    TransferOut,
    TransferPage,
    TransferReverse,
)
from tally.domain.accounts import Direction
from tally.domain.errors import RequestError
from tally.domain.transfers import LegRequest, TransferRequest, TransferStatus
from tally.services import holds, reversals, transfers
from tally.services.ports import StoredReply, Transaction
from tally.services.views import JsonObject, json_reply, transfer_view

router = APIRouter(route_class=TallyRoute, tags=["transfers"])


def transfer_request(body: TransferCreate) -> TransferRequest:
    """The domain's view of a create body; the body-alone rules are checked here."""
    if body.legs is not None:
        legs = tuple(LegRequest(leg.account_id, leg.direction, leg.amount) for leg in body.legs)
        simple = False
    else:
        # TransferCreate's validator guarantees the three simple-form fields here.
        legs = (
            LegRequest(str(body.debit_account_id), Direction.DEBIT, int(body.amount or 0)),
            LegRequest(str(body.credit_account_id), Direction.CREDIT, int(body.amount or 0)),
        )
        simple = True
    request = TransferRequest(
        legs=legs,
        id=body.id,
        currency=body.currency,
        description=body.description,
        metadata=body.metadata or {},
        simple=simple,
        pending=body.pending,
        expires_at=body.expires_at,
    )
    request.check()
    return request


@router.post(
    "/v1/transfers",
    status_code=201,
    response_model=TransferOut,
    responses={200: {"model": TransferOut, "description": "A transfer with this `id` and body exists: it."}},
    openapi_extra=access(Access.WRITE),
)
async def create_transfer(body: TransferCreate, request: Request) -> Response:
    ledger_id = ledger_of(request)
    command = transfer_request(body)
    digest = request_hash(body)

    rid = request_id(request)

    async def action(tx: Transaction) -> StoredReply:
        transfer, created = await transfers.create_transfer(
            tx, ledger_id, command, request_hash=digest, request_id=rid
        )
        return json_reply(201 if created else 200, transfer_view(transfer))

    groups = request.app.state.tally.transfer_groups
    if groups is None:
        outcome = await run_write(request, ledger_id, action, key_required=True)
    else:
        key = await idempotency_key(request, required=True)
        member = transfers.KeyedTransfer(ledger_id, key, command, digest, rid, rejecter(request))
        outcome = await groups.create(member, action)
    return respond_outcome(request, outcome)


@router.post(
    "/v1/transfers/batch",
    status_code=201,
    response_model=BatchOut,
    responses={200: {"model": BatchOut, "description": "`atomic: false`: a result per item."}},
    openapi_extra=access(Access.WRITE, long=True),
)
async def create_batch(body: TransferBatch, request: Request) -> Response:
    """Up to 1000 transfers in order, in one transaction (item n sees item n−1).

    `atomic: true` answers 201 with every result, or 422 `batch_failed` listing each failed item, and
    applies nothing then. `atomic: false` answers 200 with a result per item: `created`, `exists` or
    `error`. Client ids dedupe per item; the Idempotency-Key covers the whole batch.
    """
    ledger_id = ledger_of(request)
    items = [batch_item(item) for item in body.transfers]

    async def action(tx: Transaction) -> StoredReply:
        outcomes = await transfers.create_batch(
            tx, ledger_id, items, atomic=body.atomic, request_id=request_id(request)
        )
        return json_reply(201 if body.atomic else 200, {"results": [batch_result(o) for o in outcomes]})

    outcome = await run_write(request, ledger_id, action, key_required=True)
    return respond_outcome(request, outcome)


def batch_item(body: TransferCreate) -> transfers.BatchItem:
    """One item of a batch (here, or queued: ``api.batch_schemas``); a body-rule error stays per item."""
    try:
        return transfers.BatchItem(transfer_request(body), request_hash(body))
    except RequestError as error:  # a rule decided by the item's body alone, such as same_account
        return transfers.BatchItem(None, request_hash(body), error)


def batch_result(outcome: transfers.ItemOutcome) -> JsonObject:
    """One item's result, as both batch routes answer it."""
    result: JsonObject = {"index": outcome.index, "status": outcome.status}
    if outcome.transfer is not None:
        result["transfer"] = outcome.view if outcome.view is not None else transfer_view(outcome.transfer)
    if outcome.error is not None:
        problem = problem_for(outcome.error)
        result["error"] = {"code": problem.code, "detail": outcome.error.detail or problem.title}
    return result


@router.post(
    "/v1/transfers/{transfer_id}/post", response_model=TransferOut, openapi_extra=access(Access.WRITE)
)
async def post_hold(transfer_id: str, request: Request, body: HoldPost | None = None) -> Response:
    """Post a pending transfer: in full, or `amount` of a two-leg hold (the rest is released)."""
    ledger_id = ledger_of(request)
    amount = body.amount if body is not None else None

    async def action(tx: Transaction) -> StoredReply:
        posted = await holds.post_hold(tx, ledger_id, transfer_id, amount, request_id=request_id(request))
        return json_reply(200, transfer_view(posted))

    outcome = await run_write(request, ledger_id, action, key_required=True)
    return respond_outcome(request, outcome)


@router.post(
    "/v1/transfers/{transfer_id}/void", response_model=TransferOut, openapi_extra=access(Access.WRITE)
)
async def void_hold(transfer_id: str, request: Request, body: HoldVoid | None = None) -> Response:
    """Release a pending transfer's hold; allowed on frozen accounts."""
    ledger_id = ledger_of(request)

    async def action(tx: Transaction) -> StoredReply:
        voided = await holds.void_hold(tx, ledger_id, transfer_id, request_id=request_id(request))
        return json_reply(200, transfer_view(voided))

    outcome = await run_write(request, ledger_id, action, key_required=True)
    return respond_outcome(request, outcome)


@router.post(
    "/v1/transfers/{transfer_id}/reverse",
    status_code=201,
    response_model=TransferOut,
    openapi_extra=access(Access.WRITE),
)
async def reverse_transfer(
    transfer_id: str, request: Request, body: TransferReverse | None = None
) -> Response:
    """A new posted transfer with the legs swapped and `reverses` set; omit `amount` for all that is left."""
    ledger_id = ledger_of(request)
    amount = body.amount if body is not None else None
    description = body.description if body is not None else None

    async def action(tx: Transaction) -> StoredReply:
        reversal = await reversals.reverse_transfer(
            tx, ledger_id, transfer_id, amount, description=description, request_id=request_id(request)
        )
        return json_reply(201, transfer_view(reversal))

    outcome = await run_write(request, ledger_id, action, key_required=True)
    return respond_outcome(request, outcome)


@router.get("/v1/transfers/{transfer_id}", response_model=TransferOut, openapi_extra=access(Access.READ))
async def get_transfer(transfer_id: str, request: Request) -> Response:
    transfer = await transfers.get_transfer(request.app.state.tally.database, ledger_of(request), transfer_id)
    return respond_json(200, transfer_view(transfer))


@router.get("/v1/transfers", response_model=TransferPage, openapi_extra=access(Access.READ))
async def list_transfers(
    request: Request,
    account_id: Annotated[ClientId | None, Query()] = None,
    status: TransferStatus | None = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Response:
    page = await transfers.list_transfers(
        request.app.state.tally.database,
        ledger_of(request),
        account_id=account_id,
        status=status,
        before=decode_cursor(cursor),
        limit=limit,
    )
    return page_reply(page, transfer_view)

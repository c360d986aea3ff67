"""Transfers: create (simple or multi-leg), read, list."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from tally.api.replies import (
    decode_cursor,
    json_reply,
    page_reply,
    request_hash,
    request_id,
    respond_json,
    respond_outcome,
    run_write,
)
from tally.api.routing import Access, TallyRoute, access, ledger_of
from tally.api.schemas import ClientId, TransferCreate, TransferOut, TransferPage
from tally.domain.accounts import Direction
from tally.domain.transfers import LegRequest, TransferRequest, TransferStatus
from tally.services import transfers
from tally.services.ports import StoredReply, Transaction
from tally.services.views import transfer_view

router = APIRouter(route_class=TallyRoute, tags=["transfers"])
Limit = Annotated[int, Query(ge=1, le=1000)]


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
    )
    request.check()
    return request


@router.post("/v1/transfers", status_code=201, response_model=TransferOut, openapi_extra=access(Access.WRITE))
async def create_transfer(body: TransferCreate, request: Request) -> Response:
    ledger_id = ledger_of(request)
    command = transfer_request(body)
    digest = request_hash(body)

    async def action(tx: Transaction) -> StoredReply:
        transfer, created = await transfers.create_transfer(
            tx, ledger_id, command, request_hash=digest, request_id=request_id(request)
        )
        return json_reply(201 if created else 200, transfer_view(transfer))

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
    cursor: str | None = None,
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

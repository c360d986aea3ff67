"""Queued transfer batches: accepted at once (202), applied by a worker, then read (ADR 0026)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from tally.api.batch_schemas import TransferBatchAccepted, TransferBatchOut, stored_items
from tally.api.replies import request_id, respond_json, respond_outcome, run_write
from tally.api.routing import Access, TallyRoute, access, ledger_of
from tally.api.schemas import TransferBatch
from tally.services import batch_intake
from tally.services.ports import StoredReply, Transaction
from tally.services.views import json_reply

router = APIRouter(route_class=TallyRoute, tags=["transfer-batches"])


@router.post(
    "/v1/transfer-batches",
    status_code=202,
    response_model=TransferBatchAccepted,
    openapi_extra=access(Access.WRITE),
)
async def submit_batch(body: TransferBatch, request: Request) -> Response:
    """Queue up to 1000 transfers; a worker applies them as `POST /v1/transfers/batch` would.

    The body is validated as that route's (shape and limits, 422 `validation_error`); nothing else is
    checked before the worker runs. Answers 202 `{id, status: "queued"}` at once; poll
    `GET /v1/transfer-batches/{id}` or wait for the `transfer_batch.completed` event. The
    Idempotency-Key covers the submission (a replay answers the same id); client ids dedupe each item.
    """
    ledger_id = ledger_of(request)
    transfers = stored_items(body.transfers)

    async def action(tx: Transaction) -> StoredReply:
        batch = await batch_intake.submit_batch(
            tx, ledger_id, transfers, atomic=body.atomic, request_id=request_id(request)
        )
        return json_reply(202, {"id": batch.id, "status": batch.status})

    outcome = await run_write(request, ledger_id, action, key_required=True)
    return respond_outcome(request, outcome)


@router.get(
    "/v1/transfer-batches/{batch_id}", response_model=TransferBatchOut, openapi_extra=access(Access.READ)
)
async def get_batch(batch_id: str, request: Request) -> Response:
    """The batch's status; `results` once `completed` (one per transfer, as the synchronous batch's)
    or `failed` (an atomic batch: only the failed transfers, each `status: "error"`, nothing applied)."""
    batch = await batch_intake.get_batch(request.app.state.tally.database, ledger_of(request), batch_id)
    return respond_json(200, batch_intake.batch_view(batch))

"""Webhook subscriptions (``admin``) and their deliveries (API.md, ADR 0025)."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request, Response

from tally.api.replies import decode_cursor, page_reply, respond_outcome, run_write
from tally.api.routing import Access, TallyRoute, access, actor, ledger_of
from tally.api.schemas import Cursor, Limit
from tally.api.webhook_schemas import (
    DeliveryPage,
    DeliveryStatus,
    RedriveOut,
    WebhookCreate,
    WebhookCreated,
    WebhookPage,
    delivery_view,
    webhook_view,
)
from tally.services import webhooks
from tally.services.idempotency import Outcome
from tally.services.ports import StoredReply, Transaction
from tally.services.views import json_reply

router = APIRouter(route_class=TallyRoute, tags=["webhooks"])


@router.post(
    "/v1/webhooks", status_code=201, response_model=WebhookCreated, openapi_extra=access(Access.ADMIN)
)
async def create_webhook(body: WebhookCreate, request: Request) -> Response:
    """Subscribe a URL to event types. The answer carries the signing secret (`whsec_…`) this once:
    it is stored encrypted and never shown again; an idempotent replay answers `secret: null`.

    The URL's host must resolve to public addresses only (unless `TALLY_WEBHOOK_ALLOWED_HOSTS`
    allows it); it is checked again before every delivery."""
    ledger_id = ledger_of(request)
    parts = request.app.state.tally.webhooks
    await webhooks.check_destination(parts.destinations, body.url)
    shown: list[str] = []

    async def action(tx: Transaction) -> StoredReply:
        webhook, secret = await webhooks.create_webhook(
            tx,
            ledger_id,
            url=body.url,
            event_types=body.types(),
            max_per_second=body.max_per_second,
            sealer=parts.sealer,
            actor=actor(request),
        )
        shown.append(secret)
        # Stored for replays without the secret, which is never kept in the clear (as API keys).
        return json_reply(201, {**webhook_view(webhook), "secret": None})

    outcome = await run_write(request, ledger_id, action, key_required=False)
    if shown and not outcome.replayed and outcome.reply.status == 201:
        created = orjson.loads(outcome.reply.body)
        created["secret"] = shown[0]
        outcome = Outcome(json_reply(201, created), replayed=False)
    return respond_outcome(request, outcome)


@router.get("/v1/webhooks", response_model=WebhookPage, openapi_extra=access(Access.ADMIN))
async def list_webhooks(request: Request, limit: Limit = 100, cursor: Cursor = None) -> Response:
    """The ledger's subscriptions, oldest first (never their secrets)."""
    page = await webhooks.list_webhooks(
        request.app.state.tally.database, ledger_of(request), after=decode_cursor(cursor), limit=limit
    )
    return page_reply(page, webhook_view)


@router.delete("/v1/webhooks/{webhook_id}", status_code=204, openapi_extra=access(Access.ADMIN))
async def delete_webhook(webhook_id: str, request: Request) -> Response:
    """Stop the subscription: nothing more is queued for it, and deliveries not yet sent are not sent."""
    ledger_id = ledger_of(request)
    database = request.app.state.tally.database
    async with database.write() as tx:
        await webhooks.delete_webhook(tx, ledger_id, webhook_id, actor(request))
    return Response(status_code=204, headers={"Tally-Consistency-Token": database.position()})


@router.get(
    "/v1/webhooks/{webhook_id}/deliveries", response_model=DeliveryPage, openapi_extra=access(Access.ADMIN)
)
async def list_deliveries(
    webhook_id: str,
    request: Request,
    status: DeliveryStatus | None = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Response:
    """The subscription's deliveries, oldest first, each with its attempts (`attempt_log`)."""
    page = await webhooks.list_deliveries(
        request.app.state.tally.database,
        ledger_of(request),
        webhook_id,
        status=None if status is None else status.value,
        after=decode_cursor(cursor),
        limit=limit,
    )
    return page_reply(page, delivery_view)


@router.post(
    "/v1/webhooks/{webhook_id}/redrive", response_model=RedriveOut, openapi_extra=access(Access.ADMIN)
)
async def redrive(webhook_id: str, request: Request) -> Response:
    """Queue the subscription's `dead` deliveries again, each with a fresh set of attempts."""
    ledger_id = ledger_of(request)
    max_attempts = request.app.state.tally.settings.webhook_max_attempts

    async def action(tx: Transaction) -> StoredReply:
        count = await webhooks.redrive(tx, ledger_id, webhook_id, max_attempts=max_attempts)
        return json_reply(200, {"redriven": count})

    outcome = await run_write(request, ledger_id, action, key_required=False)
    return respond_outcome(request, outcome)

"""Ledgers and their API keys (root key, or an admin key of the ledger)."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request, Response

from tally.api.replies import (
    decode_cursor,
    json_reply,
    page_reply,
    respond_json,
    respond_outcome,
    run_write,
)
from tally.api.routing import Access, TallyRoute, access, principal
from tally.api.schemas import (
    Cursor,
    KeyCreate,
    KeyCreated,
    KeyPage,
    KeyUsageOut,
    LedgerCreate,
    LedgerOut,
    Limit,
)
from tally.domain.errors import NotFound
from tally.services import ledgers
from tally.services.idempotency import Outcome
from tally.services.ports import StoredReply, Transaction
from tally.services.views import key_view, ledger_view

router = APIRouter(route_class=TallyRoute, tags=["ledgers"])


def _own_ledger(request: Request, ledger_id: str) -> None:
    """An admin key naming another ledger gets 404, as if that ledger did not exist."""
    who = principal(request)
    if not who.is_root and who.ledger_id != ledger_id:
        raise NotFound(f"Ledger {ledger_id} does not exist.")


@router.post("/v1/ledgers", status_code=201, response_model=LedgerOut, openapi_extra=access(Access.ROOT))
async def create_ledger(body: LedgerCreate, request: Request) -> Response:
    async def action(tx: Transaction) -> StoredReply:
        return json_reply(201, ledger_view(await ledgers.create_ledger(tx, body.name)))

    outcome = await run_write(request, "", action, key_required=False)
    return respond_outcome(request, outcome)


@router.post(
    "/v1/ledgers/{ledger_id}/keys",
    status_code=201,
    response_model=KeyCreated,
    openapi_extra=access(Access.KEYS),
)
async def create_key(ledger_id: str, body: KeyCreate, request: Request) -> Response:
    _own_ledger(request, ledger_id)
    shown: list[str] = []

    async def action(tx: Transaction) -> StoredReply:
        key, secret = await ledgers.create_key(tx, ledger_id, body.name, frozenset(body.scopes))
        shown.append(secret)
        view = key_view(key)
        # What an idempotent replay returns: everything but the secret, which is shown once and
        # never stored (ADR 0008). The live response below carries it.
        created = {
            "id": view["id"],
            "name": view["name"],
            "key": None,
            "scopes": view["scopes"],
            "created_at": view["created_at"],
        }
        return json_reply(201, created)

    outcome = await run_write(request, ledger_id, action, key_required=False)
    if shown and not outcome.replayed:
        created = orjson.loads(outcome.reply.body)
        created["key"] = shown[0]
        outcome = Outcome(json_reply(outcome.reply.status, created), replayed=False)
    return respond_outcome(request, outcome)


@router.get("/v1/ledgers/{ledger_id}/keys", response_model=KeyPage, openapi_extra=access(Access.KEYS))
async def list_keys(ledger_id: str, request: Request, limit: Limit = 100, cursor: Cursor = None) -> Response:
    _own_ledger(request, ledger_id)
    page = await ledgers.list_keys(
        request.app.state.tally.database, ledger_id, after=decode_cursor(cursor), limit=limit
    )
    return page_reply(page, key_view)


@router.delete("/v1/ledgers/{ledger_id}/keys/{key_id}", status_code=204, openapi_extra=access(Access.KEYS))
async def revoke_key(ledger_id: str, key_id: str, request: Request) -> Response:
    _own_ledger(request, ledger_id)
    database = request.app.state.tally.database
    async with database.write() as tx:
        await ledgers.revoke_key(tx, ledger_id, key_id)
    return Response(status_code=204, headers={"Tally-Consistency-Token": database.position()})


@router.get(
    "/v1/ledgers/{ledger_id}/keys/{key_id}/usage",
    response_model=KeyUsageOut,
    openapi_extra=access(Access.KEYS),
)
async def key_usage(ledger_id: str, key_id: str, request: Request) -> Response:
    """Requests per UTC day; the current interval's uses appear after the next flush (ADR 0028)."""
    _own_ledger(request, ledger_id)
    days = await ledgers.key_usage(request.app.state.tally.database, ledger_id, key_id)
    return respond_json(200, {"data": [{"day": day, "requests": n} for day, n in days]})

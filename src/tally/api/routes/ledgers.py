"""Ledgers and their API keys (root key, or an admin key of the ledger): create, list, rotate,
revoke. Each act is recorded in the ledger's audit trail (ADR 0036)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

import orjson
from fastapi import APIRouter, Request, Response

from tally.api.replies import decode_cursor, page_reply, respond_json, respond_outcome, run_write
from tally.api.routing import Access, TallyRoute, access, actor, principal
from tally.api.schemas import (
    Cursor,
    KeyCreate,
    KeyCreated,
    KeyPage,
    KeyRotate,
    KeyUsageOut,
    LedgerCreate,
    LedgerOut,
    Limit,
)
from tally.domain.errors import NotFound
from tally.domain.keys import ApiKey
from tally.services import ledgers
from tally.services.idempotency import Outcome
from tally.services.ports import StoredReply, Transaction
from tally.services.views import json_reply, key_view, ledger_view

router = APIRouter(route_class=TallyRoute, tags=["ledgers"])


def _own_ledger(request: Request, ledger_id: str) -> None:
    """An admin key naming another ledger gets 404, as if that ledger did not exist."""
    who = principal(request)
    if not who.is_root and who.ledger_id != ledger_id:
        raise NotFound(f"Ledger {ledger_id} does not exist.")


@router.post("/v1/ledgers", status_code=201, response_model=LedgerOut, openapi_extra=access(Access.ROOT))
async def create_ledger(body: LedgerCreate, request: Request) -> Response:
    async def action(tx: Transaction) -> StoredReply:
        return json_reply(201, ledger_view(await ledgers.create_ledger(tx, body.name, actor(request))))

    outcome = await run_write(request, "", action, key_required=False)
    return respond_outcome(request, outcome)


@router.post(
    "/v1/ledgers/{ledger_id}/keys",
    status_code=201,
    response_model=KeyCreated,
    openapi_extra=access(Access.KEYS),
)
async def create_key(ledger_id: str, body: KeyCreate, request: Request) -> Response:
    """A key of the ledger; `expires_at` (optional, in the future, else 422 at `body.expires_at`)
    ends it by itself. The secret is in this answer only; an idempotent replay answers `key: null`."""
    _own_ledger(request, ledger_id)
    return await _issue_key(
        request,
        ledger_id,
        lambda tx: ledgers.create_key(
            tx, ledger_id, body.name, frozenset(body.scopes), actor(request), expires_at=body.expires_at
        ),
    )


@router.post(
    "/v1/ledgers/{ledger_id}/keys/{key_id}/rotate",
    status_code=201,
    response_model=KeyCreated,
    openapi_extra=access(Access.KEYS),
)
async def rotate_key(
    ledger_id: str, key_id: str, request: Request, body: KeyRotate | None = None
) -> Response:
    """Replace a key: a new key with the same name and scopes (no expiry), its secret in this answer
    only; the old key keeps working for `overlap_seconds` (default one day; never past an expiry it
    already had), then is refused. A revoked or expired key cannot be rotated: 409 `key_not_active`.
    The body may be omitted (the default overlap). Optional `Idempotency-Key`, as for creating a key."""
    _own_ledger(request, ledger_id)
    overlap = timedelta(seconds=(body or KeyRotate()).overlap_seconds)
    return await _issue_key(
        request,
        ledger_id,
        lambda tx: ledgers.rotate_key(tx, ledger_id, key_id, actor(request), overlap=overlap),
    )


async def _issue_key(
    request: Request, ledger_id: str, issue: Callable[[Transaction], Awaitable[tuple[ApiKey, str]]]
) -> Response:
    """Run ``issue`` idempotently; the live answer carries the secret, a replay does not."""
    shown: list[str] = []

    async def action(tx: Transaction) -> StoredReply:
        key, secret = await issue(tx)
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
            "expires_at": view["expires_at"],
        }
        return json_reply(201, created)

    outcome = await run_write(request, ledger_id, action, key_required=False)
    if shown and not outcome.replayed and outcome.reply.status == 201:
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
        await ledgers.revoke_key(tx, ledger_id, key_id, actor(request))
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

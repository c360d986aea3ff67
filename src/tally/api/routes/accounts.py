"""Accounts: open, read, list, change; balance and entries."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from tally.api.replies import (
    decode_cursor,
    page_reply,
    request_hash,
    request_id,
    respond_json,
    respond_outcome,
    run_write,
)
from tally.api.routing import Access, TallyRoute, access, actor, ledger_of
from tally.api.schemas import (
    AccountCreate,
    AccountOut,
    AccountPage,
    AccountPatch,
    BalanceOut,
    Currency,
    Cursor,
    EntryPage,
    Limit,
    rfc3339_text,
    utc_instant,
)
from tally.api.statement_schemas import StatementPage
from tally.domain.accounts import AccountStatus, Bounds
from tally.domain.errors import ValidationFailed
from tally.services import accounts, statements
from tally.services.ports import StoredReply, Transaction
from tally.services.views import account_view, entry_view, json_reply, timestamp

router = APIRouter(route_class=TallyRoute, tags=["accounts"])


@router.post(
    "/v1/accounts",
    status_code=201,
    response_model=AccountOut,
    responses={200: {"model": AccountOut, "description": "An account with this `id` and body exists: it."}},
    openapi_extra=access(Access.WRITE),
)
async def open_account(body: AccountCreate, request: Request) -> Response:
    ledger_id = ledger_of(request)
    command = accounts.OpenAccount(
        currency=body.currency,
        id=body.id,
        name=body.name,
        normal_balance=body.normal_balance,
        bounds=Bounds(body.min_balance, body.max_balance),
        metadata=body.metadata or {},
    )
    digest = request_hash(body)

    async def action(tx: Transaction) -> StoredReply:
        account, created = await accounts.open_account(
            tx, ledger_id, command, request_hash=digest, request_id=request_id(request)
        )
        return json_reply(201 if created else 200, account_view(account))

    outcome = await run_write(request, ledger_id, action, key_required=False)
    return respond_outcome(request, outcome)


@router.get("/v1/accounts/{account_id}", response_model=AccountOut, openapi_extra=access(Access.READ))
async def get_account(account_id: str, request: Request) -> Response:
    account, _ = await request.app.state.tally.caches.accounts.read(ledger_of(request), account_id)
    return respond_json(200, account_view(account))


@router.get("/v1/accounts", response_model=AccountPage, openapi_extra=access(Access.READ))
async def list_accounts(
    request: Request,
    currency: Annotated[Currency | None, Query()] = None,
    status: AccountStatus | None = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Response:
    page = await accounts.list_accounts(
        request.app.state.tally.database,
        ledger_of(request),
        currency=currency,
        status=status,
        after=decode_cursor(cursor),
        limit=limit,
    )
    return page_reply(page, account_view)


@router.patch("/v1/accounts/{account_id}", response_model=AccountOut, openapi_extra=access(Access.WRITE))
async def change_account(account_id: str, body: AccountPatch, request: Request) -> Response:
    ledger_id = ledger_of(request)
    sent = body.model_fields_set
    for field in ("name", "status", "metadata"):
        if field in sent and getattr(body, field) is None:
            raise ValidationFailed.at(("body", field), f"{field} may not be null.")
    command = accounts.ChangeAccount(
        name=body.name,
        metadata=body.metadata,
        status=body.status,
        min_balance=body.min_balance,
        max_balance=body.max_balance,
        sets_min_balance="min_balance" in sent,
        sets_max_balance="max_balance" in sent,
    )

    async def action(tx: Transaction) -> StoredReply:
        account = await accounts.change_account(tx, ledger_id, account_id, command, actor=actor(request))
        return json_reply(200, account_view(account))

    outcome = await run_write(request, ledger_id, action, key_required=False)
    return respond_outcome(request, outcome)


@router.get(
    "/v1/accounts/{account_id}/balance",
    response_model=BalanceOut,
    openapi_extra=access(Access.READ),
)
async def get_balance(account_id: str, request: Request, as_of: datetime | None = None) -> Response:
    if as_of is not None and as_of.tzinfo is None:
        raise ValidationFailed.at(("query", "as_of"), "as_of needs a time zone (RFC 3339).")
    try:
        if as_of is not None:
            rfc3339_text(request.query_params["as_of"])  # not a number of seconds: pydantic takes one
            as_of = utc_instant(as_of)
    except ValueError as error:
        raise ValidationFailed.at(("query", "as_of"), str(error)) from None
    tally = request.app.state.tally
    if as_of is None:  # now: the cached account answers (cache-aside, written through on commit)
        account, at = await tally.caches.accounts.read(ledger_of(request), account_id)
        found = accounts.BalanceAsOf(account, account.balance, account.version, at)
    else:
        found = await accounts.balance_as_of(tally.database, ledger_of(request), account_id, as_of)
    side = found.account.normal_balance
    return respond_json(
        200,
        {
            "account_id": found.account.id,
            "currency": found.account.currency,
            "posted": found.balance.posted,
            "pending_debits": found.balance.pending_debits,
            "pending_credits": found.balance.pending_credits,
            "available": found.balance.available(side),
            "version": found.version,
            "as_of": timestamp(found.as_of),
        },
    )


@router.get("/v1/accounts/{account_id}/entries", response_model=EntryPage, openapi_extra=access(Access.READ))
async def list_entries(
    account_id: str, request: Request, limit: Limit = 100, cursor: Cursor = None
) -> Response:
    page = await accounts.list_entries(
        request.app.state.tally.database,
        ledger_of(request),
        account_id,
        before=decode_cursor(cursor),
        limit=limit,
    )
    return page_reply(page, entry_view)


@router.get(
    "/v1/accounts/{account_id}/statements",
    response_model=StatementPage,
    openapi_extra=access(Access.READ),
)
async def list_statements(
    account_id: str,
    request: Request,
    *,
    first: Annotated[date, Query(alias="from", description="The first UTC day, YYYY-MM-DD.")],
    last: Annotated[date, Query(alias="to", description="The last UTC day, YYYY-MM-DD (inclusive).")],
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Response:
    """The account's daily statements, oldest day first (ADR 0033).

    One item per UTC day from `from` to `to` (both required, `from` ≤ `to`, at most 366 days, else
    422 `validation_error`) for which the daily `statements` job has finished: opening and closing
    `posted` balance, the sums of the day's debit and credit postings, and their number. A finished
    day on which the account had no posting is included with opening = closing = the balance it
    carried and zero sums, so the series is continuous. Days not computed yet (today, or a day the
    job has not run for) are absent; ask again later. An unknown account is 404.
    """
    page = await statements.account_statements(
        request.app.state.tally.database,
        ledger_of(request),
        account_id,
        first,
        last,
        after=decode_cursor(cursor),
        limit=limit,
    )
    return page_reply(page, statements.statement_view)

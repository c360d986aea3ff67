"""Shared by the holds, reversals and batches tests: acting on transfers, and the ledger read whole.

The ``events`` table is read straight from the SQLite file (there is no events API yet); every
other part of a snapshot is read through the API.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from tests.support import BACKENDS, LedgerKeys, idem, open_account

WAIT_SECONDS = 15.0  # the bound of every poll; generous, since it is only reached when a test fails


def legs(*parts: tuple[str, str, int]) -> list[dict[str, Any]]:
    return [{"account_id": a, "direction": d, "amount": n} for a, d, n in parts]


def simple(debit: str, credit: str, amount: Any, **extra: Any) -> dict[str, Any]:
    return {"debit_account_id": debit, "credit_account_id": credit, "amount": amount, **extra}


def soon(milliseconds: int) -> str:
    """An ``expires_at`` that many milliseconds from now (RFC 3339 UTC)."""
    return (datetime.now(UTC) + timedelta(milliseconds=milliseconds)).isoformat()


def replayed(response: httpx.Response) -> bool:
    header: str | None = response.headers.get("idempotent-replayed")
    return header == "true"


async def create(
    client: httpx.AsyncClient, ledger: LedgerKeys, body: dict[str, Any], key: str | None = None
) -> httpx.Response:
    return await client.post("/v1/transfers", json=body, headers={**ledger.write, **idem(key)})


async def hold(
    client: httpx.AsyncClient, ledger: LedgerKeys, debit: str, credit: str, amount: int, **extra: Any
) -> dict[str, Any]:
    """Place a two-leg hold that must succeed; returns the pending transfer."""
    response = await create(client, ledger, simple(debit, credit, amount, pending=True, **extra))
    assert response.status_code == 201, response.text
    made: dict[str, Any] = response.json()
    assert made["status"] == "pending"
    return made


async def act(
    client: httpx.AsyncClient,
    ledger: LedgerKeys,
    transfer_id: str,
    verb: str,
    body: dict[str, Any] | None = None,
    *,
    key: str | None = None,
) -> httpx.Response:
    """``POST /v1/transfers/{id}/{verb}`` (post, void or reverse) with an Idempotency-Key."""
    path = f"/v1/transfers/{transfer_id}/{verb}"
    headers = {**ledger.write, **idem(key)}
    if body is None:
        return await client.post(path, headers=headers)
    return await client.post(path, json=body, headers=headers)


async def batch(
    client: httpx.AsyncClient,
    ledger: LedgerKeys,
    transfers: list[dict[str, Any]],
    *,
    atomic: bool,
    key: str | None = None,
) -> httpx.Response:
    body = {"transfers": transfers, "atomic": atomic}
    return await client.post("/v1/transfers/batch", json=body, headers={**ledger.write, **idem(key)})


async def get_transfer(client: httpx.AsyncClient, ledger: LedgerKeys, transfer_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/transfers/{transfer_id}", headers=ledger.read)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def balances(client: httpx.AsyncClient, ledger: LedgerKeys, *account_ids: str) -> dict[str, Any]:
    """Each account's ``(posted, pending_debits, pending_credits, available, version)`` as read now."""
    found: dict[str, Any] = {}
    for account_id in account_ids:
        response = await client.get(f"/v1/accounts/{account_id}", headers=ledger.read)
        assert response.status_code == 200, response.text
        account = response.json()
        b = account["balance"]
        found[account_id] = (
            b["posted"],
            b["pending_debits"],
            b["pending_credits"],
            b["available"],
            account["version"],
        )
    return found


async def balance_as_of(
    client: httpx.AsyncClient, ledger: LedgerKeys, account_id: str, as_of: str
) -> tuple[int, int, int, int, int]:
    """``(posted, pending_debits, pending_credits, available, version)`` at ``as_of``."""
    response = await client.get(
        f"/v1/accounts/{account_id}/balance", params={"as_of": as_of}, headers=ledger.read
    )
    assert response.status_code == 200, response.text
    b = response.json()
    return (b["posted"], b["pending_debits"], b["pending_credits"], b["available"], b["version"])


async def listed(client: httpx.AsyncClient, ledger: LedgerKeys, **query: Any) -> list[str]:
    response = await client.get("/v1/transfers", params={"limit": 1000, **query}, headers=ledger.read)
    assert response.status_code == 200, response.text
    return [t["id"] for t in response.json()["data"]]


def events(directory: Path, ledger_id: str) -> list[dict[str, Any]]:
    """The ledger's events, oldest first, as ``{type, request_id, data}``."""
    rows = BACKENDS.rows(
        directory, "SELECT type, request_id, data FROM events WHERE ledger_id = ? ORDER BY pk", (ledger_id,)
    )
    return [{"type": t, "request_id": r, "data": json.loads(d)} for t, r, d in rows]


def stored_status(directory: Path, transfer_id: str) -> str:
    """The status written in the transfers table (a read may already see a due hold as expired)."""
    [(status,)] = BACKENDS.rows(directory, "SELECT status FROM transfers WHERE id = ?", (transfer_id,))
    return str(status)


def table_counts(directory: Path) -> dict[str, int]:
    """Rows of the tables a transfer operation writes, hold and release entries included."""
    return {
        table: BACKENDS.rows(directory, f"SELECT count(*) FROM {table}")[0][0]  # noqa: S608
        for table in ("transfers", "entries", "holds", "events")
    }


async def snapshot(client: httpx.AsyncClient, ledger: LedgerKeys, directory: Path) -> dict[str, Any]:
    """Everything an operation could change: accounts (balances, versions), transfers, every
    account's entries, the ledger's events, and the row counts of the tables behind them."""
    query = {"limit": 1000}
    accounts = (await client.get("/v1/accounts", params=query, headers=ledger.read)).json()["data"]
    entries = {
        a["id"]: (await client.get(f"/v1/accounts/{a['id']}/entries", headers=ledger.read)).json()
        for a in accounts
    }
    transfers = (await client.get("/v1/transfers", params=query, headers=ledger.read)).json()["data"]
    return {
        "accounts": accounts,
        "entries": entries,
        "transfers": transfers,
        "events": events(directory, ledger.ledger_id),
        "rows": table_counts(directory),
    }


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``check`` until it holds; fail after ``WAIT_SECONDS`` (a bound, never a measurement)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not await check():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        await asyncio.sleep(0.02)


async def until_expired(client: httpx.AsyncClient, ledger: LedgerKeys, transfer_id: str) -> dict[str, Any]:
    """Poll the transfer until it reads ``expired``; returns it."""
    seen: dict[str, Any] = {}

    async def expired() -> bool:
        seen.update(await get_transfer(client, ledger, transfer_id))
        return bool(seen["status"] == "expired")

    await eventually(expired, f"{transfer_id} to read expired")
    return seen


async def open_accounts(client: httpx.AsyncClient, ledger: LedgerKeys) -> None:
    """world (unbounded, debit-normal) has paid alice 1000; bob and carol are empty; all USD."""
    await open_account(client, ledger.write, id="world", normal_balance="debit", min_balance=None)
    for account_id in ("alice", "bob", "carol"):
        await open_account(client, ledger.write, id=account_id)
    funded = await create(client, ledger, simple("world", "alice", 1000))
    assert funded.status_code == 201, funded.text

"""The ledger every scenario runs on: a ledger, a write and a read key, accounts, all funded.

Set up once per server, through the API like any client: ``POST /v1/ledgers`` and its keys with
the root key; a debit-normal, unbounded ``source`` account; the accounts ``a00000``, ``a00001``, ...
opened by ``SETUP_CLIENTS`` concurrent connections; then one transfer of ``FUNDING`` from ``source``
to each account, in atomic batches of 1000 (``POST /v1/transfers/batch``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from tally.bench.http_client import HttpConnection, Response

SETUP_CLIENTS = 16
FUNDING_BATCH = 1000
# Far more than the scenarios move: their transfers are of 1, so no account runs dry and every
# rejection counted is a fault, not the workload's arithmetic.
FUNDING = 1_000_000_000

Headers = tuple[tuple[str, str], ...]


class SetupError(RuntimeError):
    """A setup request was not answered as expected; the message holds the answer."""


@dataclass(frozen=True)
class Ledger:
    id: str
    write: Headers  # the Authorization header of a write key
    read: Headers  # ... and of a read key
    accounts: tuple[str, ...]


def account_id(number: int) -> str:
    return f"a{number:05d}"


async def prepare_ledger(base_url: str, root_key: str, accounts: int) -> Ledger:
    """Create and fund the ledger on the server at ``base_url``."""
    root = HttpConnection(base_url, [("authorization", f"Bearer {root_key}")])
    try:
        ledger_id = (await _call(root, "POST", "/v1/ledgers", {"name": "bench"}))["id"]
        keys = {}
        for scope in ("write", "read"):
            body = {"name": f"bench {scope}", "scopes": [scope]}
            keys[scope] = (await _call(root, "POST", f"/v1/ledgers/{ledger_id}/keys", body))["key"]
    finally:
        root.close()
    write: Headers = (("authorization", f"Bearer {keys['write']}"),)
    ledger = Ledger(
        ledger_id,
        write,
        (("authorization", f"Bearer {keys['read']}"),),
        tuple(map(account_id, range(accounts))),
    )
    await _open_accounts(base_url, ledger)
    await _fund(base_url, ledger)
    return ledger


async def _open_accounts(base_url: str, ledger: Ledger) -> None:
    source = {"id": "source", "currency": "USD", "normal_balance": "debit", "min_balance": None}
    opening = iter([{"id": number, "currency": "USD"} for number in ledger.accounts])

    async def client(bodies: Iterator[dict[str, Any]]) -> None:
        connection = HttpConnection(base_url, ledger.write)
        try:
            for body in bodies:
                await _call(connection, "POST", "/v1/accounts", body)
        finally:
            connection.close()

    await client(iter([source]))
    # One iterator shared by every client: each account is opened once, by whichever is free.
    await asyncio.gather(*(client(opening) for _ in range(SETUP_CLIENTS)))


async def _fund(base_url: str, ledger: Ledger) -> None:
    connection = HttpConnection(base_url, ledger.write)
    try:
        for start in range(0, len(ledger.accounts), FUNDING_BATCH):
            transfers = [
                {"debit_account_id": "source", "credit_account_id": credit, "amount": FUNDING}
                for credit in ledger.accounts[start : start + FUNDING_BATCH]
            ]
            body = {"transfers": transfers, "atomic": True}
            await _call(connection, "POST", "/v1/transfers/batch", body, idempotent=True)
    finally:
        connection.close()


async def _call(
    connection: HttpConnection, method: str, path: str, body: dict[str, Any], *, idempotent: bool = False
) -> dict[str, Any]:
    headers = (("idempotency-key", uuid.uuid4().hex),) if idempotent else ()
    response = await connection.request(method, path, orjson.dumps(body), headers)
    if not 200 <= response.status < 300:
        raise SetupError(f"{method} {path} answered {_excerpt(response)}")
    answer: dict[str, Any] = orjson.loads(response.body)
    return answer


def _excerpt(response: Response) -> str:
    return f"{response.status}: {response.body[:300].decode(errors='replace')}"

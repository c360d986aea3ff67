"""Helpers of the PostgreSQL integration tests: fresh databases, clients that send exactly the
headers a test gives them, polling, and the books' invariants checked through the API.

The clients here carry no consistency token of their own accord (unlike ``tests.support``'s,
whose hooks send the last token any client received): a test about tokens decides which request
sends which token. ``token_session()`` gives a client read-your-writes for set-up steps only.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager

from tally.api.app import create_app
from tally.bootstrap import Tally
from tally.config import Settings
from tests.pg_cluster import PgCluster
from tests.support import LIFESPAN_SECONDS, ROOT_KEY, ClientSession, Server, start_server

STRONG = {"Tally-Consistency": "strong"}


@contextmanager
def fresh_database(cluster: PgCluster) -> Iterator[str]:
    """A new database on ``cluster`` (open on every replica), dropped at the end of the block."""
    name = cluster.create_database()
    try:
        yield name
    finally:
        if not cluster.stopped:
            cluster.drop_database(name)


def server_env(cluster: PgCluster, database: str, **extra: str) -> dict[str, str]:
    """``tally serve``'s environment for ``database`` on ``cluster``: the primary and every replica."""
    return {
        "TALLY_DATABASE_URL": cluster.primary.url(database),
        "TALLY_REPLICA_URLS": ",".join(replica.url(database) for replica in cluster.replicas),
        **extra,
    }


def settings_on(cluster: PgCluster, database: str, *, replicas: bool = True, **overrides: Any) -> Settings:
    """In-process settings for ``database`` on ``cluster``."""
    values: dict[str, Any] = {
        "database_url": cluster.primary.url(database),
        "replica_urls": [replica.url(database) for replica in cluster.replicas] if replicas else [],
        "root_key": ROOT_KEY,
        "log_format": "json",
        "hold_sweep_seconds": 3600.0,  # no sweeper transactions in the middle of a scenario
    }
    values.update(overrides)
    return Settings(**values)


@contextmanager
def running_server(directory: Path, env: dict[str, str]) -> Iterator[Server]:
    """A real ``tally serve`` process, stopped at the end of the block."""
    server = start_server(directory, env)
    try:
        yield server
    finally:
        server.stop()


def token_session() -> ClientSession:
    """A private read-your-writes session (tokens of one client only)."""
    return ClientSession()


def plain_client(base_url: str, session: ClientSession | None = None) -> httpx.AsyncClient:
    """A client of a real server; it sends consistency tokens only through ``session``, if given."""
    hooks = session.hooks() if session is not None else {}
    return httpx.AsyncClient(base_url=base_url, timeout=30, event_hooks=hooks)


@asynccontextmanager
async def plain_asgi_client(
    settings: Settings, session: ClientSession | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a fresh app in this process (lifespan included), with no token hooks."""
    app = create_app(Tally(settings))
    async with LifespanManager(app, **LIFESPAN_SECONDS) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        hooks = session.hooks() if session is not None else {}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://tally", timeout=30, event_hooks=hooks
        ) as client:
            yield client


async def eventually(check: Callable[[], Awaitable[bool]], what: str, within: float = 30) -> None:
    """Poll ``check`` until it holds; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"timed out after {within} s waiting for {what}"
        await asyncio.sleep(0.05)


async def listed(
    client: httpx.AsyncClient, path: str, headers: dict[str, str], **filters: str
) -> list[dict[str, Any]]:
    """Every item of a paginated list, read strongly (from the primary)."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {**filters, "limit": 1000}
        if cursor is not None:
            params["cursor"] = cursor
        response = await client.get(path, params=params, headers={**headers, **STRONG})
        assert response.status_code == 200, response.text
        page = response.json()
        items.extend(page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items


async def check_books(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, int]:
    """Assert the ledger's invariants, read strongly; return each account's posted balance.

    Each account's entries add up to its posted balance (credits − debits for a credit-normal
    account, debits − credits for a debit-normal one), and across all accounts of a currency
    credits equal debits: the signed balances sum to zero.
    """
    accounts = await listed(client, "/v1/accounts", headers)
    net_by_currency: dict[str, int] = defaultdict(int)
    posted: dict[str, int] = {}
    for account in accounts:
        sign = 1 if account["normal_balance"] == "credit" else -1
        entries = await listed(client, f"/v1/accounts/{account['id']}/entries", headers)
        credits = sum(e["amount"] for e in entries if e["direction"] == "credit")
        debits = sum(e["amount"] for e in entries if e["direction"] == "debit")
        balance = account["balance"]["posted"]
        assert sign * (credits - debits) == balance, (account["id"], credits, debits, balance)
        if entries:  # newest first: the latest entry's running balance is the account's
            assert entries[0]["posted_balance_after"] == balance, (account["id"], entries[0])
        net_by_currency[account["currency"]] += sign * balance
        posted[account["id"]] = balance
    assert all(net == 0 for net in net_by_currency.values()), dict(net_by_currency)
    return posted

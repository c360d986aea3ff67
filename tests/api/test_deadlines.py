"""A request's time budget (``Tally-Timeout-Ms``) bounds its wait for the database (ADR 0010)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg

from tests.support import BACKENDS, LedgerKeys, assert_problem, funded_account, idem, open_account


@contextmanager
def write_lock_held_elsewhere(directory: Path) -> Iterator[None]:
    """Another process's transaction holds what a transfer needs until the block ends.

    On SQLite, the file's write lock (``BEGIN IMMEDIATE``); on PostgreSQL, every account row
    (``FOR UPDATE``), so the transfer waits in its ``statement_timeout``.
    """
    if BACKENDS.name == "sqlite":
        other = sqlite3.connect(directory / "tally.db", isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            yield
            other.execute("ROLLBACK")
        finally:
            other.close()
        return
    url, _ = BACKENDS.urls(directory)
    database = url.rsplit("/", 1)[1]
    with psycopg.connect(BACKENDS.cluster().primary.dsn(database)) as conn:
        conn.execute("SELECT pk FROM accounts FOR UPDATE").fetchall()
        yield
        conn.rollback()


async def test_a_transfer_that_cannot_get_the_lock_in_its_budget_is_a_504_with_nothing_applied(
    client: httpx.AsyncClient, ledger: LedgerKeys, tmp_path: Path
) -> None:
    await funded_account(client, ledger, "wallet", 500)
    await open_account(client, ledger.write, id="shop")
    headers = {**ledger.write, **idem("pay-1"), "Tally-Timeout-Ms": "150"}
    body = {"debit_account_id": "wallet", "credit_account_id": "shop", "amount": 200}

    with write_lock_held_elsewhere(tmp_path):
        late = await client.post("/v1/transfers", json=body, headers=headers)
    assert_problem(late, 504, "deadline_exceeded")

    wallet = (await client.get("/v1/accounts/wallet", headers=ledger.read)).json()
    assert wallet["balance"]["posted"] == 500
    # Nothing was stored under the key either: the retry is processed, once.
    retried = await client.post("/v1/transfers", json=body, headers=headers)
    assert retried.status_code == 201
    assert "idempotent-replayed" not in retried.headers
    wallet = (await client.get("/v1/accounts/wallet", headers=ledger.read)).json()
    assert wallet["balance"]["posted"] == 300


async def test_a_write_waits_for_another_process_within_its_budget(
    client: httpx.AsyncClient, ledger: LedgerKeys, tmp_path: Path
) -> None:
    await funded_account(client, ledger, "wallet", 500)
    await open_account(client, ledger.write, id="shop")
    body = {"debit_account_id": "wallet", "credit_account_id": "shop", "amount": 200}
    with write_lock_held_elsewhere(tmp_path):
        pending = asyncio.create_task(
            client.post(
                "/v1/transfers",
                json=body,
                headers={**ledger.write, **idem(), "Tally-Timeout-Ms": "5000"},
            )
        )
        await asyncio.sleep(0.3)
        assert not pending.done(), "the write should be waiting for the other process's lock"
    response = await pending  # the other writer finished well inside the budget
    assert response.status_code == 201
    wallet = (await client.get("/v1/accounts/wallet", headers=ledger.read)).json()
    assert wallet["balance"]["posted"] == 300

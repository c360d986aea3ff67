"""A real ``tally serve`` process: first start, restart, logs, and correctness under concurrency."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import uuid
from pathlib import Path

import httpx
import pytest

from tests.support import (
    BACKENDS,
    ROOT,
    Server,
    bearer,
    funded_account,
    idem,
    new_ledger,
    open_account,
    start_server,
)

pytestmark = pytest.mark.server

_ROOT_KEY_LINE = re.compile(r"tally_root_[0-9A-Za-z]{36}")


def test_a_first_start_prints_a_root_key_once_and_stores_only_its_hash(tmp_path: Path) -> None:
    first = start_server(tmp_path, root_key=None)
    try:
        printed = _ROOT_KEY_LINE.findall(first.log_path.read_text())
        assert len(printed) == 1
        root = printed[0]
        created = httpx.post(f"{first.base_url}/v1/ledgers", json={"name": "kept"}, headers=bearer(root))
        assert created.status_code == 201
    finally:
        first.stop()

    if BACKENDS.name == "sqlite":  # every byte of the file, free pages and the WAL included
        database = b"".join(path.read_bytes() for path in tmp_path.glob("tally.db*"))
        assert root.encode() not in database
    [(stored,)] = BACKENDS.rows(tmp_path, "SELECT value FROM instance WHERE name = 'root_key_hash'")
    assert bytes(stored) == hashlib.sha256(root.encode()).digest()
    assert BACKENDS.rows(tmp_path, "SELECT count(*) FROM instance")[0][0] == 1

    second = start_server(tmp_path, root_key=None)
    try:
        assert _ROOT_KEY_LINE.findall(second.log_path.read_text()) == []
        again = httpx.post(
            f"{second.base_url}/v1/ledgers", json={"name": "after restart"}, headers=bearer(root)
        )
        assert again.status_code == 201
    finally:
        second.stop()


async def test_starting_twice_on_the_same_database_keeps_all_data(tmp_path: Path) -> None:
    first = start_server(tmp_path)
    try:
        async with httpx.AsyncClient(base_url=first.base_url) as client:
            ledger = await new_ledger(client)
            await open_account(client, ledger.write, id="kept")
    finally:
        first.stop()
    second = start_server(tmp_path)
    try:
        async with httpx.AsyncClient(base_url=second.base_url) as client:
            response = await client.get("/v1/accounts/kept", headers=ledger.read)
            assert response.status_code == 200
            assert response.json()["id"] == "kept"
    finally:
        second.stop()


async def test_every_request_writes_one_json_access_line_with_its_request_id(
    server: Server, server_client: httpx.AsyncClient
) -> None:
    response = await server_client.post(
        "/v1/ledgers", json={"name": "logged"}, headers={**ROOT, "X-Request-ID": "req-abc.1"}
    )
    assert response.headers["x-request-id"] == "req-abc.1"
    await asyncio.sleep(0.2)
    lines = [json.loads(line) for line in server.log_lines() if line.startswith("{")]
    access = [line for line in lines if line.get("event") == "request"]
    mine = [line for line in access if line["request_id"] == "req-abc.1"]
    assert len(mine) == 1
    assert mine[0]["route"] == "/v1/ledgers"
    assert mine[0]["status"] == 201
    root_secret = ROOT["Authorization"].split()[1]
    assert all(root_secret not in line for line in server.log_lines())


async def test_fifty_concurrent_debits_against_funds_for_ten_give_exactly_ten_successes(
    server_client: httpx.AsyncClient,
) -> None:
    client = server_client
    ledger = await new_ledger(client)
    await funded_account(client, ledger, "wallet", 1000)
    await open_account(client, ledger.write, id="shop")

    async def debit() -> httpx.Response:
        return await client.post(
            "/v1/transfers",
            json={"debit_account_id": "wallet", "credit_account_id": "shop", "amount": 100},
            headers={**ledger.write, **idem()},
        )

    responses = await asyncio.gather(*(debit() for _ in range(50)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(201) == 10
    assert statuses.count(422) == 40
    assert {r.json()["code"] for r in responses if r.status_code == 422} == {"insufficient_funds"}
    wallet = (await client.get("/v1/accounts/wallet", headers=ledger.read)).json()
    shop = (await client.get("/v1/accounts/shop", headers=ledger.read)).json()
    assert wallet["balance"]["posted"] == 0
    assert shop["balance"]["posted"] == 1000
    entries = (await client.get("/v1/accounts/wallet/entries", headers=ledger.read)).json()
    assert len(entries["data"]) == 11


async def test_twenty_simultaneous_requests_with_one_key_have_exactly_one_effect(
    server_client: httpx.AsyncClient,
) -> None:
    client = server_client
    ledger = await new_ledger(client)
    await open_account(client, ledger.write, id="world", normal_balance="debit", min_balance=None)
    await open_account(client, ledger.write, id="wallet")
    headers = {**ledger.write, "Idempotency-Key": f"once-{uuid.uuid4().hex}"}
    body = {"debit_account_id": "world", "credit_account_id": "wallet", "amount": 250}

    responses = await asyncio.gather(
        *(client.post("/v1/transfers", json=body, headers=headers) for _ in range(20))
    )
    created = [r for r in responses if r.status_code == 201]
    in_flight = [r for r in responses if r.status_code == 409]
    assert len(created) + len(in_flight) == 20
    assert all(r.json()["code"] == "idempotency_key_in_use" for r in in_flight)
    assert all(r.headers.get("retry-after") for r in in_flight)
    assert len({r.content for r in created}) == 1
    assert sum(r.headers.get("idempotent-replayed") != "true" for r in created) == 1
    wallet = (await client.get("/v1/accounts/wallet", headers=ledger.read)).json()
    assert wallet["balance"]["posted"] == 250
    transfers = (await client.get("/v1/transfers?account_id=wallet", headers=ledger.read)).json()
    assert len(transfers["data"]) == 1


async def test_two_processes_on_one_database_file_never_overdraw_and_keep_time_in_order(
    tmp_path: Path,
) -> None:
    first = start_server(tmp_path)
    second = start_server(tmp_path)
    try:
        async with (
            httpx.AsyncClient(base_url=first.base_url, timeout=30) as one,
            httpx.AsyncClient(base_url=second.base_url, timeout=30) as two,
        ):
            ledger = await new_ledger(one)
            await funded_account(one, ledger, "wallet", 1000)
            await open_account(one, ledger.write, id="shop")
            body = {"debit_account_id": "wallet", "credit_account_id": "shop", "amount": 100}
            responses = await asyncio.gather(
                *(
                    client.post("/v1/transfers", json=body, headers={**ledger.write, **idem()})
                    for client in [one, two] * 15
                )
            )
            assert sorted(r.status_code for r in responses).count(201) == 10
            assert all(r.status_code in (201, 422) for r in responses)
            # Strong: the database's own answer (process two's cache hears of one's last write
            # within an invalidation interval; a client that needs it at once sends the token).
            strong = {**ledger.read, "Tally-Consistency": "strong"}
            wallet = (await two.get("/v1/accounts/wallet", headers=strong)).json()
            assert wallet["balance"]["posted"] == 0
            entries = (await one.get("/v1/accounts/shop/entries", headers=ledger.read)).json()
    finally:
        first.stop()
        second.stop()
    # Newest first, in pk (commit) order: time never goes back, across both processes. Transfers
    # written in one transaction (a group of concurrent requests, ADR 0042) share its instant.
    times = [entry["created_at"] for entry in entries["data"]]
    assert len(times) == 10
    assert times == sorted(times, reverse=True)

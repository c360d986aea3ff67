"""Concurrency on PostgreSQL, against real ``tally serve`` processes sharing one database.

Many clients on one hot account, and two processes racing with one idempotency key or one client
id: every lost race is retried inside Tally (ADR 0020), so callers see no 5xx, no money is created
or lost, and each request takes effect exactly once.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.postgres_support import (
    STRONG,
    check_books,
    fresh_database,
    listed,
    plain_client,
    running_server,
    server_env,
    token_session,
)
from tests.pg_cluster import require_postgres
from tests.support import (
    BACKENDS,
    LedgerKeys,
    assert_problem,
    funded_account,
    idem,
    new_ledger,
    open_account,
    transfer,
)

pytestmark = pytest.mark.server

CLIENTS = 32
ROUNDS = 15
HOT_FUNDS = 10_000_000


async def ledger_with_accounts(base_url: str, funded: str, funds: int, *others: str) -> LedgerKeys:
    """A ledger with ``funded`` holding ``funds`` (from ``world``) and empty accounts ``others``."""
    async with plain_client(base_url, token_session()) as client:
        ledger = await new_ledger(client)
        await funded_account(client, ledger, funded, funds)
        for account_id in others:
            await open_account(client, ledger.write, id=account_id)
    return ledger


async def test_thirty_two_clients_on_one_hot_account_get_no_5xx_and_the_books_match_what_was_acknowledged(
    tmp_path: Path,
) -> None:
    require_postgres()
    cluster = BACKENDS.cluster()
    own = [f"client-{i}" for i in range(CLIENTS)]
    with (
        fresh_database(cluster) as database,
        running_server(tmp_path, server_env(cluster, database)) as server,
    ):
        ledger = await ledger_with_accounts(server.base_url, "hot", HOT_FUNDS, *own)

        async def hammer(number: int) -> list[tuple[str, str, int, httpx.Response]]:
            """One client: mostly hot → its own account, every third round some of it back."""
            rng = random.Random(number)
            mine = own[number]
            held = 0  # only this client moves money into or out of its account
            sent: list[tuple[str, str, int, httpx.Response]] = []
            async with plain_client(server.base_url) as client:
                for round_ in range(ROUNDS):
                    if round_ % 3 == 2 and held > 0:
                        debit, credit, amount = mine, "hot", rng.randint(1, held)
                    else:
                        debit, credit, amount = "hot", mine, rng.randint(1, 500)
                    response = await transfer(client, ledger.write, debit, credit, amount)
                    sent.append((debit, credit, amount, response))
                    if response.status_code == 201:
                        held += amount if credit == mine else -amount
            return sent

        outcomes = [sent for batch in await asyncio.gather(*map(hammer, range(CLIENTS))) for sent in batch]

        server_errors = [(r.status_code, r.text) for *_, r in outcomes if r.status_code >= 500]
        assert server_errors == []
        refused = [(r.status_code, r.text) for *_, r in outcomes if r.status_code != 201]
        assert refused == []  # the hot account never runs short, and clients only return what they hold
        expected = {"world": HOT_FUNDS, "hot": HOT_FUNDS, **dict.fromkeys(own, 0)}
        for debit, credit, amount, _ in outcomes:
            expected[debit] -= amount
            expected[credit] += amount
        async with plain_client(server.base_url) as client:
            assert await check_books(client, ledger.read) == expected
            transfers = await listed(client, "/v1/transfers", ledger.read)
        assert len(transfers) == 1 + len(outcomes)  # the funding, and each acknowledged transfer once
        assert len({t["id"] for t in transfers}) == len(transfers)


async def test_one_idempotency_key_sent_to_two_processes_at_once_moves_money_once(tmp_path: Path) -> None:
    require_postgres()
    cluster = BACKENDS.cluster()
    with (
        fresh_database(cluster) as database,
        running_server(tmp_path, server_env(cluster, database)) as first,
        running_server(tmp_path, server_env(cluster, database)) as second,
    ):
        ledger = await ledger_with_accounts(first.base_url, "payer", 100_000, "payee")
        amounts: dict[str, int] = {}
        async with plain_client(first.base_url) as one, plain_client(second.base_url) as other:
            for number in range(10):
                key = f"pay-{number}"
                amounts[key] = 100 + number
                body = {
                    "debit_account_id": "payer",
                    "credit_account_id": "payee",
                    "amount": amounts[key],
                    "metadata": {"key": key},
                }
                headers = {**ledger.write, **idem(key)}
                # Two requests on each process: across processes the database orders them; within
                # one, the second may find the first still in flight.
                responses = await asyncio.gather(
                    *(client.post("/v1/transfers", json=body, headers=headers) for client in (one, other) * 2)
                )
                statuses = [r.status_code for r in responses]
                created = [r for r in responses if r.status_code == 201]
                assert created, statuses
                for response in responses:
                    if response.status_code != 201:
                        assert_problem(response, 409, "idempotency_key_in_use")
                        assert "retry-after" in response.headers
                firsts = [r for r in created if r.headers.get("idempotent-replayed") != "true"]
                assert len(firsts) == 1, [(r.status_code, dict(r.headers)) for r in responses]
                assert {r.content for r in created} == {firsts[0].content}  # replayed byte for byte
                assert firsts[0].json()["amount"] == amounts[key]

            transfers = await listed(one, "/v1/transfers", ledger.read, account_id="payee")
            assert Counter(t["metadata"]["key"] for t in transfers) == Counter(amounts.keys())
            books = await check_books(other, ledger.read)
        assert books["payee"] == sum(amounts.values())
        assert books["payer"] == 100_000 - sum(amounts.values())


async def test_one_client_id_created_on_two_processes_at_once_is_created_once_and_returned_to_the_others(
    tmp_path: Path,
) -> None:
    require_postgres()
    cluster = BACKENDS.cluster()
    with (
        fresh_database(cluster) as database,
        running_server(tmp_path, server_env(cluster, database)) as first,
        running_server(tmp_path, server_env(cluster, database)) as second,
    ):
        ledger = await ledger_with_accounts(first.base_url, "payer", 100_000, "payee")
        made: dict[str, dict[str, Any]] = {}
        async with plain_client(first.base_url) as one, plain_client(second.base_url) as other:
            for number in range(10):
                transfer_id = f"order-{number}"
                body = {
                    "id": transfer_id,
                    "debit_account_id": "payer",
                    "credit_account_id": "payee",
                    "amount": 200 + number,
                }
                # Each request with its own Idempotency-Key: only the id makes them one transfer.
                responses = await asyncio.gather(
                    *(
                        client.post("/v1/transfers", json=body, headers={**ledger.write, **idem()})
                        for client in (one, other) * 2
                    )
                )
                # API.md: an existing id with the same body returns the existing resource (200).
                assert sorted(r.status_code for r in responses) == [200, 200, 200, 201], [
                    r.text for r in responses
                ]
                bodies = [r.json() for r in responses]
                assert all(found == bodies[0] for found in bodies)
                assert bodies[0]["id"] == transfer_id
                made[transfer_id] = bodies[0]

            for transfer_id, expected in made.items():
                stored = await other.get(f"/v1/transfers/{transfer_id}", headers={**ledger.read, **STRONG})
                assert stored.status_code == 200
                assert stored.json() == expected
            transfers = await listed(one, "/v1/transfers", ledger.read, account_id="payee")
            assert sorted(t["id"] for t in transfers) == sorted(made)
            books = await check_books(other, ledger.read)
        moved = sum(t["amount"] for t in made.values())
        assert books["payee"] == moved
        assert books["payer"] == 100_000 - moved

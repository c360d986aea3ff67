"""Holds against a real ``tally serve`` process: one resolution under a race, bounds under
concurrency, and the server's own sweeper writing an expiry down exactly once."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests.api.holds_support import (
    act,
    balances,
    create,
    events,
    eventually,
    get_transfer,
    hold,
    listed,
    open_accounts,
    simple,
    soon,
    stored_status,
    table_counts,
)
from tests.support import LedgerKeys, assert_problem, new_ledger

pytestmark = pytest.mark.server


async def ready(client: httpx.AsyncClient) -> LedgerKeys:
    ledger = await new_ledger(client)
    await open_accounts(client, ledger)  # alice holds 1000; bob and carol are empty
    return ledger


async def test_twenty_simultaneous_posts_and_voids_of_one_hold_resolve_it_exactly_once(
    server_client: httpx.AsyncClient, tmp_path: Path
) -> None:
    client = server_client
    ledger = await ready(client)
    made = await hold(client, ledger, "alice", "bob", 300)
    calls = [act(client, ledger, made["id"], "post", {"amount": 50 + 25 * i}) for i in range(5)]
    calls += [act(client, ledger, made["id"], "post") for _ in range(5)]
    calls += [act(client, ledger, made["id"], "void", {}) for _ in range(10)]
    responses = await asyncio.gather(*calls)  # each with its own Idempotency-Key

    winners = [r for r in responses if r.status_code == 200]
    assert len(winners) == 1, [r.status_code for r in responses]
    for response in responses:
        if response.status_code != 200:
            assert_problem(response, 409, "transfer_not_pending")
    won = winners[0].json()
    assert await get_transfer(client, ledger, made["id"]) == won
    moved = won["amount"] if won["status"] == "posted" else 0
    assert await balances(client, ledger, "alice", "bob") == {
        "alice": (1000 - moved, 0, 0, 1000 - moved, 3),
        "bob": (moved, 0, 0, moved, 2),
    }
    resolutions = [
        e["type"]
        for e in events(tmp_path, ledger.ledger_id)
        if e["data"]["id"] == made["id"] and e["type"] != "transfer.created"
    ]
    assert resolutions == [f"transfer.{won['status']}"]
    assert table_counts(tmp_path)["holds"] == 0


async def test_concurrent_holds_beyond_available_succeed_only_while_they_fit(
    server_client: httpx.AsyncClient,
) -> None:
    client = server_client
    ledger = await ready(client)
    rng = random.Random(20261129)
    amounts = [rng.randint(40, 160) for _ in range(30)]
    assert sum(amounts) > 2 * 1000
    responses = await asyncio.gather(
        *(create(client, ledger, simple("alice", "bob", amount, pending=True)) for amount in amounts)
    )
    held = [amount for amount, r in zip(amounts, responses, strict=True) if r.status_code == 201]
    refused = [amount for amount, r in zip(amounts, responses, strict=True) if r.status_code != 201]
    for response in responses:
        if response.status_code != 201:
            assert_problem(response, 422, "insufficient_funds")
    assert held
    assert refused
    assert sum(held) <= 1000
    available = 1000 - sum(held)
    # Available only fell while the holds ran, so each refused hold was more than what is left now.
    assert all(amount > available for amount in refused)
    assert await balances(client, ledger, "alice", "bob") == {
        "alice": (1000, sum(held), 0, available, 1 + len(held)),
        "bob": (0, 0, sum(held), 0, len(held)),
    }
    assert len(await listed(client, ledger, status="pending")) == len(held)


async def test_concurrent_partial_reversals_never_exceed_the_original(
    server_client: httpx.AsyncClient,
) -> None:
    client = server_client
    ledger = await ready(client)
    original = (await create(client, ledger, simple("alice", "bob", 1000))).json()
    responses = await asyncio.gather(
        *(act(client, ledger, original["id"], "reverse", {"amount": 60}) for _ in range(20))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] * 16 + [422] * 4  # 16 x 60 = 960 fits in 1000; a 17th would not
    for response in responses:
        if response.status_code == 422:
            assert_problem(response, 422, "reversal_exceeds_original")
    assert (await get_transfer(client, ledger, original["id"]))["reversed_amount"] == 960
    assert (await balances(client, ledger, "alice", "bob")) == {
        "alice": (960, 0, 0, 960, 18),
        "bob": (40, 0, 0, 40, 17),
    }


async def test_a_short_hold_reads_expired_at_its_instant_and_the_sweeper_writes_it_down_once(
    server_client: httpx.AsyncClient, tmp_path: Path
) -> None:
    client = server_client
    ledger = await ready(client)
    made = await hold(client, ledger, "alice", "bob", 300, expires_at=soon(200))
    assert (await get_transfer(client, ledger, made["id"]))["status"] == "pending"
    instant = datetime.fromisoformat(made["expires_at"])

    async def passed() -> bool:
        return datetime.now(UTC) > instant

    await eventually(passed, "the hold's expires_at")
    # The first read after the instant sees it expired, whatever the sweeper has done so far.
    assert (await get_transfer(client, ledger, made["id"]))["status"] == "expired"
    assert await balances(client, ledger, "alice", "bob") == {
        "alice": (1000, 0, 0, 1000, 3),
        "bob": (0, 0, 0, 0, 2),
    }
    assert_problem(await act(client, ledger, made["id"], "post"), 409, "transfer_not_pending")

    def expiries_of(transfer_id: str) -> list[dict[str, object]]:
        found = events(tmp_path, ledger.ledger_id)
        return [e for e in found if e["type"] == "transfer.expired" and e["data"]["id"] == transfer_id]

    async def swept(transfer_id: str) -> bool:
        return bool(expiries_of(transfer_id))

    await eventually(lambda: swept(made["id"]), "the sweeper's transfer.expired event")
    [event] = expiries_of(made["id"])
    assert event["request_id"] is None
    assert stored_status(tmp_path, made["id"]) == "expired"

    # A later sweep (it writes a second hold down) does not announce the first one again.
    second = await hold(client, ledger, "world", "carol", 10, expires_at=soon(100))
    await eventually(lambda: swept(second["id"]), "the second hold's transfer.expired event")
    assert len(expiries_of(made["id"])) == 1
    assert table_counts(tmp_path)["holds"] == 0
    assert await balances(client, ledger, "alice", "bob", "carol") == {
        "alice": (1000, 0, 0, 1000, 3),
        "bob": (0, 0, 0, 0, 2),
        "carol": (0, 0, 0, 0, 2),
    }

"""Reversals: the correction of a posted transfer, as a new posted transfer with the legs swapped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.holds_support import (
    act,
    balances,
    create,
    events,
    get_transfer,
    hold,
    legs,
    open_accounts,
    replayed,
    simple,
    snapshot,
)
from tests.support import RFC3339_UTC_MICROS, LedgerKeys, assert_problem, new_ledger


@pytest.fixture
async def accounts(client: httpx.AsyncClient, ledger: LedgerKeys) -> None:
    await open_accounts(client, ledger)


async def pay(client: httpx.AsyncClient, ledger: LedgerKeys, body: dict[str, Any]) -> dict[str, Any]:
    response = await create(client, ledger, body)
    assert response.status_code == 201, response.text
    made: dict[str, Any] = response.json()
    return made


async def test_a_reversal_is_a_new_posted_transfer_with_the_legs_swapped(
    any_client: httpx.AsyncClient,
) -> None:
    client = any_client
    ledger = await new_ledger(client)
    await open_accounts(client, ledger)
    original = await pay(client, ledger, simple("alice", "bob", 300, description="rent"))
    response = await act(client, ledger, original["id"], "reverse", {"description": "refund"})
    assert response.status_code == 201, response.text
    reversal = response.json()
    assert reversal["id"].startswith("tr_")
    assert reversal["id"] != original["id"]
    assert (reversal["status"], reversal["reverses"], reversal["description"]) == (
        "posted",
        original["id"],
        "refund",
    )
    assert (reversal["debit_account_id"], reversal["credit_account_id"], reversal["amount"]) == (
        "bob",
        "alice",
        300,
    )
    assert RFC3339_UTC_MICROS.fullmatch(reversal["posted_at"])
    assert await get_transfer(client, ledger, reversal["id"]) == reversal
    assert (await get_transfer(client, ledger, original["id"]))["reversed_amount"] == 300
    assert await balances(client, ledger, "alice", "bob") == {
        "alice": (1000, 0, 0, 1000, 3),
        "bob": (0, 0, 0, 0, 2),
    }
    entries = (await client.get("/v1/accounts/bob/entries", headers=ledger.read)).json()["data"]
    assert [(e["transfer_id"], e["direction"], e["amount"]) for e in entries] == [
        (reversal["id"], "debit", 300),
        (original["id"], "credit", 300),
    ]


@pytest.mark.usefixtures("accounts")
async def test_partial_reversals_add_up_to_at_most_the_original(
    client: httpx.AsyncClient, ledger: LedgerKeys, tmp_path: Path
) -> None:
    original = await pay(client, ledger, simple("alice", "bob", 300))
    for amount in (100, 150):
        made = await act(client, ledger, original["id"], "reverse", {"amount": amount})
        assert (made.status_code, made.json()["amount"]) == (201, amount)
    assert (await get_transfer(client, ledger, original["id"]))["reversed_amount"] == 250
    before = await snapshot(client, ledger, tmp_path)
    too_much = await act(client, ledger, original["id"], "reverse", {"amount": 51})
    assert_problem(too_much, 422, "reversal_exceeds_original")
    assert await snapshot(client, ledger, tmp_path) == before

    rest = await act(client, ledger, original["id"], "reverse")  # no amount: what is left
    assert (rest.status_code, rest.json()["amount"]) == (201, 50)
    assert (await get_transfer(client, ledger, original["id"]))["reversed_amount"] == 300
    before = await snapshot(client, ledger, tmp_path)
    for body in (None, {"amount": 1}):
        assert_problem(
            await act(client, ledger, original["id"], "reverse", body), 422, "reversal_exceeds_original"
        )
    assert await snapshot(client, ledger, tmp_path) == before
    assert await balances(client, ledger, "alice", "bob") == {
        "alice": (1000, 0, 0, 1000, 5),
        "bob": (0, 0, 0, 0, 4),
    }


@pytest.mark.usefixtures("accounts")
async def test_a_multi_leg_transfer_reverses_only_as_a_whole(
    client: httpx.AsyncClient, ledger: LedgerKeys, tmp_path: Path
) -> None:
    original = await pay(
        client,
        ledger,
        {"legs": legs(("alice", "debit", 300), ("bob", "credit", 100), ("carol", "credit", 200))},
    )
    before = await snapshot(client, ledger, tmp_path)
    for amount in (100, 299):
        refused = await act(client, ledger, original["id"], "reverse", {"amount": amount})
        assert_problem(refused, 422, "partial_reversal_not_supported")
    assert await snapshot(client, ledger, tmp_path) == before
    whole = await act(client, ledger, original["id"], "reverse", {"amount": 300})
    assert whole.status_code == 201, whole.text
    assert [(leg["account_id"], leg["direction"], leg["amount"]) for leg in whole.json()["legs"]] == [
        ("alice", "credit", 300),
        ("bob", "debit", 100),
        ("carol", "debit", 200),
    ]
    assert await balances(client, ledger, "alice", "bob", "carol") == {
        "alice": (1000, 0, 0, 1000, 3),
        "bob": (0, 0, 0, 0, 2),
        "carol": (0, 0, 0, 0, 2),
    }
    assert_problem(await act(client, ledger, original["id"], "reverse"), 422, "reversal_exceeds_original")


@pytest.mark.usefixtures("accounts")
@pytest.mark.parametrize("state", ["pending", "voided"])
async def test_only_a_posted_transfer_can_be_reversed(
    client: httpx.AsyncClient, ledger: LedgerKeys, tmp_path: Path, state: str
) -> None:
    made = await hold(client, ledger, "alice", "bob", 300)
    if state == "voided":
        assert (await act(client, ledger, made["id"], "void")).status_code == 200
    before = await snapshot(client, ledger, tmp_path)
    # 409 answers before reversal_exceeds_original, which would also apply (API.md precedence)
    for body in (None, {"amount": 100}, {"amount": 10_000}):
        assert_problem(await act(client, ledger, made["id"], "reverse", body), 409, "transfer_not_posted")
    assert await snapshot(client, ledger, tmp_path) == before


@pytest.mark.usefixtures("accounts")
async def test_a_posted_hold_reverses_up_to_what_was_posted(
    client: httpx.AsyncClient, ledger: LedgerKeys, tmp_path: Path
) -> None:
    made = await hold(client, ledger, "alice", "bob", 300)
    assert (await act(client, ledger, made["id"], "post", {"amount": 120})).status_code == 200
    assert_problem(
        await act(client, ledger, made["id"], "reverse", {"amount": 121}), 422, "reversal_exceeds_original"
    )
    reversal = await act(client, ledger, made["id"], "reverse")
    assert (reversal.status_code, reversal.json()["amount"], reversal.json()["reverses"]) == (
        201,
        120,
        made["id"],
    )
    assert await balances(client, ledger, "alice", "bob") == {
        "alice": (1000, 0, 0, 1000, 4),
        "bob": (0, 0, 0, 0, 3),
    }
    kinds = [(e["type"], e["data"]["id"]) for e in events(tmp_path, ledger.ledger_id)]
    assert kinds[-3:] == [
        ("transfer.created", made["id"]),
        ("transfer.posted", made["id"]),
        ("transfer.created", reversal.json()["id"]),
    ]


@pytest.mark.usefixtures("accounts")
async def test_a_reversal_that_would_break_a_bound_is_refused_and_writes_nothing(
    client: httpx.AsyncClient, ledger: LedgerKeys, tmp_path: Path
) -> None:
    original = await pay(client, ledger, simple("alice", "bob", 300))
    await pay(client, ledger, simple("bob", "carol", 250))  # bob has spent most of it
    before = await snapshot(client, ledger, tmp_path)
    assert_problem(await act(client, ledger, original["id"], "reverse"), 422, "insufficient_funds")
    assert await snapshot(client, ledger, tmp_path) == before
    assert (await get_transfer(client, ledger, original["id"]))["reversed_amount"] == 0
    partial = await act(client, ledger, original["id"], "reverse", {"amount": 50})
    assert partial.status_code == 201, partial.text


@pytest.mark.usefixtures("accounts")
async def test_a_reversal_touching_a_frozen_account_is_refused(
    client: httpx.AsyncClient, ledger: LedgerKeys, tmp_path: Path
) -> None:
    original = await pay(client, ledger, simple("alice", "bob", 300))
    await client.patch("/v1/accounts/bob", json={"status": "frozen"}, headers=ledger.write)
    before = await snapshot(client, ledger, tmp_path)
    assert_problem(await act(client, ledger, original["id"], "reverse"), 422, "account_not_open")
    assert await snapshot(client, ledger, tmp_path) == before


@pytest.mark.usefixtures("accounts")
async def test_a_reversal_can_itself_be_reversed(client: httpx.AsyncClient, ledger: LedgerKeys) -> None:
    original = await pay(client, ledger, simple("alice", "bob", 300))
    reversal = (await act(client, ledger, original["id"], "reverse")).json()
    again = await act(client, ledger, reversal["id"], "reverse")
    assert again.status_code == 201, again.text
    assert (again.json()["reverses"], again.json()["debit_account_id"]) == (reversal["id"], "alice")
    assert (await balances(client, ledger, "bob"))["bob"][0] == 300


@pytest.mark.usefixtures("accounts")
async def test_a_retried_reversal_replays_the_first_reply_and_reverses_once(
    client: httpx.AsyncClient, ledger: LedgerKeys, tmp_path: Path
) -> None:
    original = await pay(client, ledger, simple("alice", "bob", 300))
    first = await act(client, ledger, original["id"], "reverse", {"amount": 100}, key="refund-1")
    assert (first.status_code, replayed(first)) == (201, False)
    after = await snapshot(client, ledger, tmp_path)
    again = await act(client, ledger, original["id"], "reverse", {"amount": 100}, key="refund-1")
    assert (again.status_code, again.content, replayed(again)) == (201, first.content, True)
    assert await snapshot(client, ledger, tmp_path) == after
    assert (await get_transfer(client, ledger, original["id"]))["reversed_amount"] == 100
    other = await act(client, ledger, original["id"], "reverse", {"amount": 101}, key="refund-1")
    assert_problem(other, 422, "idempotency_key_reused")

    refused = await act(client, ledger, original["id"], "reverse", {"amount": 201}, key="refund-2")
    assert_problem(refused, 422, "reversal_exceeds_original")
    replay = await act(client, ledger, original["id"], "reverse", {"amount": 201}, key="refund-2")
    assert (replay.status_code, replay.content, replayed(replay)) == (422, refused.content, True)
    assert await snapshot(client, ledger, tmp_path) == after


@pytest.mark.usefixtures("accounts")
@pytest.mark.parametrize(
    "body",
    [{"amount": 0}, {"amount": -5}, {"amount": "100"}, {"amount": 1.5}, {"reason": "x"}, {"amount": 2**63}],
)
async def test_a_malformed_reversal_body_is_refused_before_anything_else(
    client: httpx.AsyncClient, ledger: LedgerKeys, tmp_path: Path, body: dict[str, Any]
) -> None:
    original = await pay(client, ledger, simple("alice", "bob", 300))
    before = await snapshot(client, ledger, tmp_path)
    path = f"/v1/transfers/{original['id']}/reverse"
    assert_problem(await client.post(path, json=body, headers=ledger.write), 422, "validation_error")
    assert_problem(await act(client, ledger, original["id"], "reverse", body), 422, "validation_error")
    assert await snapshot(client, ledger, tmp_path) == before

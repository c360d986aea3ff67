"""Transfer batches: up to 1000 transfers in order, all or nothing (atomic) or each on its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.holds_support import (
    balances,
    batch,
    create,
    events,
    get_transfer,
    legs,
    open_accounts,
    replayed,
    simple,
    snapshot,
)
from tests.support import LedgerKeys, assert_problem, idem, new_ledger

# Item 1 only fails because item 0 has already spent alice's money: items apply in order.
MIXED = [
    simple("alice", "bob", 600),
    simple("alice", "carol", 600),
    simple("alice", "alice", 5),
    simple("ghost", "bob", 5),
    {"legs": legs(("alice", "debit", 10), ("bob", "credit", 9))},
    simple("alice", "bob", 5, currency="EUR"),
    simple("alice", "bob", 5),
]
MIXED_ERRORS = [
    (1, "insufficient_funds"),
    (2, "same_account"),
    (3, "account_not_found"),
    (4, "unbalanced_transfer"),
    (5, "currency_mismatch"),
]


@pytest.fixture
async def accounts(client: httpx.AsyncClient, ledger: LedgerKeys) -> None:
    await open_accounts(client, ledger)


async def test_an_atomic_batch_applies_every_transfer_in_order(any_client: httpx.AsyncClient) -> None:
    client = any_client
    ledger = await new_ledger(client)
    await open_accounts(client, ledger)
    items = [
        simple("alice", "bob", 600, id="batch-0"),
        simple("bob", "carol", 500),  # bob holds only what item 0 gave him
        {"legs": legs(("carol", "debit", 300), ("alice", "credit", 100), ("bob", "credit", 200))},
        simple("alice", "carol", 200, pending=True),
        simple("alice", "bob", 200),  # fits beside item 3's hold, with 100 to spare
    ]
    response = await client.post(
        "/v1/transfers/batch",
        json={"transfers": items, "atomic": True},
        headers={**ledger.write, **idem(), "X-Request-ID": "batch-req-1"},
    )
    assert response.status_code == 201, response.text
    results = response.json()["results"]
    assert [(r["index"], r["status"]) for r in results] == [(i, "created") for i in range(5)]
    assert results[0]["transfer"]["id"] == "batch-0"
    assert [r["transfer"]["status"] for r in results] == ["posted"] * 3 + ["pending", "posted"]
    for result in results:
        assert await get_transfer(client, ledger, result["transfer"]["id"]) == result["transfer"]
    assert await balances(client, ledger, "alice", "bob", "carol") == {
        "alice": (300, 200, 0, 100, 5),
        "bob": (500, 0, 0, 500, 4),
        "carol": (200, 0, 200, 200, 3),
    }


@pytest.mark.usefixtures("accounts")
async def test_every_transfer_of_a_batch_emits_its_event_with_the_batch_request_id(
    client: httpx.AsyncClient, ledger: LedgerKeys, tmp_path: Path
) -> None:
    before = len(events(tmp_path, ledger.ledger_id))
    response = await client.post(
        "/v1/transfers/batch",
        json={"transfers": [simple("alice", "bob", 1), simple("alice", "carol", 2)], "atomic": False},
        headers={**ledger.write, **idem(), "X-Request-ID": "batch-req-2"},
    )
    assert response.status_code == 200, response.text
    made = [r["transfer"]["id"] for r in response.json()["results"]]
    new = events(tmp_path, ledger.ledger_id)[before:]
    assert [(e["type"], e["data"]["id"], e["request_id"]) for e in new] == [
        ("transfer.created", made[0], "batch-req-2"),
        ("transfer.created", made[1], "batch-req-2"),
    ]


@pytest.mark.usefixtures("accounts")
async def test_an_atomic_batch_with_failures_lists_every_one_and_applies_nothing(
    client: httpx.AsyncClient, ledger: LedgerKeys, tmp_path: Path
) -> None:
    before = await snapshot(client, ledger, tmp_path)
    problem = assert_problem(await batch(client, ledger, MIXED, atomic=True), 422, "batch_failed")
    assert [(e["index"], e["code"]) for e in problem["errors"]] == MIXED_ERRORS
    assert all(set(e) == {"index", "code", "detail"} and e["detail"] for e in problem["errors"])
    assert await snapshot(client, ledger, tmp_path) == before


@pytest.mark.usefixtures("accounts")
async def test_a_non_atomic_batch_applies_each_transfer_on_its_own(
    client: httpx.AsyncClient, ledger: LedgerKeys, tmp_path: Path
) -> None:
    before = await snapshot(client, ledger, tmp_path)
    response = await batch(client, ledger, MIXED, atomic=False)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    failed = dict(MIXED_ERRORS)
    assert [r["index"] for r in results] == list(range(len(MIXED)))
    for result in results:
        if result["index"] in failed:
            assert result["status"] == "error"
            assert result["error"]["code"] == failed[result["index"]]
            assert result["error"]["detail"]
            assert result.get("transfer") is None
        else:
            assert result["status"] == "created"
            assert result.get("error") is None
    assert await balances(client, ledger, "alice", "bob", "carol") == {
        "alice": (395, 0, 0, 395, 3),
        "bob": (605, 0, 0, 605, 2),
        "carol": (0, 0, 0, 0, 0),
    }
    after = await snapshot(client, ledger, tmp_path)
    assert len(after["transfers"]) == len(before["transfers"]) + 2
    assert len(after["events"]) == len(before["events"]) + 2
    assert after["rows"]["entries"] == before["rows"]["entries"] + 4


@pytest.mark.usefixtures("accounts")
async def test_client_ids_dedupe_each_item_against_the_ledger_and_the_batch_itself(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    rent = simple("alice", "bob", 300, id="rent")
    stored = (await create(client, ledger, rent)).json()
    items = [
        rent,
        {**rent, "amount": 10**6},  # a conflict answers before the funds would (409 before 422)
        simple("alice", "carol", 10, id="tip"),
        simple("alice", "carol", 10, id="tip"),
        simple("alice", "carol", 11, id="tip"),
    ]
    response = await batch(client, ledger, items, atomic=False)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["exists", "error", "created", "exists", "error"]
    assert [r["error"]["code"] for r in results if r["status"] == "error"] == ["id_conflict", "id_conflict"]
    assert results[0]["transfer"] == stored
    assert results[3]["transfer"] == results[2]["transfer"]
    assert (await balances(client, ledger, "alice"))["alice"][0] == 690

    again = await batch(client, ledger, [rent, simple("alice", "carol", 10)], atomic=True)
    assert again.status_code == 201, again.text
    assert [r["status"] for r in again.json()["results"]] == ["exists", "created"]
    assert (await balances(client, ledger, "alice"))["alice"][0] == 680


@pytest.mark.usefixtures("accounts")
async def test_a_hold_in_a_batch_reserves_for_the_items_after_it(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    items = [
        simple("alice", "bob", 800, pending=True, expires_at="2999-01-01T00:00:00Z"),
        simple("alice", "carol", 300),
        simple("alice", "carol", 200),
        simple("alice", "carol", 5, pending=True, expires_at="2001-01-01T00:00:00Z"),  # past: database clock
    ]
    response = await batch(client, ledger, items, atomic=False)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["created", "error", "created", "error"]
    assert results[0]["transfer"]["expires_at"] == "2999-01-01T00:00:00.000000Z"
    assert [r["error"]["code"] for r in results if r["status"] == "error"] == [
        "insufficient_funds",
        "validation_error",
    ]
    assert (await balances(client, ledger, "alice"))["alice"] == (800, 800, 0, 0, 3)


async def test_a_batch_holds_from_1_to_1000_transfers(
    client: httpx.AsyncClient, ledger: LedgerKeys, tmp_path: Path
) -> None:
    await open_accounts(client, ledger)
    before = await snapshot(client, ledger, tmp_path)
    one = simple("world", "bob", 1)
    for size in (0, 1001):
        problem = assert_problem(
            await batch(client, ledger, [one] * size, atomic=True), 422, "validation_error"
        )
        assert ["body", "transfers"] in [error["loc"] for error in problem["errors"]]
    assert await snapshot(client, ledger, tmp_path) == before
    response = await batch(client, ledger, [one] * 1000, atomic=True)
    assert response.status_code == 201, response.text
    assert [r["index"] for r in response.json()["results"]] == list(range(1000))
    assert (await balances(client, ledger, "bob"))["bob"] == (1000, 0, 0, 1000, 1000)


ONE = [simple("alice", "bob", 5)]


@pytest.mark.usefixtures("accounts")
@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"transfers": [*ONE, simple("alice", "bob", "5")], "atomic": True}, ["transfers", 1, "amount"]),
        (
            {"transfers": [simple("alice", "bob", 5, colour="red")], "atomic": True},
            ["transfers", 0, "colour"],
        ),
        ({"transfers": [{"legs": legs(("alice", "debit", 5))}], "atomic": False}, ["transfers", 0, "legs"]),
        (
            {"transfers": [simple("alice", "bob", 5, pending="yes")], "atomic": False},
            ["transfers", 0, "pending"],
        ),
        ({"transfers": ONE, "atomic": "true"}, ["atomic"]),
        ({"transfers": ONE}, ["atomic"]),
        ({"transfers": ONE[0], "atomic": True}, ["transfers"]),
        ({"transfers": ONE, "atomic": True, "mode": "fast"}, ["mode"]),
    ],
    ids=[
        "amount",
        "unknown_field",
        "one_leg",
        "pending",
        "atomic_string",
        "atomic_missing",
        "not_a_list",
        "unknown_top_level_field",
    ],
)
async def test_a_schema_invalid_batch_is_refused_whole_and_stores_nothing_under_its_key(
    client: httpx.AsyncClient, ledger: LedgerKeys, tmp_path: Path, body: dict[str, Any], loc: list[Any]
) -> None:
    before = await snapshot(client, ledger, tmp_path)
    headers = {**ledger.write, **idem("batch-1")}
    response = await client.post("/v1/transfers/batch", json=body, headers=headers)
    problem = assert_problem(response, 422, "validation_error")
    assert ["body", *loc] in [error["loc"] for error in problem["errors"]]
    assert await snapshot(client, ledger, tmp_path) == before
    fixed = await batch(client, ledger, [simple("alice", "bob", 5)], atomic=False, key="batch-1")
    assert (fixed.status_code, replayed(fixed)) == (200, False)


@pytest.mark.usefixtures("accounts")
async def test_a_batch_needs_an_idempotency_key_checked_after_the_body(
    client: httpx.AsyncClient, ledger: LedgerKeys, tmp_path: Path
) -> None:
    before = await snapshot(client, ledger, tmp_path)
    valid = {"transfers": [simple("alice", "bob", 5)], "atomic": True}
    missing = await client.post("/v1/transfers/batch", json=valid, headers=ledger.write)
    assert_problem(missing, 400, "idempotency_key_required")
    invalid = await client.post("/v1/transfers/batch", json={"transfers": []}, headers=ledger.write)
    assert_problem(invalid, 422, "validation_error")
    read_only = await client.post("/v1/transfers/batch", json=valid, headers={**ledger.read, **idem()})
    assert_problem(read_only, 403, "forbidden")
    assert await snapshot(client, ledger, tmp_path) == before


@pytest.mark.usefixtures("accounts")
@pytest.mark.parametrize("atomic", [True, False])
async def test_a_retried_batch_replays_the_first_reply_without_a_second_effect(
    client: httpx.AsyncClient, ledger: LedgerKeys, tmp_path: Path, atomic: bool
) -> None:
    items = [simple("alice", "bob", 100), simple("alice", "carol", 50, pending=True)]
    first = await batch(client, ledger, items, atomic=atomic, key="batch-1")
    assert (first.status_code, replayed(first)) == (201 if atomic else 200, False)
    after = await snapshot(client, ledger, tmp_path)
    again = await batch(client, ledger, items, atomic=atomic, key="batch-1")
    assert (again.status_code, again.content, replayed(again)) == (first.status_code, first.content, True)
    other = await batch(client, ledger, items, atomic=not atomic, key="batch-1")
    assert_problem(other, 422, "idempotency_key_reused")
    assert await snapshot(client, ledger, tmp_path) == after
    assert (await balances(client, ledger, "alice"))["alice"] == (900, 50, 0, 850, 3)


@pytest.mark.usefixtures("accounts")
async def test_a_failed_atomic_batch_is_replayed_even_after_the_obstacle_is_gone(
    client: httpx.AsyncClient, ledger: LedgerKeys, tmp_path: Path
) -> None:
    items = [simple("alice", "bob", 1000), simple("alice", "carol", 500)]
    refused = await batch(client, ledger, items, atomic=True, key="batch-1")
    assert [(e["index"], e["code"]) for e in assert_problem(refused, 422, "batch_failed")["errors"]] == [
        (1, "insufficient_funds")
    ]
    assert (await create(client, ledger, simple("world", "alice", 500))).status_code == 201
    before = await snapshot(client, ledger, tmp_path)
    again = await batch(client, ledger, items, atomic=True, key="batch-1")
    assert (again.status_code, again.content, replayed(again)) == (422, refused.content, True)
    assert await snapshot(client, ledger, tmp_path) == before
    fresh = await batch(client, ledger, items, atomic=True, key="batch-2")
    assert fresh.status_code == 201, fresh.text
    assert (await balances(client, ledger, "alice"))["alice"] == (0, 0, 0, 0, 4)

"""Accounts: opening, reading, listing, changing, bounds, balances in time and entries."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from tests.support import RFC3339_UTC_MICROS, LedgerKeys, assert_problem, open_account, transfer

MICROSECOND = timedelta(microseconds=1)


async def get_account(client: httpx.AsyncClient, ledger: LedgerKeys, account_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/accounts/{account_id}", headers=ledger.read)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def patch(
    client: httpx.AsyncClient, ledger: LedgerKeys, account_id: str, **body: Any
) -> httpx.Response:
    return await client.patch(f"/v1/accounts/{account_id}", json=body, headers=ledger.write)


async def pay(client: httpx.AsyncClient, ledger: LedgerKeys, debit: str, credit: str, amount: int) -> None:
    response = await transfer(client, ledger.write, debit, credit, amount)
    assert response.status_code == 201, response.text


async def pages(client: httpx.AsyncClient, ledger: LedgerKeys, path: str, **query: Any) -> list[list[Any]]:
    """Every page of a list, following ``next_cursor`` to the end."""
    found: list[list[Any]] = []
    cursor: str | None = None
    while True:
        params = {**query, **({"cursor": cursor} if cursor else {})}
        response = await client.get(path, params=params, headers=ledger.read)
        assert response.status_code == 200, response.text
        body = response.json()
        found.append(body["data"])
        cursor = body["next_cursor"]
        if cursor is None:
            return found


@pytest.fixture
async def world(client: httpx.AsyncClient, ledger: LedgerKeys) -> str:
    """An unbounded debit-normal funding account."""
    account = await open_account(client, ledger.write, id="world", normal_balance="debit", min_balance=None)
    return str(account["id"])


async def test_an_account_opens_with_the_documented_defaults(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    response = await client.post("/v1/accounts", json={"currency": "USD"}, headers=ledger.write)
    assert response.status_code == 201, response.text
    account = response.json()
    assert account["id"].startswith("acc_")
    assert account["currency"] == "USD"
    assert account["normal_balance"] == "credit"
    assert (account["min_balance"], account["max_balance"]) == (0, None)
    assert account["status"] == "open"
    assert account["version"] == 0
    assert account["metadata"] == {}
    assert RFC3339_UTC_MICROS.fullmatch(account["created_at"])
    assert RFC3339_UTC_MICROS.fullmatch(account["updated_at"])
    assert account["balance"] == {"posted": 0, "pending_debits": 0, "pending_credits": 0, "available": 0}
    assert await get_account(client, ledger, account["id"]) == account


async def test_a_create_repeating_a_client_id_with_the_same_body_returns_the_existing_account(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    body = {"id": "alice", "currency": "USD", "name": "alice wallet", "metadata": {"tier": 1}}
    first = await client.post("/v1/accounts", json=body, headers=ledger.write)
    again = await client.post("/v1/accounts", json=body, headers=ledger.write)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    listed = (await client.get("/v1/accounts", headers=ledger.read)).json()["data"]
    assert [a["id"] for a in listed] == ["alice"]


@pytest.mark.parametrize(
    "change", [{"currency": "EUR"}, {"name": "other"}, {"min_balance": -5}, {"metadata": {"tier": 2}}]
)
async def test_a_create_repeating_a_client_id_with_another_body_is_an_id_conflict(
    client: httpx.AsyncClient, ledger: LedgerKeys, change: dict[str, Any]
) -> None:
    body = {"id": "alice", "currency": "USD", "name": "alice wallet", "metadata": {"tier": 1}}
    original = await open_account(client, ledger.write, **body)
    response = await client.post("/v1/accounts", json={**body, **change}, headers=ledger.write)
    assert_problem(response, 409, "id_conflict")
    assert await get_account(client, ledger, "alice") == original


async def test_an_unknown_account_is_not_found(client: httpx.AsyncClient, ledger: LedgerKeys) -> None:
    for suffix in ("", "/balance", "/entries"):
        response = await client.get(f"/v1/accounts/nobody{suffix}", headers=ledger.read)
        assert_problem(response, 404, "not_found")
    assert_problem(await patch(client, ledger, "nobody", name="x"), 404, "not_found")


async def test_accounts_are_listed_oldest_first_and_filtered_by_currency_and_status(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    for account_id, currency in [("u1", "USD"), ("e1", "EUR"), ("u2", "USD"), ("e2", "EUR"), ("u3", "USD")]:
        await open_account(client, ledger.write, id=account_id, currency=currency)
    assert (await patch(client, ledger, "u2", status="frozen")).status_code == 200
    assert (await patch(client, ledger, "e2", status="frozen")).status_code == 200

    async def ids(**query: str) -> list[str]:
        return [a["id"] for page in await pages(client, ledger, "/v1/accounts", **query) for a in page]

    assert await ids() == ["u1", "e1", "u2", "e2", "u3"]
    assert await ids(currency="USD") == ["u1", "u2", "u3"]
    assert await ids(status="frozen") == ["u2", "e2"]
    assert await ids(currency="EUR", status="open") == ["e1"]
    assert await ids(currency="GBP") == []


async def test_account_pages_hold_limit_items_and_skip_or_repeat_none_under_inserts(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    created = [(await open_account(client, ledger.write))["id"] for _ in range(7)]
    first = (await client.get("/v1/accounts", params={"limit": 3}, headers=ledger.read)).json()
    assert [a["id"] for a in first["data"]] == created[:3]
    created.append((await open_account(client, ledger.write))["id"])  # inserted mid-walk
    rest = await pages(client, ledger, "/v1/accounts", limit=3, cursor=first["next_cursor"])
    assert [len(page) for page in rest] == [3, 2]
    assert [a["id"] for a in first["data"]] + [a["id"] for page in rest for a in page] == created


async def test_a_patch_renames_and_replaces_metadata_as_a_whole_without_moving_the_version(
    client: httpx.AsyncClient, ledger: LedgerKeys, world: str
) -> None:
    await open_account(client, ledger.write, id="alice", name="old", metadata={"a": 1, "b": {"c": 2}})
    await pay(client, ledger, world, "alice", 40)
    before = await get_account(client, ledger, "alice")
    response = await patch(client, ledger, "alice", name="new", metadata={"d": [3]})
    assert response.status_code == 200, response.text
    after = response.json()
    assert (after["name"], after["metadata"]) == ("new", {"d": [3]})
    assert after["version"] == before["version"] == 1
    assert after["balance"] == before["balance"]
    assert await get_account(client, ledger, "alice") == after


async def test_a_frozen_account_refuses_new_postings_both_ways_until_it_is_reopened(
    client: httpx.AsyncClient, ledger: LedgerKeys, world: str
) -> None:
    await open_account(client, ledger.write, id="alice")
    await pay(client, ledger, world, "alice", 100)
    frozen = await patch(client, ledger, "alice", status="frozen")
    assert frozen.status_code == 200
    assert frozen.json()["status"] == "frozen"
    assert frozen.json()["version"] == 1  # a status change is not a balance change
    before = await get_account(client, ledger, "alice")
    assert_problem(await transfer(client, ledger.write, world, "alice", 5), 422, "account_not_open")
    assert_problem(await transfer(client, ledger.write, "alice", world, 5), 422, "account_not_open")
    assert await get_account(client, ledger, "alice") == before
    reopened = await patch(client, ledger, "alice", status="open")
    assert reopened.json()["status"] == "open"
    await pay(client, ledger, "alice", world, 5)
    assert (await get_account(client, ledger, "alice"))["balance"]["posted"] == 95


@pytest.mark.parametrize("from_status", ["open", "frozen"])
async def test_an_empty_account_can_be_closed(
    client: httpx.AsyncClient, ledger: LedgerKeys, world: str, from_status: str
) -> None:
    await open_account(client, ledger.write, id="alice")
    await pay(client, ledger, world, "alice", 30)
    await pay(client, ledger, "alice", world, 30)
    if from_status == "frozen":
        assert (await patch(client, ledger, "alice", status="frozen")).status_code == 200
    closed = await patch(client, ledger, "alice", status="closed")
    assert closed.status_code == 200, closed.text
    assert (await get_account(client, ledger, "alice"))["status"] == "closed"


async def test_an_account_with_a_balance_cannot_be_closed(
    client: httpx.AsyncClient, ledger: LedgerKeys, world: str
) -> None:
    await open_account(client, ledger.write, id="alice")
    await pay(client, ledger, world, "alice", 1)
    assert_problem(await patch(client, ledger, "alice", status="closed"), 409, "account_not_empty")
    assert (await get_account(client, ledger, "alice"))["status"] == "open"


@pytest.mark.parametrize(
    "change",
    [{"name": "x"}, {"metadata": {"a": 1}}, {"status": "open"}, {"status": "frozen"}, {"min_balance": -10}],
)
async def test_a_closed_account_refuses_every_change(
    client: httpx.AsyncClient, ledger: LedgerKeys, change: dict[str, Any]
) -> None:
    await open_account(client, ledger.write, id="alice")
    assert (await patch(client, ledger, "alice", status="closed")).status_code == 200
    before = await get_account(client, ledger, "alice")
    assert_problem(await patch(client, ledger, "alice", **change), 409, "account_closed")
    assert await get_account(client, ledger, "alice") == before


async def test_a_closed_account_refuses_postings(
    client: httpx.AsyncClient, ledger: LedgerKeys, world: str
) -> None:
    await open_account(client, ledger.write, id="alice", min_balance=None)
    assert (await patch(client, ledger, "alice", status="closed")).status_code == 200
    assert_problem(await transfer(client, ledger.write, world, "alice", 5), 422, "account_not_open")
    assert_problem(await transfer(client, ledger.write, "alice", world, 5), 422, "account_not_open")
    assert (await get_account(client, ledger, "alice"))["version"] == 0


async def test_a_negative_min_balance_is_an_overdraft_limit(
    client: httpx.AsyncClient, ledger: LedgerKeys, world: str
) -> None:
    await open_account(client, ledger.write, id="alice", min_balance=-500)
    await pay(client, ledger, "alice", world, 499)
    await pay(client, ledger, "alice", world, 1)
    assert (await get_account(client, ledger, "alice"))["balance"]["available"] == -500
    assert_problem(await transfer(client, ledger.write, "alice", world, 1), 422, "insufficient_funds")
    assert (await get_account(client, ledger, "alice"))["balance"]["posted"] == -500


async def test_a_max_balance_refuses_credits_above_it(
    client: httpx.AsyncClient, ledger: LedgerKeys, world: str
) -> None:
    await open_account(client, ledger.write, id="alice", max_balance=1000)
    await pay(client, ledger, world, "alice", 1000)
    assert_problem(await transfer(client, ledger.write, world, "alice", 1), 422, "insufficient_funds")
    account = await get_account(client, ledger, "alice")
    assert (account["balance"]["posted"], account["version"]) == (1000, 1)


async def test_a_debit_normal_account_counts_debits_as_positive_and_respects_its_bounds(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    await open_account(client, ledger.write, id="cash", normal_balance="debit", max_balance=300)
    await open_account(client, ledger.write, id="equity", min_balance=None)
    assert_problem(await transfer(client, ledger.write, "equity", "cash", 1), 422, "insufficient_funds")
    await pay(client, ledger, "cash", "equity", 300)
    assert (await get_account(client, ledger, "cash"))["balance"]["posted"] == 300
    assert (await get_account(client, ledger, "equity"))["balance"]["posted"] == 300
    assert_problem(await transfer(client, ledger.write, "cash", "equity", 1), 422, "insufficient_funds")
    await pay(client, ledger, "equity", "cash", 100)
    assert (await get_account(client, ledger, "cash"))["balance"]["posted"] == 200


@pytest.mark.parametrize(
    "bounds", [{"min_balance": 501}, {"max_balance": 499}, {"min_balance": None, "max_balance": 0}]
)
async def test_a_patch_of_bounds_that_the_current_balance_breaks_is_refused(
    client: httpx.AsyncClient, ledger: LedgerKeys, world: str, bounds: dict[str, Any]
) -> None:
    await open_account(client, ledger.write, id="alice")
    await pay(client, ledger, world, "alice", 500)
    before = await get_account(client, ledger, "alice")
    assert_problem(await patch(client, ledger, "alice", **bounds), 422, "insufficient_funds")
    assert await get_account(client, ledger, "alice") == before
    edge = await patch(client, ledger, "alice", min_balance=500, max_balance=500)
    assert edge.status_code == 200, edge.text
    assert (edge.json()["min_balance"], edge.json()["max_balance"]) == (500, 500)


async def test_a_patch_whose_bounds_contradict_each_other_is_refused_before_the_lookup(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    # API.md error precedence: body validation (422) answers before lookups (404) and state (409).
    bounds = {"min_balance": 10, "max_balance": 5}
    assert_problem(await patch(client, ledger, "nobody", **bounds), 422, "validation_error")
    await open_account(client, ledger.write, id="shut")
    assert (await patch(client, ledger, "shut", status="closed")).status_code == 200
    assert_problem(await patch(client, ledger, "shut", **bounds), 422, "validation_error")


async def test_a_min_balance_above_the_max_balance_is_a_validation_error(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    body = {"id": "alice", "currency": "USD", "min_balance": 10, "max_balance": 5}
    response = await client.post("/v1/accounts", json=body, headers=ledger.write)
    assert_problem(response, 422, "validation_error")
    assert_problem(await client.get("/v1/accounts/alice", headers=ledger.read), 404, "not_found")
    await open_account(client, ledger.write, id="bob", max_balance=100)
    assert_problem(await patch(client, ledger, "bob", min_balance=101), 422, "validation_error")
    assert (await get_account(client, ledger, "bob"))["min_balance"] == 0


async def balance(
    client: httpx.AsyncClient, ledger: LedgerKeys, account_id: str, at: datetime
) -> dict[str, Any]:
    as_of = at.isoformat().replace("+00:00", "Z")
    response = await client.get(
        f"/v1/accounts/{account_id}/balance", params={"as_of": as_of}, headers=ledger.read
    )
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def parsed(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


async def test_a_balance_as_of_a_moment_is_the_balance_after_the_last_posting_at_or_before_it(
    client: httpx.AsyncClient, ledger: LedgerKeys, world: str
) -> None:
    await open_account(client, ledger.write, id="alice")
    first = await transfer(client, ledger.write, world, "alice", 100)
    second = await transfer(client, ledger.write, world, "alice", 250)
    at_first, at_second = parsed(first.json()["created_at"]), parsed(second.json()["created_at"])
    assert at_first < at_second

    now = (await client.get("/v1/accounts/alice/balance", headers=ledger.read)).json()
    assert (now["posted"], now["available"], now["version"]) == (350, 350, 2)
    assert (now["account_id"], now["currency"]) == ("alice", "USD")

    elsewhere = timezone(timedelta(hours=2))
    for moment in (at_first, at_second - MICROSECOND, at_first.astimezone(elsewhere)):
        past = await balance(client, ledger, "alice", moment)
        assert (past["posted"], past["available"], past["version"]) == (100, 100, 1)
        assert parsed(past["as_of"]) == moment
        assert RFC3339_UTC_MICROS.fullmatch(past["as_of"])
    latest = await balance(client, ledger, "alice", at_second)
    assert (latest["posted"], latest["version"]) == (350, 2)
    before = await balance(client, ledger, "alice", at_first - MICROSECOND)
    assert (before["posted"], before["pending_debits"], before["pending_credits"]) == (0, 0, 0)
    assert (before["available"], before["version"]) == (0, 0)


async def test_entries_are_listed_newest_first_with_the_balance_and_version_after_each(
    client: httpx.AsyncClient, ledger: LedgerKeys, world: str
) -> None:
    await open_account(client, ledger.write, id="alice")
    await open_account(client, ledger.write, id="bob")
    made = [
        await transfer(client, ledger.write, world, "alice", 1000),
        await transfer(client, ledger.write, "alice", "bob", 300),
        await transfer(client, ledger.write, world, "alice", 50),
    ]
    walked = await pages(client, ledger, "/v1/accounts/alice/entries", limit=2)
    assert [len(page) for page in walked] == [2, 1]
    entries = [entry for page in walked for entry in page]
    assert [e["transfer_id"] for e in entries] == [t.json()["id"] for t in reversed(made)]
    summary = [
        (e["direction"], e["amount"], e["posted_balance_after"], e["account_version"]) for e in entries
    ]
    assert summary == [("credit", 50, 750, 3), ("debit", 300, 700, 2), ("credit", 1000, 1000, 1)]
    bob = (await client.get("/v1/accounts/bob/entries", headers=ledger.read)).json()
    assert [(e["direction"], e["posted_balance_after"]) for e in bob["data"]] == [("credit", 300)]
    assert bob["next_cursor"] is None

"""The event feed (``GET /v1/events``, API.md, ADR 0024) on both databases."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support import LedgerKeys, assert_problem, funded_account, new_ledger, transfer


async def _all_events(client: httpx.AsyncClient, keys: LedgerKeys, **query: Any) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        params = {"limit": 2, **query, **({"after": after} if after else {})}
        page = await client.get("/v1/events", params=params, headers=keys.read)
        assert page.status_code == 200, page.text
        body = page.json()
        if not body["data"]:
            assert body["next_cursor"] == after  # nothing new: the cursor stays where it was
            return seen
        seen += body["data"]
        assert body["next_cursor"] == body["data"][-1]["id"]
        after = body["next_cursor"]


async def test_every_change_is_one_event_in_order_with_its_request_id(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    await funded_account(client, ledger, "wallet", 500)
    paid = await client.post(
        "/v1/transfers",
        json={"debit_account_id": "wallet", "credit_account_id": "world", "amount": 20},
        headers={**ledger.write, "Idempotency-Key": "pay-1", "X-Request-ID": "feed-test-1"},
    )
    assert paid.status_code == 201
    events = await _all_events(client, ledger)
    assert [e["type"] for e in events] == [
        "account.created",
        "account.created",
        "transfer.created",
        "transfer.created",
    ]
    assert set(events[0]) == {"id", "type", "created_at", "data", "request_id"}
    assert events[-1]["request_id"] == "feed-test-1"
    assert events[-1]["data"]["id"] == paid.json()["id"]
    assert len({e["id"] for e in events}) == len(events)


async def test_the_feed_filters_by_type_and_is_per_ledger(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    other = await new_ledger(client, "other")
    await funded_account(client, ledger, "wallet", 500)
    await funded_account(client, other, "wallet", 100)
    mine = await _all_events(client, ledger, type="transfer.created")
    assert [e["type"] for e in mine] == ["transfer.created"]
    assert mine[0]["data"]["amount"] == 500
    both = await _all_events(client, ledger, type=["transfer.created", "account.created"])
    assert len(both) == 3
    theirs = await _all_events(client, other)
    assert {e["data"]["id"] for e in theirs}.isdisjoint(
        {e["data"]["id"] for e in both if "amount" in e["data"]}
    )


async def test_a_cursor_of_another_ledger_or_no_event_is_refused(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    other = await new_ledger(client, "other")
    await funded_account(client, other, "wallet", 100)
    foreign = (await client.get("/v1/events", headers=other.read)).json()["data"][0]["id"]
    for after in (foreign, "evt_nope"):
        refused = await client.get("/v1/events", params={"after": after}, headers=ledger.read)
        problem = assert_problem(refused, 422, "validation_error")
        assert problem["errors"][0]["loc"] == ["query", "after"]
    bad_type = await client.get("/v1/events", params={"type": "transfer.exploded"}, headers=ledger.read)
    assert_problem(bad_type, 422, "validation_error")


async def test_a_poller_resumes_after_its_cursor(client: httpx.AsyncClient, ledger: LedgerKeys) -> None:
    await funded_account(client, ledger, "wallet", 500)
    first = await _all_events(client, ledger)
    for amount in (1, 2, 3):
        assert (await transfer(client, ledger.write, "wallet", "world", amount)).status_code == 201
    later = await client.get(
        "/v1/events", params={"after": first[-1]["id"], "limit": 10}, headers=ledger.read
    )
    assert [e["data"]["amount"] for e in later.json()["data"]] == [1, 2, 3]

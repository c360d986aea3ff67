"""The README's walkthrough, as a test, in process and against a real server."""

from __future__ import annotations

import httpx

from tests.support import ROOT, bearer, idem, open_account


async def test_the_readme_walkthrough_works_end_to_end(any_client: httpx.AsyncClient) -> None:
    client = any_client
    ledger = await client.post("/v1/ledgers", json={"name": "demo"}, headers=ROOT)
    assert ledger.status_code == 201
    ledger_id = ledger.json()["id"]
    created = await client.post(
        f"/v1/ledgers/{ledger_id}/keys", json={"name": "demo admin", "scopes": ["admin"]}, headers=ROOT
    )
    assert created.status_code == 201
    key = bearer(created.json()["key"])

    await open_account(client, key, id="bank", normal_balance="debit", min_balance=None)
    await open_account(client, key, id="alice")
    await open_account(client, key, id="bob")
    funding = {"debit_account_id": "bank", "credit_account_id": "alice", "amount": 10000}
    funded = await client.post("/v1/transfers", json=funding, headers={**key, **idem()})
    assert funded.status_code == 201

    payment = {"debit_account_id": "alice", "credit_account_id": "bob", "amount": 2500}
    pay_headers = {**key, **idem("alice-pays-bob-1")}
    first = await client.post("/v1/transfers", json=payment, headers=pay_headers)
    assert first.status_code == 201
    assert first.headers["tally-consistency-token"]

    balances = {
        who: (await client.get(f"/v1/accounts/{who}/balance", headers=key)).json()
        for who in ("bank", "alice", "bob")
    }
    assert {who: b["posted"] for who, b in balances.items()} == {
        "bank": 10000,
        "alice": 7500,
        "bob": 2500,
    }
    entries = (await client.get("/v1/accounts/alice/entries", headers=key)).json()["data"]
    assert [(e["direction"], e["amount"], e["posted_balance_after"]) for e in entries] == [
        ("debit", 2500, 7500),
        ("credit", 10000, 10000),
    ]

    replay = await client.post("/v1/transfers", json=payment, headers=pay_headers)
    assert replay.status_code == 201
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.content == first.content
    alice = (await client.get("/v1/accounts/alice/balance", headers=key)).json()
    assert alice["posted"] == 7500
    assert alice["version"] == 2

    hold = {"debit_account_id": "alice", "credit_account_id": "bob", "amount": 3000, "pending": True}
    held = await client.post("/v1/transfers", json=hold, headers={**key, **idem("hold-1")})
    assert held.status_code == 201
    hold_id = held.json()["id"]
    assert (await client.get("/v1/accounts/alice/balance", headers=key)).json()["available"] == 4500
    posted = await client.post(
        f"/v1/transfers/{hold_id}/post", json={"amount": 2000}, headers={**key, **idem("post-1")}
    )
    assert posted.json()["status"] == "posted"
    reversed_ = await client.post(
        f"/v1/transfers/{hold_id}/reverse", json={"amount": 500}, headers={**key, **idem("reverse-1")}
    )
    assert reversed_.json()["reverses"] == hold_id
    assert (await client.get("/v1/accounts/alice/balance", headers=key)).json()["available"] == 6000

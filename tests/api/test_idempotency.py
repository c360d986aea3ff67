"""Idempotency keys: a retry replays the first outcome byte for byte and never acts twice."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.support import ROOT, LedgerKeys, assert_problem, idem, new_ledger, open_account, transfer

PAYMENT = {"debit_account_id": "alice", "credit_account_id": "bob", "amount": 300}


def replayed(response: httpx.Response) -> bool:
    header: str | None = response.headers.get("idempotent-replayed")
    return header == "true"


async def pay(
    client: httpx.AsyncClient, headers: dict[str, str], key: str, body: dict[str, Any] = PAYMENT
) -> httpx.Response:
    return await client.post("/v1/transfers", json=body, headers={**headers, **idem(key)})


async def snapshot(client: httpx.AsyncClient, ledger: LedgerKeys) -> dict[str, Any]:
    """Every account (balances, versions), every transfer and alice's and bob's entries."""
    found: dict[str, Any] = {}
    for path in ("/v1/accounts", "/v1/transfers", "/v1/accounts/alice/entries", "/v1/accounts/bob/entries"):
        response = await client.get(path, params={"limit": 1000}, headers=ledger.read)
        assert response.status_code == 200, response.text
        found[path] = response.json()["data"]
    return found


async def setup_ledger(client: httpx.AsyncClient, ledger: LedgerKeys, alice_holds: int = 1000) -> None:
    """world (unbounded, debit-normal) has paid alice ``alice_holds``; bob is empty."""
    await open_account(client, ledger.write, id="world", normal_balance="debit", min_balance=None)
    await open_account(client, ledger.write, id="alice")
    await open_account(client, ledger.write, id="bob")
    if alice_holds:
        assert (await transfer(client, ledger.write, "world", "alice", alice_holds)).status_code == 201


@pytest.fixture
async def funded(client: httpx.AsyncClient, ledger: LedgerKeys) -> None:
    await setup_ledger(client, ledger)


@pytest.mark.usefixtures("funded")
async def test_a_retry_replays_the_first_reply_byte_for_byte_without_a_second_effect(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    first = await pay(client, ledger.write, "pay-1")
    assert first.status_code == 201, first.text
    assert not replayed(first)
    after_first = await snapshot(client, ledger)
    for _ in range(3):
        again = await pay(client, ledger.write, "pay-1")
        assert again.status_code == first.status_code
        assert again.content == first.content
        assert again.headers["content-type"] == first.headers["content-type"]
        assert replayed(again)
        assert again.headers["tally-consistency-token"]
    assert await snapshot(client, ledger) == after_first
    bob = (await client.get("/v1/accounts/bob", headers=ledger.read)).json()
    assert (bob["balance"]["posted"], bob["version"]) == (300, 1)


@pytest.mark.usefixtures("funded")
async def test_a_body_with_the_same_canonical_json_is_the_same_request(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    first = await pay(client, ledger.write, "pay-1")
    reordered = b'{ "amount" : 300,\n "credit_account_id":"bob", "debit_account_id":"alice" }'
    headers = {**ledger.write, **idem("pay-1"), "Content-Type": "application/json"}
    again = await client.post("/v1/transfers", content=reordered, headers=headers)
    assert (again.status_code, again.content) == (201, first.content)
    assert replayed(again)


@pytest.mark.parametrize("rejection", ["insufficient_funds", "account_not_open"])
async def test_a_business_rejection_is_replayed_even_after_the_state_has_changed(
    client: httpx.AsyncClient, ledger: LedgerKeys, rejection: str
) -> None:
    await setup_ledger(client, ledger, alice_holds=0 if rejection == "insufficient_funds" else 1000)
    if rejection == "account_not_open":
        frozen = await client.patch("/v1/accounts/bob", json={"status": "frozen"}, headers=ledger.write)
        assert frozen.status_code == 200
    refused = await pay(client, ledger.write, "pay-1")
    assert_problem(refused, 422, rejection)
    assert not replayed(refused)

    if rejection == "account_not_open":  # the obstacle goes away...
        opened = await client.patch("/v1/accounts/bob", json={"status": "open"}, headers=ledger.write)
        assert opened.status_code == 200
    else:
        assert (await transfer(client, ledger.write, "world", "alice", 1000)).status_code == 201
    before_retry = await snapshot(client, ledger)

    again = await pay(client, ledger.write, "pay-1")  # ...but the retry still gets the first answer
    assert (again.status_code, again.content) == (422, refused.content)
    assert replayed(again)
    assert await snapshot(client, ledger) == before_retry
    assert (await pay(client, ledger.write, "pay-2")).status_code == 201


@pytest.mark.usefixtures("funded")
@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/transfers", {**PAYMENT, "amount": 301}),
        ("/v1/transfers", {**PAYMENT, "description": "same money, other words"}),
        ("/v1/accounts", {"currency": "USD"}),
    ],
)
async def test_the_same_key_for_another_request_is_refused_as_reused(
    client: httpx.AsyncClient, ledger: LedgerKeys, path: str, body: dict[str, Any]
) -> None:
    first = await pay(client, ledger.write, "pay-1")
    assert first.status_code == 201
    before = await snapshot(client, ledger)
    other = await client.post(path, json=body, headers={**ledger.write, **idem("pay-1")})
    assert_problem(other, 422, "idempotency_key_reused")
    assert await snapshot(client, ledger) == before
    again = await pay(client, ledger.write, "pay-1")
    assert (again.content, replayed(again)) == (first.content, True)


async def test_keys_are_scoped_per_ledger(client: httpx.AsyncClient, ledger: LedgerKeys) -> None:
    other = await new_ledger(client, "other")
    for keys in (ledger, other):
        await setup_ledger(client, keys)
    mine = await pay(client, ledger.write, "shared-key")
    theirs = await pay(client, other.write, "shared-key")
    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert not replayed(theirs)
    assert mine.json()["id"] != theirs.json()["id"]
    for keys in (ledger, other):
        bob = (await client.get("/v1/accounts/bob", headers=keys.read)).json()
        assert bob["balance"]["posted"] == 300


@pytest.mark.usefixtures("funded")
@pytest.mark.parametrize(
    ("refusal", "expected"),
    [
        ("no key", (401, "unauthenticated")),
        ("read key", (403, "forbidden")),
        ("root key", (403, "forbidden")),
        ("invalid body", (422, "validation_error")),
        ("same account", (422, "same_account")),
        ("not json", (400, "invalid_json")),
    ],
)
async def test_a_request_refused_before_processing_stores_nothing_under_its_key(
    client: httpx.AsyncClient, ledger: LedgerKeys, refusal: str, expected: tuple[int, str]
) -> None:
    headers = {"no key": {}, "read key": ledger.read, "root key": ROOT}.get(refusal, ledger.write)
    sent = {**headers, **idem("pay-1"), "Content-Type": "application/json"}
    content = {
        "invalid body": b'{"debit_account_id":"alice","credit_account_id":"bob","amount":"300"}',
        "same account": b'{"debit_account_id":"alice","credit_account_id":"alice","amount":300}',
        "not json": b'{"debit_account_id":',
    }.get(refusal, b'{"debit_account_id":"alice","credit_account_id":"bob","amount":300}')
    refused = await client.post("/v1/transfers", content=content, headers=sent)
    assert_problem(refused, *expected)
    before = await snapshot(client, ledger)

    accepted = await pay(client, ledger.write, "pay-1")
    assert accepted.status_code == 201, accepted.text
    assert not replayed(accepted)
    assert await snapshot(client, ledger) != before


async def test_an_idempotency_key_is_optional_on_account_creation_but_honoured_when_sent(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    body = {"currency": "USD", "name": "savings"}
    bare = [await client.post("/v1/accounts", json=body, headers=ledger.write) for _ in range(2)]
    assert [r.status_code for r in bare] == [201, 201]
    assert bare[0].json()["id"] != bare[1].json()["id"]

    keyed = [
        await client.post("/v1/accounts", json=body, headers={**ledger.write, **idem("open-1")})
        for _ in range(2)
    ]
    assert [r.status_code for r in keyed] == [201, 201]
    assert keyed[1].content == keyed[0].content
    assert [replayed(r) for r in keyed] == [False, True]
    assert keyed[1].headers["tally-consistency-token"]
    listed = (await client.get("/v1/accounts", headers=ledger.read)).json()["data"]
    assert len(listed) == 3


@pytest.mark.usefixtures("funded")
async def test_concurrent_requests_with_one_key_take_effect_once(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    responses = await asyncio.gather(*(pay(client, ledger.write, "burst") for _ in range(10)))
    originals = [r for r in responses if r.status_code == 201 and not replayed(r)]
    assert len(originals) == 1
    for response in responses:
        if response.status_code == 409:
            assert_problem(response, 409, "idempotency_key_in_use")
            assert response.headers["retry-after"]
        else:
            assert response.content == originals[0].content
    bob = (await client.get("/v1/accounts/bob", headers=ledger.read)).json()
    assert (bob["balance"]["posted"], bob["version"]) == (300, 1)

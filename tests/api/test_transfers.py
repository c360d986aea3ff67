"""Transfers: simple and multi-leg postings, their reads and lists, and every rejection."""

from __future__ import annotations

import random
from typing import Any

import httpx
import pytest

from tests.support import (
    RFC3339_UTC_MICROS,
    LedgerKeys,
    assert_problem,
    idem,
    new_ledger,
    open_account,
    transfer,
)

INT64_MAX = 2**63 - 1


def legs(*parts: tuple[str, str, int]) -> dict[str, Any]:
    return {"legs": [{"account_id": a, "direction": d, "amount": n} for a, d, n in parts]}


async def post(client: httpx.AsyncClient, ledger: LedgerKeys, body: dict[str, Any]) -> httpx.Response:
    return await client.post("/v1/transfers", json=body, headers={**ledger.write, **idem()})


async def posted(client: httpx.AsyncClient, ledger: LedgerKeys, *account_ids: str) -> list[int]:
    found = []
    for account_id in account_ids:
        response = await client.get(f"/v1/accounts/{account_id}", headers=ledger.read)
        found.append(response.json()["balance"]["posted"])
    return found


async def snapshot(client: httpx.AsyncClient, ledger: LedgerKeys) -> dict[str, Any]:
    """Every account, every transfer and every account's entries."""
    query = {"limit": 1000}
    accounts = (await client.get("/v1/accounts", params=query, headers=ledger.read)).json()["data"]
    entries = {
        a["id"]: (await client.get(f"/v1/accounts/{a['id']}/entries", headers=ledger.read)).json()
        for a in accounts
    }
    transfers = (await client.get("/v1/transfers", params=query, headers=ledger.read)).json()
    return {"accounts": accounts, "entries": entries, "transfers": transfers}


async def list_ids(client: httpx.AsyncClient, ledger: LedgerKeys, **query: Any) -> list[str]:
    response = await client.get("/v1/transfers", params=query, headers=ledger.read)
    assert response.status_code == 200, response.text
    return [t["id"] for t in response.json()["data"]]


@pytest.fixture
async def accounts(client: httpx.AsyncClient, ledger: LedgerKeys) -> None:
    """world (unbounded, debit-normal) has paid alice 1000; bob and carol are empty; all USD."""
    await open_account(client, ledger.write, id="world", normal_balance="debit", min_balance=None)
    for account_id in ("alice", "bob", "carol"):
        await open_account(client, ledger.write, id=account_id)
    assert (await transfer(client, ledger.write, "world", "alice", 1000)).status_code == 201


@pytest.mark.usefixtures("accounts")
async def test_a_simple_transfer_moves_the_amount_and_reads_in_both_forms(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    body = {"debit_account_id": "alice", "credit_account_id": "bob", "amount": 300}
    response = await post(client, ledger, {**body, "description": "rent", "metadata": {"month": 5}})
    assert response.status_code == 201, response.text
    made = response.json()
    assert made["id"].startswith("tr_")
    assert {k: made[k] for k in body} == body
    assert (made["currency"], made["status"], made["description"]) == ("USD", "posted", "rent")
    assert (made["metadata"], made["reverses"], made["reversed_amount"]) == ({"month": 5}, None, 0)
    assert RFC3339_UTC_MICROS.fullmatch(made["created_at"])
    assert made["posted_at"] == made["created_at"]
    assert made["legs"] == [
        {"account_id": "alice", "direction": "debit", "amount": 300, "currency": "USD"},
        {"account_id": "bob", "direction": "credit", "amount": 300, "currency": "USD"},
    ]
    fetched = await client.get(f"/v1/transfers/{made['id']}", headers=ledger.read)
    assert fetched.json() == made
    assert await posted(client, ledger, "world", "alice", "bob") == [1000, 700, 300]


@pytest.mark.usefixtures("accounts")
async def test_a_multi_leg_transfer_posts_every_leg_and_moves_each_version_by_one(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    body = legs(("alice", "debit", 600), ("bob", "credit", 250), ("carol", "credit", 350))
    response = await post(client, ledger, body)
    assert response.status_code == 201, response.text
    made = response.json()
    assert [(leg["account_id"], leg["amount"], leg["currency"]) for leg in made["legs"]] == [
        ("alice", 600, "USD"),
        ("bob", 250, "USD"),
        ("carol", 350, "USD"),
    ]
    assert await posted(client, ledger, "world", "alice", "bob", "carol") == [1000, 400, 250, 350]
    versions = {}
    for account_id in ("world", "alice", "bob", "carol"):
        versions[account_id] = (await client.get(f"/v1/accounts/{account_id}", headers=ledger.read)).json()[
            "version"
        ]
    assert versions == {"world": 1, "alice": 2, "bob": 1, "carol": 1}
    back = legs(("bob", "debit", 50), ("carol", "debit", 50), ("alice", "credit", 100))
    assert (await post(client, ledger, back)).status_code == 201
    bob = (await client.get("/v1/accounts/bob", headers=ledger.read)).json()
    assert (bob["version"], bob["balance"]["posted"]) == (2, 200)


@pytest.mark.usefixtures("accounts")
async def test_transfers_are_listed_newest_first_filtered_and_paged_without_gaps(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    made = [(await client.get("/v1/transfers", headers=ledger.read)).json()["data"][0]["id"]]
    for debit, credit in [("alice", "bob"), ("alice", "carol"), ("bob", "carol"), ("alice", "bob")]:
        made.append((await transfer(client, ledger.write, debit, credit, 10)).json()["id"])
    newest_first = list(reversed(made))
    assert await list_ids(client, ledger) == newest_first
    assert await list_ids(client, ledger, account_id="carol") == [made[3], made[2]]
    assert await list_ids(client, ledger, account_id="world") == [made[0]]
    assert await list_ids(client, ledger, status="posted") == newest_first
    assert await list_ids(client, ledger, status="pending") == []

    seen: list[str] = []
    sizes: list[int] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/transfers", params=params, headers=ledger.read)).json()
        sizes.append(len(page["data"]))
        seen += [t["id"] for t in page["data"]]
        if len(seen) == 2:  # a transfer made mid-walk is newer than the cursor: it is not listed
            await transfer(client, ledger.write, "alice", "bob", 1)
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert (seen, sizes) == (newest_first, [2, 2, 1])


async def test_an_unknown_transfer_is_not_found(client: httpx.AsyncClient, ledger: LedgerKeys) -> None:
    assert_problem(await client.get("/v1/transfers/tr_nothing", headers=ledger.read), 404, "not_found")


@pytest.mark.usefixtures("accounts")
async def test_a_currency_that_is_not_the_accounts_currency_is_a_mismatch(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    before = await snapshot(client, ledger)
    response = await transfer(client, ledger.write, "alice", "bob", 5, currency="EUR")
    assert_problem(response, 422, "currency_mismatch")
    assert await snapshot(client, ledger) == before
    assert (await transfer(client, ledger.write, "alice", "bob", 5, currency="USD")).status_code == 201


@pytest.mark.usefixtures("accounts")
async def test_a_simple_transfer_between_accounts_of_two_currencies_is_a_mismatch(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    await open_account(client, ledger.write, id="euro", currency="EUR", min_balance=None)
    before = await snapshot(client, ledger)
    assert_problem(await transfer(client, ledger.write, "alice", "euro", 5), 422, "currency_mismatch")
    assert_problem(await transfer(client, ledger.write, "euro", "bob", 5), 422, "currency_mismatch")
    assert await snapshot(client, ledger) == before


@pytest.mark.usefixtures("accounts")
async def test_a_multi_leg_transfer_must_balance_in_every_currency(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    await open_account(client, ledger.write, id="eur_bank", currency="EUR", min_balance=None)
    await open_account(client, ledger.write, id="eur_alice", currency="EUR")
    before = await snapshot(client, ledger)
    crossed = legs(("alice", "debit", 90), ("eur_alice", "credit", 90))
    assert_problem(await post(client, ledger, crossed), 422, "unbalanced_transfer")
    skewed = legs(
        ("alice", "debit", 100), ("bob", "credit", 90), ("eur_bank", "debit", 80), ("eur_alice", "credit", 90)
    )
    assert_problem(await post(client, ledger, skewed), 422, "unbalanced_transfer")
    assert await snapshot(client, ledger) == before
    exchange = legs(
        ("alice", "debit", 100),
        ("bob", "credit", 100),
        ("eur_bank", "debit", 90),
        ("eur_alice", "credit", 90),
    )
    response = await post(client, ledger, exchange)
    assert response.status_code == 201, response.text
    assert [leg["currency"] for leg in response.json()["legs"]] == ["USD", "USD", "EUR", "EUR"]
    assert await posted(client, ledger, "alice", "bob", "eur_bank", "eur_alice") == [900, 100, -90, 90]


@pytest.mark.usefixtures("accounts")
@pytest.mark.parametrize(
    "body",
    [
        {"debit_account_id": "ghost", "credit_account_id": "bob", "amount": 5},
        {"debit_account_id": "alice", "credit_account_id": "ghost", "amount": 5},
        legs(("alice", "debit", 10), ("bob", "credit", 5), ("ghost", "credit", 5)),
    ],
)
async def test_a_transfer_naming_an_unknown_account_is_refused(
    client: httpx.AsyncClient, ledger: LedgerKeys, body: dict[str, Any]
) -> None:
    before = await snapshot(client, ledger)
    assert_problem(await post(client, ledger, body), 422, "account_not_found")
    assert await snapshot(client, ledger) == before


@pytest.mark.usefixtures("accounts")
@pytest.mark.parametrize(
    "body",
    [
        {"debit_account_id": "alice", "credit_account_id": "bob", "amount": 1001},
        {"debit_account_id": "bob", "credit_account_id": "alice", "amount": 1},
        legs(("alice", "debit", 50), ("bob", "debit", 200), ("carol", "credit", 250)),
    ],
)
async def test_a_transfer_that_would_break_a_bound_is_refused_and_writes_nothing(
    client: httpx.AsyncClient, ledger: LedgerKeys, body: dict[str, Any]
) -> None:
    before = await snapshot(client, ledger)
    assert_problem(await post(client, ledger, body), 422, "insufficient_funds")
    assert await snapshot(client, ledger) == before


async def test_a_posting_that_would_overflow_a_balance_is_refused(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    await open_account(client, ledger.write, id="mint", min_balance=None)
    await open_account(client, ledger.write, id="vault")
    assert (await transfer(client, ledger.write, "mint", "vault", INT64_MAX)).status_code == 201
    before = await snapshot(client, ledger)
    assert_problem(await transfer(client, ledger.write, "mint", "vault", 1), 422, "amount_overflow")
    assert await snapshot(client, ledger) == before
    assert await posted(client, ledger, "mint", "vault") == [-INT64_MAX, INT64_MAX]
    await open_account(client, ledger.write, id="spare")
    assert (await transfer(client, ledger.write, "mint", "spare", 1)).status_code == 201  # -2**63 fits
    assert_problem(await transfer(client, ledger.write, "mint", "spare", 1), 422, "amount_overflow")
    assert await posted(client, ledger, "mint", "spare") == [-(2**63), 1]


@pytest.mark.usefixtures("accounts")
async def test_a_client_transfer_id_returns_the_same_transfer_for_the_same_body_only(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    body = {"id": "rent-may", "debit_account_id": "alice", "credit_account_id": "bob", "amount": 300}
    first = await post(client, ledger, body)
    again = await post(client, ledger, body)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert await posted(client, ledger, "alice", "bob") == [700, 300]
    assert_problem(await post(client, ledger, {**body, "amount": 301}), 409, "id_conflict")
    assert_problem(await post(client, ledger, {**body, "credit_account_id": "carol"}), 409, "id_conflict")
    assert await posted(client, ledger, "alice", "bob", "carol") == [700, 300, 0]
    assert (await list_ids(client, ledger, account_id="bob")) == ["rent-may"]


@pytest.mark.usefixtures("accounts")
@pytest.mark.parametrize(
    ("change", "hidden"),
    [({"amount": 10**6}, "insufficient_funds"), ({"currency": "EUR"}, "currency_mismatch")],
)
async def test_an_id_conflict_answers_before_the_business_rules_of_the_new_body(
    client: httpx.AsyncClient, ledger: LedgerKeys, change: dict[str, Any], hidden: str
) -> None:
    # API.md error precedence: state (409) answers before balance and business rules (422).
    body = {"id": "rent-may", "debit_account_id": "alice", "credit_account_id": "bob", "amount": 300}
    assert (await post(client, ledger, body)).status_code == 201
    before = await snapshot(client, ledger)
    response = await post(client, ledger, {**body, **change})
    assert_problem(response, 409, "id_conflict")
    assert await snapshot(client, ledger) == before


async def test_a_transfer_of_another_ledger_is_not_found(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    other = await new_ledger(client, "other")
    await open_account(client, other.write, id="src", min_balance=None)
    await open_account(client, other.write, id="dst")
    theirs = (await transfer(client, other.write, "src", "dst", 5)).json()
    assert_problem(await client.get(f"/v1/transfers/{theirs['id']}", headers=ledger.read), 404, "not_found")
    assert await list_ids(client, ledger) == []


async def test_value_is_conserved_across_a_mixed_sequence_of_transfers(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    rng = random.Random(20260501)
    specs: dict[str, dict[str, Any]] = {
        "usd_world": {"normal_balance": "debit", "min_balance": None},
        "usd_cash": {"normal_balance": "debit", "max_balance": 5000},
        "usd_a": {},
        "usd_b": {"min_balance": -300},
        "usd_c": {"max_balance": 2500},
        "eur_world": {"currency": "EUR", "normal_balance": "debit", "min_balance": None},
        "eur_a": {"currency": "EUR"},
        "eur_b": {"currency": "EUR", "min_balance": None},
    }
    for account_id, spec in specs.items():
        await open_account(client, ledger.write, id=account_id, **spec)
    outcomes: dict[int, int] = {}
    for _ in range(60):
        prefix = rng.choice(["usd", "eur"])
        pool = [a for a in specs if a.startswith(prefix)]
        amount = rng.randint(1, 1500)
        if rng.random() < 0.3 and len(pool) >= 3:
            debit, credit_one, credit_two = rng.sample(pool, 3)
            split = rng.randint(1, amount) if amount > 1 else 1
            body = legs(
                (debit, "debit", amount + 1),
                (credit_one, "credit", split),
                (credit_two, "credit", amount + 1 - split),
            )
        else:
            debit, credit = rng.sample(pool, 2)
            body = {"debit_account_id": debit, "credit_account_id": credit, "amount": amount}
        status = (await post(client, ledger, body)).status_code
        assert status in (201, 422)
        outcomes[status] = outcomes.get(status, 0) + 1
    assert outcomes.get(201, 0) > 10  # the sequence did move value...
    assert outcomes.get(422, 0) > 0  # ...and some of it was refused by the bounds

    listed = (await client.get("/v1/accounts", headers=ledger.read)).json()["data"]
    totals: dict[str, int] = {}
    for account in listed:
        sign = 1 if account["normal_balance"] == "credit" else -1
        totals[account["currency"]] = totals.get(account["currency"], 0) + sign * account["balance"]["posted"]
        entries = (await client.get(f"/v1/accounts/{account['id']}/entries", headers=ledger.read)).json()
        latest = entries["data"][0] if entries["data"] else {"posted_balance_after": 0, "account_version": 0}
        assert latest["posted_balance_after"] == account["balance"]["posted"]
        assert latest["account_version"] == account["version"]
    assert totals == {"USD": 0, "EUR": 0}

"""Who may call what: keys, scopes, the root key, and the wall between ledgers."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tally.domain.keys import new_secret
from tests.support import (
    ROOT,
    LedgerKeys,
    assert_problem,
    bearer,
    idem,
    new_ledger,
    open_account,
    transfer,
)

KEY_FIELDS = {"id", "name", "scopes", "created_at", "revoked_at", "last_used_at", "expires_at"}


def secret_of(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


def with_wrong_checksum(secret: str) -> str:
    last = secret[-1]
    return secret[:-1] + ("A" if last != "A" else "B")


async def funded_ledger(client: httpx.AsyncClient, name: str) -> LedgerKeys:
    """A ledger with world → alice 700 → bob 200 posted, as transfer ``t1`` and ``t2``."""
    keys = await new_ledger(client, name)
    await open_account(client, keys.write, id="world", normal_balance="debit", min_balance=None)
    await open_account(client, keys.write, id="alice")
    await open_account(client, keys.write, id="bob")
    assert (await transfer(client, keys.write, "world", "alice", 700, id="t1")).status_code == 201
    assert (await transfer(client, keys.write, "alice", "bob", 200, id="t2")).status_code == 201
    return keys


async def state(client: httpx.AsyncClient, keys: LedgerKeys) -> dict[str, Any]:
    """What a ledger holds, read with its own key."""
    found: dict[str, Any] = {}
    for path in ("/v1/accounts", "/v1/transfers", "/v1/accounts/alice/entries"):
        response = await client.get(path, headers=keys.read)
        assert response.status_code == 200, response.text
        found[path] = response.json()
    return found


async def create_key(
    client: httpx.AsyncClient, ledger_id: str, headers: dict[str, str], scopes: list[str]
) -> httpx.Response:
    body = {"name": "-".join(scopes), "scopes": scopes}
    return await client.post(f"/v1/ledgers/{ledger_id}/keys", json=body, headers=headers)


async def list_keys(
    client: httpx.AsyncClient, ledger_id: str, headers: dict[str, str]
) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/ledgers/{ledger_id}/keys", headers=headers)
    assert response.status_code == 200, response.text
    keys: list[dict[str, Any]] = response.json()["data"]
    return keys


@pytest.mark.parametrize(
    "kind",
    [
        "missing",
        "basic scheme",
        "bearer without key",
        "not a tally key",
        "truncated key",
        "wrong checksum",
        "unknown ledger key",
        "unknown root key",
    ],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/accounts"), ("POST", "/v1/transfers"), ("POST", "/v1/ledgers")],
)
async def test_a_request_without_a_valid_key_is_unauthenticated(
    client: httpx.AsyncClient, ledger: LedgerKeys, kind: str, method: str, path: str
) -> None:
    real = secret_of(ledger.admin)
    authorization = {
        "missing": None,
        "basic scheme": f"Basic {real}",
        "bearer without key": "Bearer ",
        "not a tally key": "Bearer hunter2",
        "truncated key": f"Bearer {real[:-1]}",
        "wrong checksum": f"Bearer {with_wrong_checksum(real)}",
        "unknown ledger key": f"Bearer {new_secret('key')}",
        "unknown root key": f"Bearer {new_secret('root')}",
    }[kind]
    headers = idem() if authorization is None else {"Authorization": authorization, **idem()}
    response = await client.request(method, path, json={"name": "x"}, headers=headers)
    assert_problem(response, 401, "unauthenticated")


async def test_a_revoked_key_is_refused_from_then_on(client: httpx.AsyncClient, ledger: LedgerKeys) -> None:
    created = await create_key(client, ledger.ledger_id, ROOT, ["write"])
    key = created.json()
    headers = bearer(key["key"])
    assert (await client.get("/v1/accounts", headers=headers)).status_code == 200
    revoked = await client.delete(f"/v1/ledgers/{ledger.ledger_id}/keys/{key['id']}", headers=ROOT)
    assert revoked.status_code == 204
    for _ in range(2):
        assert_problem(await client.get("/v1/accounts", headers=headers), 401, "unauthenticated")
        response = await client.post("/v1/accounts", json={"currency": "USD"}, headers=headers)
        assert_problem(response, 401, "unauthenticated")
    assert (await client.get("/v1/accounts", headers=ledger.read)).json()["data"] == []


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/accounts"),
        ("POST", "/v1/accounts"),
        ("GET", "/v1/accounts/alice"),
        ("PATCH", "/v1/accounts/alice"),
        ("GET", "/v1/accounts/alice/balance"),
        ("GET", "/v1/accounts/alice/entries"),
        ("GET", "/v1/transfers"),
        ("POST", "/v1/transfers"),
        ("GET", "/v1/transfers/t1"),
    ],
)
async def test_the_root_key_is_forbidden_inside_a_ledger(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    keys = await funded_ledger(client, "a")
    before = await state(client, keys)
    bodies: dict[str, dict[str, Any]] = {
        "/v1/accounts": {"currency": "USD"},
        "/v1/transfers": {"debit_account_id": "alice", "credit_account_id": "bob", "amount": 1},
    }
    body = bodies.get(path, {"name": "root was here"})
    response = await client.request(method, path, json=body, headers={**ROOT, **idem()})
    assert_problem(response, 403, "forbidden")
    assert await state(client, keys) == before


@pytest.mark.parametrize("scope", ["admin", "write", "read"])
async def test_a_ledger_key_may_not_create_ledgers(
    client: httpx.AsyncClient, ledger: LedgerKeys, scope: str
) -> None:
    headers = {"admin": ledger.admin, "write": ledger.write, "read": ledger.read}[scope]
    response = await client.post("/v1/ledgers", json={"name": "mine"}, headers=headers)
    assert_problem(response, 403, "forbidden")


async def test_a_read_key_cannot_write(client: httpx.AsyncClient) -> None:
    keys = await funded_ledger(client, "a")
    before = await state(client, keys)
    attempts = [
        ("POST", "/v1/accounts", {"currency": "USD"}),
        ("PATCH", "/v1/accounts/alice", {"name": "renamed"}),
        ("POST", "/v1/transfers", {"debit_account_id": "alice", "credit_account_id": "bob", "amount": 1}),
    ]
    for method, path, body in attempts:
        response = await client.request(method, path, json=body, headers={**keys.read, **idem()})
        assert_problem(response, 403, "forbidden")
    assert await state(client, keys) == before


@pytest.mark.parametrize("scope", ["write", "read"])
async def test_only_an_admin_key_manages_the_keys_of_its_ledger(
    client: httpx.AsyncClient, ledger: LedgerKeys, scope: str
) -> None:
    headers = ledger.write if scope == "write" else ledger.read
    keys_path = f"/v1/ledgers/{ledger.ledger_id}/keys"
    target = (await list_keys(client, ledger.ledger_id, ROOT))[0]
    assert_problem(await create_key(client, ledger.ledger_id, headers, ["admin"]), 403, "forbidden")
    assert_problem(await client.get(keys_path, headers=headers), 403, "forbidden")
    revoked = await client.delete(f"{keys_path}/{target['id']}", headers=headers)
    assert_problem(revoked, 403, "forbidden")
    assert [k["revoked_at"] for k in await list_keys(client, ledger.ledger_id, ROOT)] == [None] * 3


async def test_an_admin_key_creates_lists_and_revokes_keys_of_its_own_ledger(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    created = await create_key(client, ledger.ledger_id, ledger.admin, ["read"])
    assert created.status_code == 201, created.text
    new_key = created.json()
    assert new_key["scopes"] == ["read"]
    assert new_key["key"].startswith("tally_")
    reader = bearer(new_key["key"])
    assert (await client.get("/v1/accounts", headers=reader)).status_code == 200
    refused = await client.post("/v1/accounts", json={"currency": "USD"}, headers=reader)
    assert_problem(refused, 403, "forbidden")

    listing = await client.get(f"/v1/ledgers/{ledger.ledger_id}/keys", headers=ledger.admin)
    assert listing.status_code == 200
    secrets = [secret_of(h) for h in (ledger.admin, ledger.write, ledger.read)]
    for secret in [*secrets, new_key["key"]]:
        assert secret not in listing.text
    listed = listing.json()["data"]
    assert all(set(k) == KEY_FIELDS for k in listed)
    assert new_key["id"] in [k["id"] for k in listed]

    path = f"/v1/ledgers/{ledger.ledger_id}/keys/{new_key['id']}"
    assert (await client.delete(path, headers=ledger.admin)).status_code == 204
    assert_problem(await client.get("/v1/accounts", headers=reader), 401, "unauthenticated")
    after = {k["id"]: k for k in await list_keys(client, ledger.ledger_id, ledger.admin)}
    assert after[new_key["id"]]["revoked_at"] is not None
    assert [k["revoked_at"] for i, k in after.items() if i != new_key["id"]] == [None] * 3


async def test_an_admin_key_gets_404_for_the_keys_of_another_ledger(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    other = await new_ledger(client, "other")
    path = f"/v1/ledgers/{other.ledger_id}/keys"
    their_keys = await list_keys(client, other.ledger_id, ROOT)
    assert_problem(await create_key(client, other.ledger_id, ledger.admin, ["admin"]), 404, "not_found")
    assert_problem(await client.get(path, headers=ledger.admin), 404, "not_found")
    for key in their_keys:
        revoked = await client.delete(f"{path}/{key['id']}", headers=ledger.admin)
        assert_problem(revoked, 404, "not_found")
    assert await list_keys(client, other.ledger_id, ROOT) == their_keys
    assert (await client.get("/v1/accounts", headers=other.read)).status_code == 200


async def test_an_admin_key_cannot_revoke_another_ledgers_key_through_its_own_ledger(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    other = await new_ledger(client, "other")
    victim = (await list_keys(client, other.ledger_id, ROOT))[0]
    path = f"/v1/ledgers/{ledger.ledger_id}/keys/{victim['id']}"
    assert_problem(await client.delete(path, headers=ledger.admin), 404, "not_found")
    assert (await client.get("/v1/accounts", headers=other.admin)).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/accounts/{id}", None),
        ("PATCH", "/v1/accounts/{id}", {"name": "stolen"}),
        ("PATCH", "/v1/accounts/{id}", {"status": "frozen"}),
        ("GET", "/v1/accounts/{id}/balance", None),
        ("GET", "/v1/accounts/{id}/entries", None),
        ("GET", "/v1/transfers/{id}", None),
    ],
)
async def test_a_resource_of_another_ledger_is_404_as_if_it_did_not_exist(
    client: httpx.AsyncClient, method: str, path: str, body: dict[str, Any] | None
) -> None:
    mine = await new_ledger(client, "mine")
    theirs = await funded_ledger(client, "theirs")
    before = await state(client, theirs)
    their_id = "t1" if path.startswith("/v1/transfers") else "alice"
    for resource in (their_id, "no-such-thing"):
        sent = path.format(id=resource)
        response = await client.request(method, sent, json=body, headers=mine.admin)
        assert_problem(response, 404, "not_found")
    assert await state(client, theirs) == before


async def test_a_transfer_naming_another_ledgers_account_is_refused_as_unknown(
    client: httpx.AsyncClient,
) -> None:
    mine = await funded_ledger(client, "mine")
    theirs = await funded_ledger(client, "theirs")
    await open_account(client, theirs.write, id="carol")
    before = await state(client, theirs)
    own_before = await state(client, mine)
    response = await transfer(client, mine.write, "alice", "carol", 10)
    assert_problem(response, 422, "account_not_found")
    assert await state(client, theirs) == before
    assert await state(client, mine) == own_before


async def test_listing_by_an_account_of_another_ledger_shows_none_of_its_transfers(
    client: httpx.AsyncClient,
) -> None:
    mine = await new_ledger(client, "mine")
    await funded_ledger(client, "theirs")
    await open_account(client, mine.write, id="lonely")
    for account_id in ("alice", "bob", "world"):
        listed = await client.get("/v1/transfers", params={"account_id": account_id}, headers=mine.read)
        assert listed.status_code == 200
        assert listed.json()["data"] == []
    assert (await client.get("/v1/transfers", headers=mine.read)).json()["data"] == []


async def test_client_ids_are_scoped_to_their_ledger(client: httpx.AsyncClient) -> None:
    first = await funded_ledger(client, "first")
    second = await new_ledger(client, "second")
    await open_account(client, second.write, id="world", normal_balance="debit", min_balance=None)
    await open_account(client, second.write, id="alice", name="second alice")
    await open_account(client, second.write, id="bob")
    made = await transfer(client, second.write, "world", "alice", 33, id="t1")
    assert made.status_code == 201, made.text
    mine = (await client.get("/v1/transfers/t1", headers=first.read)).json()
    theirs = (await client.get("/v1/transfers/t1", headers=second.read)).json()
    assert (mine["amount"], theirs["amount"]) == (700, 33)
    first_alice = (await client.get("/v1/accounts/alice", headers=first.read)).json()
    second_alice = (await client.get("/v1/accounts/alice", headers=second.read)).json()
    assert (first_alice["balance"]["posted"], second_alice["balance"]["posted"]) == (500, 33)
    assert second_alice["name"] == "second alice"


REFUSALS_BY_WHO = {"nobody": (401, "unauthenticated"), "root": (403, "forbidden"), "read": (403, "forbidden")}
BAD_BODIES = {
    "invalid": (
        b'{"debit_account_id":"alice","credit_account_id":"bob","amount":1.5}',
        (422, "validation_error"),
    ),
    "not json": (b'{"debit_account_id":', (400, "invalid_json")),
    "oversized": (b'{"metadata":{"x":"' + b"x" * 2**20 + b'"}}', (413, "payload_too_large")),
}


@pytest.mark.parametrize("body", list(BAD_BODIES))
@pytest.mark.parametrize(
    ("who", "with_key"),
    [("nobody", True), ("root", True), ("read", True), ("read", False), ("write", False), ("write", True)],
)
async def test_errors_answer_in_precedence_auth_then_scope_then_body_then_idempotency(
    client: httpx.AsyncClient, ledger: LedgerKeys, who: str, with_key: bool, body: str
) -> None:
    credentials = {"nobody": {}, "root": ROOT, "read": ledger.read, "write": ledger.write}[who]
    headers = {**credentials, **(idem() if with_key else {}), "Content-Type": "application/json"}
    content, body_refusal = BAD_BODIES[body]
    response = await client.post("/v1/transfers", content=content, headers=headers)
    assert_problem(response, *REFUSALS_BY_WHO.get(who, body_refusal))


@pytest.mark.parametrize(
    ("who", "expected"),
    [("nobody", (401, "unauthenticated")), ("root", (403, "forbidden")), ("read", (422, "validation_error"))],
)
async def test_query_validation_answers_after_authentication_and_scope(
    client: httpx.AsyncClient, ledger: LedgerKeys, who: str, expected: tuple[int, str]
) -> None:
    credentials = {"nobody": {}, "root": ROOT, "read": ledger.read}[who]
    response = await client.get("/v1/transfers", params={"limit": 0}, headers=credentials)
    assert_problem(response, *expected)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"debit_account_id": "ghost", "credit_account_id": "ghost", "amount": 1}, "same_account"),
        (
            {
                "legs": [
                    {"account_id": "ghost", "direction": "debit", "amount": 2},
                    {"account_id": "phantom", "direction": "credit", "amount": 1},
                ]
            },
            "unbalanced_transfer",
        ),
    ],
)
async def test_rules_decided_by_the_body_alone_answer_before_idempotency_and_lookups(
    client: httpx.AsyncClient, ledger: LedgerKeys, body: dict[str, Any], code: str
) -> None:
    response = await client.post("/v1/transfers", json=body, headers=ledger.write)
    assert_problem(response, 422, code)


async def test_idempotency_key_checks_answer_before_an_unknown_account(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    body = {"debit_account_id": "ghost", "credit_account_id": "phantom", "amount": 1}
    response = await client.post("/v1/transfers", json=body, headers=ledger.write)
    assert_problem(response, 400, "idempotency_key_required")
    await client.post("/v1/accounts", json={"currency": "USD"}, headers={**ledger.write, **idem("k1")})
    reused = await client.post("/v1/transfers", json=body, headers={**ledger.write, **idem("k1")})
    assert_problem(reused, 422, "idempotency_key_reused")


async def test_an_unknown_account_answers_before_a_frozen_one_and_state_before_funds(
    client: httpx.AsyncClient,
) -> None:
    keys = await funded_ledger(client, "a")
    frozen = await client.patch("/v1/accounts/bob", json={"status": "frozen"}, headers=keys.write)
    assert frozen.status_code == 200
    lookup = await transfer(client, keys.write, "bob", "ghost", 10)
    assert_problem(lookup, 422, "account_not_found")
    broke_and_frozen = await transfer(client, keys.write, "bob", "alice", 10**6)
    assert_problem(broke_and_frozen, 422, "account_not_open")

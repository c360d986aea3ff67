"""Operations: health, readiness, problem pages, unknown routes and request ids."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.support import ROOT, LedgerKeys, assert_problem, idem, open_account

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


async def test_healthz_answers_200_without_a_key(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")


async def test_readyz_lists_the_database_as_ok(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    checks = response.json()["checks"]
    assert checks.pop("database") == "ok"
    # On PostgreSQL each replica is listed too: ok, or degraded until first seen caught up.
    assert all(name.startswith("replica-") and state in ("ok", "degraded") for name, state in checks.items())


@pytest.mark.parametrize("code", ["insufficient_funds", "validation_error", "unauthenticated"])
async def test_a_problem_page_explains_its_code_in_html(client: httpx.AsyncClient, code: str) -> None:
    response = await client.get(f"/problems/{code}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert code in response.text
    assert "<html" in response.text.lower()


async def test_every_problem_type_an_error_points_to_is_served(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    answers = [
        await client.get("/v1/accounts"),
        await client.get("/v1/accounts/nobody", headers=ledger.read),
        await client.post("/v1/accounts", json={"currency": "usd"}, headers=ledger.write),
        await client.post("/v1/accounts", content=b"{", headers=ledger.write),
        await client.post("/v1/accounts", json={"currency": "USD"}, headers=ledger.read),
    ]
    for answer in answers:
        page = await client.get(assert_problem(answer, answer.status_code)["type"])
        assert page.status_code == 200, answer.text
        assert answer.json()["code"] in page.text


async def test_an_unknown_problem_code_is_a_404_problem(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/problems/no_such_problem"), 404, "not_found")


@pytest.mark.parametrize("path", ["/nowhere", "/v1/nowhere", "/v1/accounts/a/b/c", "/v2/accounts"])
async def test_an_unknown_route_is_a_404_problem(
    client: httpx.AsyncClient, ledger: LedgerKeys, path: str
) -> None:
    assert_problem(await client.get(path, headers=ledger.read), 404, "not_found")
    assert_problem(await client.get(path), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path"),
    [("DELETE", "/v1/accounts"), ("PUT", "/v1/transfers"), ("POST", "/healthz"), ("DELETE", "/v1/ledgers")],
)
async def test_a_known_route_with_the_wrong_method_is_a_405_problem(
    client: httpx.AsyncClient, ledger: LedgerKeys, method: str, path: str
) -> None:
    response = await client.request(method, path, headers=ledger.admin)
    assert_problem(response, 405)


@pytest.mark.parametrize("request_id", ["abc", "req-2026.05:01_x", "A" * 128])
async def test_a_well_formed_request_id_is_echoed(
    client: httpx.AsyncClient, ledger: LedgerKeys, request_id: str
) -> None:
    ok = await client.get("/v1/accounts", headers={**ledger.read, "X-Request-ID": request_id})
    assert ok.headers["x-request-id"] == request_id
    refused = await client.get("/v1/accounts", headers={"X-Request-ID": request_id})
    assert assert_problem(refused, 401, "unauthenticated")["request_id"] == request_id


@pytest.mark.parametrize("request_id", ["A" * 129, "x" * 200, "has spaces", "semi;colon", "slash/es", ""])
async def test_a_malformed_request_id_is_replaced_by_a_generated_one(
    client: httpx.AsyncClient, ledger: LedgerKeys, request_id: str
) -> None:
    ok = await client.get("/v1/accounts", headers={**ledger.read, "X-Request-ID": request_id})
    assert ok.status_code == 200
    generated = ok.headers["x-request-id"]
    assert generated != request_id
    assert REQUEST_ID.fullmatch(generated)
    refused = await client.get("/v1/accounts", headers={"X-Request-ID": request_id})
    body = assert_problem(refused, 401, "unauthenticated")
    assert REQUEST_ID.fullmatch(body["request_id"])
    assert body["request_id"] != request_id


async def test_a_request_without_a_request_id_gets_a_fresh_one_each_time(
    client: httpx.AsyncClient,
) -> None:
    ids = {(await client.get("/healthz")).headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5
    assert all(REQUEST_ID.fullmatch(request_id) for request_id in ids)


async def test_every_successful_write_returns_a_consistency_token(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    await open_account(client, ledger.write, id="world", normal_balance="debit", min_balance=None)
    await open_account(client, ledger.write, id="alice")
    keys = f"/v1/ledgers/{ledger.ledger_id}/keys"
    spare = await client.post(keys, json={"name": "spare", "scopes": ["read"]}, headers=ledger.admin)
    pay = {"debit_account_id": "world", "credit_account_id": "alice", "amount": 5}
    writes = {
        "create ledger": await client.post("/v1/ledgers", json={"name": "l2"}, headers=ROOT),
        "create key": spare,
        "revoke key": await client.delete(f"{keys}/{spare.json()['id']}", headers=ledger.admin),
        "open account": await client.post("/v1/accounts", json={"currency": "USD"}, headers=ledger.write),
        "change account": await client.patch("/v1/accounts/alice", json={"name": "a"}, headers=ledger.write),
        "transfer": await client.post("/v1/transfers", json=pay, headers={**ledger.write, **idem()}),
    }
    assert all(response.is_success for response in writes.values())
    missing = [
        name for name, response in writes.items() if not response.headers.get("tally-consistency-token")
    ]
    assert missing == []

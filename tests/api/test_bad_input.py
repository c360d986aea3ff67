"""Every kind of bad input gets a precise problem+json answer, and nothing is written."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from tests.support import LedgerKeys, assert_problem, idem, open_account, transfer

MIB = 1024 * 1024
EXTRA_LEG = {"account_id": "bob", "direction": "credit", "amount": 5, "x": 1}
INT64_MAX = 2**63 - 1


def assert_invalid(response: httpx.Response, field: str | None = None) -> None:
    """422 validation_error whose ``errors`` list ``{loc, msg}``, one of them at ``field``."""
    errors = assert_problem(response, 422, "validation_error")["errors"]
    assert errors
    for error in errors:
        assert set(error) == {"loc", "msg"}
        assert isinstance(error["loc"], list)
        assert isinstance(error["msg"], str)
        assert error["msg"]
    if field is not None:
        assert any(field in [str(part) for part in error["loc"]] for error in errors), errors


async def snapshot(client: httpx.AsyncClient, ledger: LedgerKeys) -> dict[str, Any]:
    """Everything the ledger holds: accounts (balances, versions) and transfers."""
    query = {"limit": 1000}
    accounts = await client.get("/v1/accounts", params=query, headers=ledger.read)
    transfers = await client.get("/v1/transfers", params=query, headers=ledger.read)
    assert accounts.status_code == transfers.status_code == 200
    return {"accounts": accounts.json()["data"], "transfers": transfers.json()["data"]}


@pytest.fixture
async def funded(client: httpx.AsyncClient, ledger: LedgerKeys) -> dict[str, Any]:
    """world (unbounded, debit-normal), alice holding 1000 and an empty bob; their snapshot."""
    await open_account(client, ledger.write, id="world", normal_balance="debit", min_balance=None)
    await open_account(client, ledger.write, id="alice")
    await open_account(client, ledger.write, id="bob")
    assert (await transfer(client, ledger.write, "world", "alice", 1000)).status_code == 201
    return await snapshot(client, ledger)


def simple(amount: Any = 100, **extra: Any) -> dict[str, Any]:
    return {"debit_account_id": "alice", "credit_account_id": "bob", "amount": amount, **extra}


def legs(*parts: tuple[str, str, Any]) -> dict[str, Any]:
    return {"legs": [{"account_id": a, "direction": d, "amount": n} for a, d, n in parts]}


async def post_transfer(
    client: httpx.AsyncClient, ledger: LedgerKeys, body: dict[str, Any]
) -> httpx.Response:
    return await client.post("/v1/transfers", json=body, headers={**ledger.write, **idem()})


async def post_raw(
    client: httpx.AsyncClient, headers: dict[str, str], path: str, content: Any
) -> httpx.Response:
    sent = {**headers, **idem(), "Content-Type": "application/json"}
    return await client.post(path, content=content, headers=sent)


@pytest.mark.parametrize(
    "case",
    [
        ("/v1/accounts", {"currency": "USD", "colour": "red"}, "colour"),
        ("/v1/accounts", {"currency": "USD", "version": 3}, "version"),
        ("/v1/accounts", {"currency": "USD", "balance": {"posted": 10}}, "balance"),
        ("/v1/accounts", {"currency": "USD", "status": "frozen"}, "status"),
        ("/v1/transfers", simple(status="pending"), "status"),
        ("/v1/transfers", simple(expires_at="2999-01-01T00:00:00Z"), "expires_at"),
        ("/v1/transfers", simple(status="posted"), "status"),
        ("/v1/transfers", {"legs": [*legs(("alice", "debit", 5))["legs"], EXTRA_LEG]}, "x"),
    ],
)
async def test_an_unknown_field_is_refused_and_nothing_is_written(
    client: httpx.AsyncClient,
    ledger: LedgerKeys,
    funded: dict[str, Any],
    case: tuple[str, dict[str, Any], str],
) -> None:
    path, body, field = case
    response = await client.post(path, json=body, headers={**ledger.write, **idem()})
    assert_invalid(response, field)
    assert await snapshot(client, ledger) == funded


@pytest.mark.parametrize("body", [{"version": 9}, {"balance": {"posted": 1}}, {"currency": "EUR"}])
async def test_a_patch_of_a_server_owned_or_fixed_field_is_refused(
    client: httpx.AsyncClient, ledger: LedgerKeys, funded: dict[str, Any], body: dict[str, Any]
) -> None:
    response = await client.patch("/v1/accounts/alice", json=body, headers=ledger.write)
    assert_invalid(response, next(iter(body)))
    assert await snapshot(client, ledger) == funded


@pytest.mark.parametrize("amount", [10.0, 1.5, "10", True, False, None, 0, -5, 2**63, [10], {}])
@pytest.mark.parametrize("form", ["simple", "legs"])
async def test_an_amount_that_is_not_an_integer_from_1_to_2_63_minus_1_is_refused(
    client: httpx.AsyncClient, ledger: LedgerKeys, funded: dict[str, Any], amount: Any, form: str
) -> None:
    both = legs(("alice", "debit", amount), ("bob", "credit", amount))
    body = simple(amount) if form == "simple" else both
    response = await post_transfer(client, ledger, body)
    assert_invalid(response, None if amount is None and form == "simple" else "amount")
    assert await snapshot(client, ledger) == funded


async def test_the_largest_64_bit_amount_is_accepted_where_the_balances_allow_it(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    await open_account(client, ledger.write, id="source", min_balance=None)
    await open_account(client, ledger.write, id="sink")
    response = await transfer(client, ledger.write, "source", "sink", INT64_MAX)
    assert response.status_code == 201, response.text
    assert response.json()["amount"] == INT64_MAX
    balance = (await client.get("/v1/accounts/sink/balance", headers=ledger.read)).json()
    assert balance["posted"] == INT64_MAX


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize(
    "template",
    [
        '{"debit_account_id":"alice","credit_account_id":"bob","amount":%s}',
        '{"legs":[{"account_id":"alice","direction":"debit","amount":%s},'
        '{"account_id":"bob","direction":"credit","amount":100}]}',
        '{"debit_account_id":"alice","credit_account_id":"bob","amount":1,"metadata":{"x":%s}}',
    ],
)
async def test_nan_and_infinity_literals_are_refused(
    client: httpx.AsyncClient,
    ledger: LedgerKeys,
    funded: dict[str, Any],
    literal: str,
    template: str,
) -> None:
    response = await post_raw(client, ledger.write, "/v1/transfers", (template % literal).encode())
    assert_invalid(response)
    assert await snapshot(client, ledger) == funded


@pytest.mark.parametrize(
    "content",
    [b'{"currency": ', b"not json", b"{'currency': 'USD'}", b'{"currency":"USD",}', b"\xff\xfe{"],
)
@pytest.mark.parametrize("path", ["/v1/accounts", "/v1/transfers"])
async def test_a_body_that_is_not_json_is_answered_400_invalid_json(
    client: httpx.AsyncClient,
    ledger: LedgerKeys,
    funded: dict[str, Any],
    content: bytes,
    path: str,
) -> None:
    assert_problem(await post_raw(client, ledger.write, path, content), 400, "invalid_json")
    assert await snapshot(client, ledger) == funded


def oversized_account() -> bytes:
    body = orjson.dumps({"currency": "USD", "metadata": {"blob": "x" * MIB}})
    assert len(body) > MIB
    return body


async def test_a_body_over_one_mebibyte_with_a_content_length_is_refused_with_413(
    client: httpx.AsyncClient, ledger: LedgerKeys, funded: dict[str, Any]
) -> None:
    response = await post_raw(client, ledger.write, "/v1/accounts", oversized_account())
    assert_problem(response, 413, "payload_too_large")
    assert await snapshot(client, ledger) == funded


async def test_a_streamed_body_over_one_mebibyte_is_refused_with_413(
    client: httpx.AsyncClient, ledger: LedgerKeys, funded: dict[str, Any]
) -> None:
    body = oversized_account()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    request = client.build_request(
        "POST", "/v1/accounts", content=chunks(), headers={**ledger.write, **idem()}
    )
    assert "content-length" not in request.headers
    assert request.headers["transfer-encoding"] == "chunked"
    assert_problem(await client.send(request), 413, "payload_too_large")
    assert await snapshot(client, ledger) == funded


async def test_a_body_of_exactly_one_mebibyte_is_read_and_judged_on_its_content(
    client: httpx.AsyncClient, ledger: LedgerKeys, funded: dict[str, Any]
) -> None:
    padding = MIB - len(orjson.dumps({"currency": "USD", "metadata": {"blob": ""}}))
    body = orjson.dumps({"currency": "USD", "metadata": {"blob": "x" * padding}})
    assert len(body) == MIB
    assert_invalid(await post_raw(client, ledger.write, "/v1/accounts", body), "metadata")
    assert await snapshot(client, ledger) == funded


@pytest.mark.parametrize(
    "content",
    [
        b"[" * 100_000,
        b'{"currency":"USD","metadata":' + b'{"a":' * 100_000,
        b'{"currency":"USD","metadata":{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
    ],
)
async def test_deeply_nested_json_is_a_client_error_never_a_500(
    client: httpx.AsyncClient, ledger: LedgerKeys, funded: dict[str, Any], content: bytes
) -> None:
    response = await post_raw(client, ledger.write, "/v1/accounts", content)
    assert 400 <= response.status_code < 500, response.text
    assert_problem(response, response.status_code, response.json()["code"])
    assert await snapshot(client, ledger) == funded


@pytest.mark.parametrize(
    "currency", ["usd", "Usd", "U", "", "1USD", "_USD", "US D", "U$D", "ÜSD", "A" * 17, 840, None]
)
async def test_a_malformed_currency_code_is_refused(
    client: httpx.AsyncClient, ledger: LedgerKeys, funded: dict[str, Any], currency: Any
) -> None:
    response = await client.post("/v1/accounts", json={"currency": currency}, headers=ledger.write)
    assert_invalid(response, "currency")
    if currency is not None:  # a transfer's currency is optional: null means "the accounts' one"
        assert_invalid(await post_transfer(client, ledger, simple(currency=currency)), "currency")
    assert await snapshot(client, ledger) == funded


@pytest.mark.parametrize("currency", ["POINTS", "A1", "X_2", "B" * 16])
async def test_custom_asset_codes_matching_the_pattern_are_accepted(
    client: httpx.AsyncClient, ledger: LedgerKeys, currency: str
) -> None:
    assert (await open_account(client, ledger.write, currency=currency))["currency"] == currency


@pytest.mark.parametrize("client_id", ["", "a b", "a/b", "a?b", "a#b", "é", "x" * 129, "tab\there", 7, True])
async def test_a_malformed_client_id_is_refused(
    client: httpx.AsyncClient, ledger: LedgerKeys, funded: dict[str, Any], client_id: Any
) -> None:
    body = {"id": client_id, "currency": "USD"}
    assert_invalid(await client.post("/v1/accounts", json=body, headers=ledger.write), "id")
    assert_invalid(await post_transfer(client, ledger, simple(id=client_id)), "id")
    assert await snapshot(client, ledger) == funded


@pytest.mark.parametrize("client_id", ["a", "x" * 128, "A.b_c:d-1"])
async def test_client_ids_of_1_to_128_allowed_characters_are_accepted(
    client: httpx.AsyncClient, ledger: LedgerKeys, funded: dict[str, Any], client_id: str
) -> None:
    assert (await open_account(client, ledger.write, id=client_id))["id"] == client_id
    created = await post_transfer(client, ledger, simple(id=client_id))
    assert created.status_code == 201, created.text
    assert created.json()["id"] == client_id


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"n": value}
    return value


@pytest.mark.parametrize(
    "metadata",
    [nested(50), {"blob": "x" * (64 * 1024)}, {f"k{i}": "v" * 100 for i in range(500)}, [1], "x"],
)
async def test_metadata_that_is_too_deep_too_large_or_not_an_object_is_refused(
    client: httpx.AsyncClient, ledger: LedgerKeys, funded: dict[str, Any], metadata: Any
) -> None:
    body = {"currency": "USD", "metadata": metadata}
    assert_invalid(await client.post("/v1/accounts", json=body, headers=ledger.write), "metadata")
    patch = await client.patch("/v1/accounts/alice", json={"metadata": metadata}, headers=ledger.write)
    assert_invalid(patch, "metadata")
    assert_invalid(await post_transfer(client, ledger, simple(metadata=metadata)), "metadata")
    assert await snapshot(client, ledger) == funded


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"legs": []}, "validation_error"),
        (legs(("alice", "debit", 100)), "validation_error"),
        (
            legs(("alice", "debit", 50), ("alice", "debit", 50), ("bob", "credit", 100)),
            "validation_error",
        ),
        ({"debit_account_id": "alice", "credit_account_id": "alice", "amount": 5}, "same_account"),
        (legs(("alice", "debit", 100), ("bob", "credit", 99)), "unbalanced_transfer"),
        (legs(("alice", "debit", 100), ("bob", "debit", 100)), "unbalanced_transfer"),
        ({**simple(), **legs(("alice", "debit", 1), ("bob", "credit", 1))}, "validation_error"),
        ({**legs(("alice", "debit", 1), ("bob", "credit", 1)), "amount": 1}, "validation_error"),
        ({"debit_account_id": "alice", "credit_account_id": "bob"}, "validation_error"),
        ({"debit_account_id": "alice", "amount": 5}, "validation_error"),
        ({}, "validation_error"),
    ],
)
async def test_a_transfer_body_that_breaks_a_rule_of_its_own_is_refused(
    client: httpx.AsyncClient,
    ledger: LedgerKeys,
    funded: dict[str, Any],
    body: dict[str, Any],
    code: str,
) -> None:
    response = await post_transfer(client, ledger, body)
    if code == "validation_error":
        assert_invalid(response)
    else:
        assert_problem(response, 422, code)
    assert await snapshot(client, ledger) == funded


LIST_ROUTES = ["/v1/accounts", "/v1/transfers", "/v1/accounts/alice/entries", "KEYS"]


def list_path(route: str, ledger: LedgerKeys) -> str:
    return f"/v1/ledgers/{ledger.ledger_id}/keys" if route == "KEYS" else route


@pytest.mark.parametrize("limit", ["0", "1001", "-1", "abc", "1.5", ""])
@pytest.mark.parametrize("route", LIST_ROUTES)
async def test_a_limit_outside_1_to_1000_is_refused(
    client: httpx.AsyncClient, ledger: LedgerKeys, funded: dict[str, Any], limit: str, route: str
) -> None:
    path = list_path(route, ledger)
    response = await client.get(path, params={"limit": limit}, headers=ledger.admin)
    assert_invalid(response, "limit")
    for edge in ("1", "1000"):
        assert (await client.get(path, params={"limit": edge}, headers=ledger.admin)).is_success


@pytest.mark.parametrize("cursor", ["nonsense", "!!!", "aGVsbG8", "cDE5OTk5OTk5OTk5OTk5OTk5OTk5OTk"])
@pytest.mark.parametrize("route", LIST_ROUTES)
async def test_an_unknown_cursor_is_refused(
    client: httpx.AsyncClient, ledger: LedgerKeys, funded: dict[str, Any], cursor: str, route: str
) -> None:
    response = await client.get(list_path(route, ledger), params={"cursor": cursor}, headers=ledger.admin)
    assert_invalid(response, "cursor")


@pytest.mark.parametrize("budget", ["abc", "-5", "1.5", "", "10ms", "5 ms"])
async def test_a_malformed_tally_timeout_ms_is_refused(
    client: httpx.AsyncClient, ledger: LedgerKeys, funded: dict[str, Any], budget: str
) -> None:
    read = await client.get("/v1/accounts", headers={**ledger.read, "Tally-Timeout-Ms": budget})
    assert_invalid(read)
    write = await client.post(
        "/v1/transfers",
        json=simple(),
        headers={**ledger.write, **idem(), "Tally-Timeout-Ms": budget},
    )
    assert_invalid(write)
    assert await snapshot(client, ledger) == funded


async def test_a_transfer_without_an_idempotency_key_is_refused_with_400(
    client: httpx.AsyncClient, ledger: LedgerKeys, funded: dict[str, Any]
) -> None:
    response = await client.post("/v1/transfers", json=simple(), headers=ledger.write)
    assert_problem(response, 400, "idempotency_key_required")
    assert await snapshot(client, ledger) == funded


@pytest.mark.parametrize("key", ["", "k" * 256])
async def test_an_idempotency_key_that_is_empty_or_longer_than_255_characters_is_refused(
    client: httpx.AsyncClient, ledger: LedgerKeys, funded: dict[str, Any], key: str
) -> None:
    refused = await client.post(
        "/v1/transfers", json=simple(), headers={**ledger.write, "Idempotency-Key": key}
    )
    assert_invalid(refused)
    assert await snapshot(client, ledger) == funded
    longest = await client.post("/v1/transfers", json=simple(), headers={**ledger.write, **idem("k" * 255)})
    assert longest.status_code == 201, longest.text


@pytest.mark.parametrize("value", [1.5, "0", True, 2**63, -(2**63) - 1, {"amount": 1}])
@pytest.mark.parametrize("field", ["min_balance", "max_balance"])
async def test_a_bound_that_is_not_a_64_bit_integer_is_refused(
    client: httpx.AsyncClient, ledger: LedgerKeys, funded: dict[str, Any], value: Any, field: str
) -> None:
    created = await client.post("/v1/accounts", json={"currency": "USD", field: value}, headers=ledger.write)
    assert_invalid(created, field)
    assert_invalid(await client.patch("/v1/accounts/alice", json={field: value}, headers=ledger.write), field)
    assert await snapshot(client, ledger) == funded

"""What the fuzzer found, pinned as plain tests so that it stays fixed whatever the fuzzer draws next."""

from __future__ import annotations

import httpx
import pytest

from tests.support import LedgerKeys, assert_problem, idem, open_account

# Valid RFC 3339 date-times that fall outside the years 1-9999 once in UTC.
OUT_OF_RANGE_IN_UTC = ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"]


@pytest.mark.parametrize("expires_at", OUT_OF_RANGE_IN_UTC)
async def test_a_key_expiring_beyond_the_utc_range_is_a_422_not_a_500(
    backend: str, client: httpx.AsyncClient, ledger: LedgerKeys, expires_at: str
) -> None:
    body = {"name": "later", "scopes": ["read"], "expires_at": expires_at}
    response = await client.post(f"/v1/ledgers/{ledger.ledger_id}/keys", json=body, headers=ledger.admin)
    assert_problem(response, 422, "validation_error")


@pytest.mark.parametrize("as_of", [*OUT_OF_RANGE_IN_UTC, "-51112430150479", "1700000000", "2026-01-01"])
async def test_a_balance_as_of_anything_but_rfc_3339_text_with_a_zone_in_range_is_a_422(
    backend: str, client: httpx.AsyncClient, ledger: LedgerKeys, as_of: str
) -> None:
    """Not a time outside the years 1-9999 in UTC (it was a 500), nor a number of seconds since 1970,
    which pydantic alone would take."""
    await open_account(client, ledger.write, id="a")
    response = await client.get("/v1/accounts/a/balance", params={"as_of": as_of}, headers=ledger.read)
    assert_problem(response, 422, "validation_error")


@pytest.mark.parametrize("expires_at", [*OUT_OF_RANGE_IN_UTC, 9999999999, "9999999999", "2286-11-20"])
async def test_a_hold_expiring_at_anything_but_rfc_3339_text_with_a_zone_in_range_is_a_422(
    backend: str, client: httpx.AsyncClient, ledger: LedgerKeys, expires_at: object
) -> None:
    """Not a time outside the years 1-9999 in UTC (it was a 500), nor a number of seconds."""
    await open_account(client, ledger.write, id="world", normal_balance="debit", min_balance=None)
    await open_account(client, ledger.write, id="a")
    body = {"debit_account_id": "world", "credit_account_id": "a", "amount": 1, "pending": True}
    response = await client.post(
        "/v1/transfers", json={**body, "expires_at": expires_at}, headers={**ledger.write, **idem()}
    )
    assert_problem(response, 422, "validation_error")


async def test_a_time_before_the_year_1000_is_written_with_four_digit_years(
    backend: str, client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    await open_account(client, ledger.write, id="a")
    response = await client.get(
        "/v1/accounts/a/balance", params={"as_of": "0250-03-28T15:18:19Z"}, headers=ledger.read
    )
    assert response.status_code == 200, response.text
    assert response.json()["as_of"] == "0250-03-28T15:18:19.000000Z"


@pytest.mark.parametrize(
    "sent",
    [
        ("PATCH", "/v1/accounts/a", {"name": "a\x00b"}),
        ("PATCH", "/v1/accounts/a", {"metadata": {"k\x00": 1}}),
        ("PATCH", "/v1/accounts/a", {"metadata": {"k": ["v\x00"]}}),
        ("GET", "/v1/accounts/a%00b", None),
        ("GET", "/v1/transfers?account_id=a%00", None),
        ("GET", "/v1/events?after=evt%00", None),
    ],
)
async def test_a_nul_character_anywhere_in_a_request_is_a_422_on_every_backend(
    backend: str, client: httpx.AsyncClient, ledger: LedgerKeys, sent: tuple[str, str, object]
) -> None:
    """PostgreSQL stores no U+0000; its driver's refusal once read as an outage (503, breaker told)."""
    method, path, body = sent
    account = await open_account(client, ledger.write, id="a")
    response = await client.request(method, path, json=body, headers=ledger.write)
    assert_problem(response, 422, "validation_error")
    again = await client.get("/v1/accounts/a", headers=ledger.read)
    assert again.json()["version"] == account["version"]

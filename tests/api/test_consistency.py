"""Read consistency headers (API.md, ADR 0021): tokens, levels, and what they refuse.

On both databases; the replica side (stale answers, lag, a paused replay) is in
``tests/integration/test_postgres_consistency.py``.
"""

from __future__ import annotations

import httpx
import pytest

from tests.support import LedgerKeys, assert_problem, funded_account


async def test_a_read_that_sends_a_writes_token_sees_that_write(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    await funded_account(client, ledger, "wallet", 500)
    paid = await client.post(
        "/v1/transfers",
        json={"debit_account_id": "wallet", "credit_account_id": "world", "amount": 120},
        headers={**ledger.write, "Idempotency-Key": "pay-1"},
    )
    assert paid.status_code == 201
    token = paid.headers["tally-consistency-token"]
    for level in ("available", "strong"):
        read = await client.get(
            "/v1/accounts/wallet",
            headers={**ledger.read, "Tally-Consistency-Token": token, "Tally-Consistency": level},
        )
        assert read.status_code == 200, read.text
        assert read.json()["balance"]["posted"] == 380


async def test_a_strong_read_is_never_labelled_stale(client: httpx.AsyncClient, ledger: LedgerKeys) -> None:
    await funded_account(client, ledger, "wallet", 500)
    read = await client.get("/v1/accounts/wallet", headers={**ledger.read, "Tally-Consistency": "strong"})
    assert read.status_code == 200
    assert "tally-stale" not in read.headers
    assert "tally-as-of" not in read.headers


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("Tally-Consistency", "sometimes"),
        ("Tally-Consistency", "primary_preferred"),  # internal, not a header value
        ("Tally-Consistency-Token", "not-a-token!"),
        ("Tally-Consistency-Token", "1" * 41),
    ],
)
async def test_a_malformed_consistency_header_is_a_validation_error(
    client: httpx.AsyncClient, ledger: LedgerKeys, header: str, value: str
) -> None:
    response = await client.get("/v1/accounts", headers={**ledger.read, header: value})
    problem = assert_problem(response, 422, "validation_error")
    assert problem["errors"][0]["loc"] == ["header", header]


@pytest.mark.backends("sqlite")
async def test_on_sqlite_a_token_no_write_of_this_database_made_is_refused(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    await funded_account(client, ledger, "wallet", 500)
    known = (await client.get("/v1/accounts/wallet", headers=ledger.read)).headers
    assert "tally-stale" not in known  # one file: every answer is current
    future = await client.get(
        "/v1/accounts/wallet", headers={**ledger.read, "Tally-Consistency-Token": "999999999"}
    )
    assert_problem(future, 503, "unavailable")
    assert future.headers["retry-after"]
    malformed_here = await client.get(
        "/v1/accounts/wallet", headers={**ledger.read, "Tally-Consistency-Token": "0/16B3748"}
    )
    assert_problem(malformed_here, 422, "validation_error")

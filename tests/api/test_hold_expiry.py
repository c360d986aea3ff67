"""Expiry of holds: from its ``expires_at`` a hold reads expired, swept or not, and history stays exact."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.holds_support import (
    act,
    balance_as_of,
    balances,
    create,
    events,
    hold,
    legs,
    listed,
    open_accounts,
    simple,
    snapshot,
    soon,
    stored_status,
    until_expired,
)
from tests.support import LedgerKeys, asgi_client, assert_problem, new_ledger, settings_for


@pytest.fixture
async def unswept(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """An app whose hold sweeper does not come round during the test.

    What such a test sees of an expiry is the read-time rule alone (ADR 0014), or the write-down
    done by a request that touches the hold's accounts; never a timer racing the assertions.
    """
    async with asgi_client(settings_for(tmp_path, hold_sweep_seconds=3600.0)) as c:
        yield c


@pytest.fixture
async def accounts(client: httpx.AsyncClient, ledger: LedgerKeys) -> None:
    await open_accounts(client, ledger)


def just_before(timestamp: str) -> str:
    moment = datetime.fromisoformat(timestamp) - timedelta(microseconds=1)
    return moment.isoformat()


@pytest.mark.usefixtures("accounts")
@pytest.mark.parametrize(
    "extra",
    [
        {"expires_at": "2999-01-01T00:00:00Z"},
        {"pending": True, "expires_at": "2001-01-01T00:00:00Z"},
        {"pending": True, "expires_at": "2999-01-01T00:00:00"},
    ],
    ids=["without_pending", "in_the_past", "without_a_time_zone"],
)
async def test_expires_at_belongs_to_a_hold_and_must_be_a_future_instant(
    client: httpx.AsyncClient, ledger: LedgerKeys, tmp_path: Path, extra: dict[str, Any]
) -> None:
    before = await snapshot(client, ledger, tmp_path)
    body = assert_problem(
        await create(client, ledger, simple("alice", "bob", 5, **extra)), 422, "validation_error"
    )
    assert ["body", "expires_at"] in [error["loc"] for error in body["errors"]]
    assert await snapshot(client, ledger, tmp_path) == before


async def test_a_hold_reads_expired_from_its_expires_at_before_any_sweeper_runs(
    unswept: httpx.AsyncClient, tmp_path: Path
) -> None:
    client = unswept
    ledger = await new_ledger(client)
    await open_accounts(client, ledger)
    made = await hold(client, ledger, "alice", "bob", 300, expires_at=soon(200))
    assert made["expires_at"] is not None
    expired = await until_expired(client, ledger, made["id"])
    assert {**expired, "status": "pending"} == made
    assert stored_status(tmp_path, made["id"]) == "pending"  # nothing has written it down yet
    assert await balances(client, ledger, "alice", "bob") == {
        "alice": (1000, 0, 0, 1000, 3),  # the expiry is an operation on the balance
        "bob": (0, 0, 0, 0, 2),
    }
    assert await listed(client, ledger, status="expired") == [made["id"]]
    assert await listed(client, ledger, status="pending") == []
    for verb, code in (("post", "transfer_not_pending"), ("void", "transfer_not_pending")):
        assert_problem(await act(client, ledger, made["id"], verb), 409, code)
    assert_problem(await act(client, ledger, made["id"], "reverse"), 409, "transfer_not_posted")
    assert [e["type"] for e in events(tmp_path, ledger.ledger_id)][-1] == "transfer.created"

    # A write on alice writes the expiry down first, as the timer would: one event, no request id.
    assert (await create(client, ledger, simple("alice", "carol", 1000))).status_code == 201
    assert stored_status(tmp_path, made["id"]) == "expired"
    expiries = [e for e in events(tmp_path, ledger.ledger_id) if e["type"] == "transfer.expired"]
    assert [(e["data"]["id"], e["data"]["status"], e["request_id"]) for e in expiries] == [
        (made["id"], "expired", None)
    ]
    assert await balances(client, ledger, "alice", "bob") == {
        "alice": (0, 0, 0, 0, 4),
        "bob": (0, 0, 0, 0, 2),
    }


@pytest.mark.parametrize("ending", ["void", "expiry"])
async def test_an_account_with_a_pending_hold_closes_only_once_the_hold_has_ended(
    unswept: httpx.AsyncClient, tmp_path: Path, ending: str
) -> None:
    client = unswept
    ledger = await new_ledger(client)
    await open_accounts(client, ledger)
    extra = {"expires_at": soon(200)} if ending == "expiry" else {}
    made = await hold(client, ledger, "world", "bob", 100, **extra)
    close = {"status": "closed"}
    assert_problem(
        await client.patch("/v1/accounts/bob", json=close, headers=ledger.write), 409, "account_not_empty"
    )
    if ending == "void":
        assert (await act(client, ledger, made["id"], "void")).status_code == 200
    else:
        await until_expired(client, ledger, made["id"])  # read-time only: not swept yet
    closed = await client.patch("/v1/accounts/bob", json=close, headers=ledger.write)
    assert closed.status_code == 200, closed.text
    assert closed.json()["status"] == "closed"
    assert closed.json()["balance"] == {
        "posted": 0,
        "pending_debits": 0,
        "pending_credits": 0,
        "available": 0,
    }
    assert stored_status(tmp_path, made["id"]) == ("voided" if ending == "void" else "expired")


async def test_the_balance_as_of_any_moment_is_exact_across_a_holds_life(
    unswept: httpx.AsyncClient, tmp_path: Path
) -> None:
    client = unswept
    ledger = await new_ledger(client)
    await open_accounts(client, ledger)
    funded_at = (await client.get("/v1/transfers", headers=ledger.read)).json()["data"][0]["created_at"]
    kept = await hold(client, ledger, "alice", "bob", 100)  # pending throughout, voided at the end
    partly = await hold(client, ledger, "alice", "bob", 300)
    posted = (await act(client, ledger, partly["id"], "post", {"amount": 100})).json()
    lapsing = await hold(client, ledger, "alice", "bob", 200, expires_at=soon(250))
    await until_expired(client, ledger, lapsing["id"])
    # (posted, pending_debits, pending_credits, available, version) of alice and of bob
    expected = {
        just_before(funded_at): ((0, 0, 0, 0, 0), (0, 0, 0, 0, 0)),
        funded_at: ((1000, 0, 0, 1000, 1), (0, 0, 0, 0, 0)),
        kept["created_at"]: ((1000, 100, 0, 900, 2), (0, 0, 100, 0, 1)),
        partly["created_at"]: ((1000, 400, 0, 600, 3), (0, 0, 400, 0, 2)),
        posted["posted_at"]: ((900, 100, 0, 800, 4), (100, 0, 100, 100, 3)),
        lapsing["created_at"]: ((900, 300, 0, 600, 5), (100, 0, 300, 100, 4)),
        just_before(lapsing["expires_at"]): ((900, 300, 0, 600, 5), (100, 0, 300, 100, 4)),
        lapsing["expires_at"]: ((900, 100, 0, 800, 6), (100, 0, 100, 100, 5)),
    }

    async def history() -> dict[str, Any]:
        return {
            moment: (
                await balance_as_of(client, ledger, "alice", moment),
                await balance_as_of(client, ledger, "bob", moment),
            )
            for moment in expected
        }

    assert await history() == expected  # the expiry seen at read time only
    assert stored_status(tmp_path, lapsing["id"]) == "pending"

    voided = (await act(client, ledger, kept["id"], "void")).json()  # writes the expiry down first
    reversal = (await act(client, ledger, partly["id"], "reverse", {"amount": 40})).json()
    assert stored_status(tmp_path, lapsing["id"]) == "expired"
    assert await history() == expected  # the same history once it is written down
    assert voided["status"] == "voided"
    later = {  # the void and the expiry it wrote down, then the reversal
        just_before(reversal["created_at"]): ((900, 0, 0, 900, 7), (100, 0, 0, 100, 6)),
        reversal["created_at"]: ((940, 0, 0, 940, 8), (60, 0, 0, 60, 7)),
    }
    for moment, (alice, bob) in later.items():
        assert await balance_as_of(client, ledger, "alice", moment) == alice
        assert await balance_as_of(client, ledger, "bob", moment) == bob
    assert await balances(client, ledger, "alice", "bob") == {
        "alice": (940, 0, 0, 940, 8),
        "bob": (60, 0, 0, 60, 7),
    }
    entries = (await client.get("/v1/accounts/alice/entries", headers=ledger.read)).json()["data"]
    assert [(e["transfer_id"], e["direction"], e["amount"], e["account_version"]) for e in entries] == [
        (reversal["id"], "credit", 40, 8),
        (partly["id"], "debit", 100, 4),
        (entries[-1]["transfer_id"], "credit", 1000, 1),
    ]


async def test_a_write_on_one_leg_of_an_expired_multi_leg_hold_writes_down_every_leg(
    unswept: httpx.AsyncClient, tmp_path: Path
) -> None:
    client = unswept
    ledger = await new_ledger(client)
    await open_accounts(client, ledger)
    body = {"legs": legs(("alice", "debit", 300), ("bob", "credit", 100), ("carol", "credit", 200))}
    response = await create(client, ledger, {**body, "pending": True, "expires_at": soon(200)})
    assert response.status_code == 201, response.text
    made = response.json()
    await until_expired(client, ledger, made["id"])
    expected = {
        "alice": (1000, 0, 0, 1000, 3),
        "bob": (0, 0, 0, 0, 2),
        "carol": (0, 0, 0, 0, 2),
    }
    assert await balances(client, ledger, "alice", "bob", "carol") == expected
    before_sweep = {a: await balance_as_of(client, ledger, a, made["expires_at"]) for a in expected}

    # Only carol is written to; the hold's other accounts are locked and released with it.
    assert (await create(client, ledger, simple("world", "carol", 5))).status_code == 201
    assert stored_status(tmp_path, made["id"]) == "expired"
    assert await balances(client, ledger, "alice", "bob", "carol") == {
        **expected,
        "carol": (5, 0, 0, 5, 3),
    }
    assert {a: await balance_as_of(client, ledger, a, made["expires_at"]) for a in expected} == before_sweep
    kinds = [e["type"] for e in events(tmp_path, ledger.ledger_id)]
    assert kinds[-3:] == ["transfer.created", "transfer.expired", "transfer.created"]


async def test_a_hold_on_a_frozen_account_still_expires(unswept: httpx.AsyncClient, tmp_path: Path) -> None:
    client = unswept
    ledger = await new_ledger(client)
    await open_accounts(client, ledger)
    made = await hold(client, ledger, "alice", "bob", 300, expires_at=soon(200))
    frozen = await client.patch("/v1/accounts/bob", json={"status": "frozen"}, headers=ledger.write)
    assert frozen.status_code == 200, frozen.text
    await until_expired(client, ledger, made["id"])
    assert (await create(client, ledger, simple("alice", "carol", 1000))).status_code == 201  # sweeps
    assert stored_status(tmp_path, made["id"]) == "expired"
    assert await balances(client, ledger, "alice", "bob") == {
        "alice": (0, 0, 0, 0, 4),
        "bob": (0, 0, 0, 0, 2),
    }

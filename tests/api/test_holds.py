"""Holds: a pending transfer reserves at once and within the bounds, then is posted (in full or in
part) or voided, exactly once. Expiry is in ``test_hold_expiry``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.holds_support import (
    act,
    balances,
    create,
    events,
    get_transfer,
    hold,
    legs,
    listed,
    open_accounts,
    replayed,
    simple,
    snapshot,
)
from tests.support import LedgerKeys, assert_problem, new_ledger, open_account

INT64_MAX = 2**63 - 1


@pytest.fixture
async def accounts(client: httpx.AsyncClient, ledger: LedgerKeys) -> None:
    await open_accounts(client, ledger)


async def test_a_hold_reserves_the_amount_at_once_and_posts_nothing(any_client: httpx.AsyncClient) -> None:
    client = any_client
    ledger = await new_ledger(client)
    await open_accounts(client, ledger)
    made = await hold(client, ledger, "alice", "bob", 300, description="deposit")
    assert (made["amount"], made["held_amount"], made["description"]) == (300, 300, "deposit")
    assert (made["posted_at"], made["expires_at"], made["reversed_amount"]) == (None, None, 0)
    assert await get_transfer(client, ledger, made["id"]) == made
    assert await balances(client, ledger, "alice", "bob") == {
        "alice": (1000, 300, 0, 700, 2),
        "bob": (0, 0, 300, 0, 1),  # a pending inflow never counts as available
    }
    entries = (await client.get("/v1/accounts/bob/entries", headers=ledger.read)).json()
    assert entries["data"] == []  # a hold posts nothing
    assert await listed(client, ledger, status="pending") == [made["id"]]
    assert made["id"] not in await listed(client, ledger, status="posted")


@pytest.mark.usefixtures("accounts")
async def test_posting_a_hold_posts_what_was_held_exactly_once(
    client: httpx.AsyncClient, ledger: LedgerKeys, tmp_path: Path
) -> None:
    made = await hold(client, ledger, "alice", "bob", 300)
    response = await act(client, ledger, made["id"], "post")
    assert response.status_code == 200, response.text
    done = response.json()
    assert (done["status"], done["amount"], done["held_amount"]) == ("posted", 300, 300)
    assert done["posted_at"] > done["created_at"]
    assert await balances(client, ledger, "alice", "bob") == {
        "alice": (700, 0, 0, 700, 3),
        "bob": (300, 0, 0, 300, 2),
    }
    bob_entries = (await client.get("/v1/accounts/bob/entries", headers=ledger.read)).json()["data"]
    assert [(e["transfer_id"], e["amount"], e["posted_balance_after"]) for e in bob_entries] == [
        (made["id"], 300, 300)
    ]
    before = await snapshot(client, ledger, tmp_path)
    for verb in ("post", "void"):
        assert_problem(await act(client, ledger, made["id"], verb), 409, "transfer_not_pending")
    assert await snapshot(client, ledger, tmp_path) == before
    mine = [(e["type"], e["data"]["status"]) for e in events(tmp_path, ledger.ledger_id)]
    assert mine[-2:] == [("transfer.created", "pending"), ("transfer.posted", "posted")]


async def test_a_partial_post_posts_the_amount_and_releases_the_rest(any_client: httpx.AsyncClient) -> None:
    client = any_client
    ledger = await new_ledger(client)
    await open_accounts(client, ledger)
    made = await hold(client, ledger, "alice", "bob", 300)
    response = await act(client, ledger, made["id"], "post", {"amount": 120})
    assert response.status_code == 200, response.text
    done = response.json()
    assert (done["status"], done["amount"], done["held_amount"]) == ("posted", 120, 300)
    assert [leg["amount"] for leg in done["legs"]] == [120, 120]
    assert await get_transfer(client, ledger, made["id"]) == done
    assert await balances(client, ledger, "alice", "bob") == {
        "alice": (880, 0, 0, 880, 3),
        "bob": (120, 0, 0, 120, 2),
    }


@pytest.mark.usefixtures("accounts")
@pytest.mark.parametrize("body", [None, {}])
async def test_a_void_releases_the_hold_and_posts_nothing(
    client: httpx.AsyncClient, ledger: LedgerKeys, tmp_path: Path, body: dict[str, Any] | None
) -> None:
    made = await hold(client, ledger, "alice", "bob", 300)
    response = await act(client, ledger, made["id"], "void", body)
    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["posted_at"]) == ("voided", None)
    assert await balances(client, ledger, "alice", "bob") == {
        "alice": (1000, 0, 0, 1000, 3),
        "bob": (0, 0, 0, 0, 2),
    }
    assert (await client.get("/v1/accounts/bob/entries", headers=ledger.read)).json()["data"] == []
    assert events(tmp_path, ledger.ledger_id)[-1]["type"] == "transfer.voided"
    assert_problem(await act(client, ledger, made["id"], "post"), 409, "transfer_not_pending")


@pytest.mark.usefixtures("accounts")
async def test_a_multi_leg_hold_holds_every_leg_and_posts_only_in_full(
    client: httpx.AsyncClient, ledger: LedgerKeys, tmp_path: Path
) -> None:
    body = {"legs": legs(("alice", "debit", 300), ("bob", "credit", 100), ("carol", "credit", 200))}
    response = await create(client, ledger, {**body, "pending": True})
    assert response.status_code == 201, response.text
    made = response.json()
    assert (made["status"], made["held_amount"]) == ("pending", None)
    assert await balances(client, ledger, "alice", "bob", "carol") == {
        "alice": (1000, 300, 0, 700, 2),
        "bob": (0, 0, 100, 0, 1),
        "carol": (0, 0, 200, 0, 1),
    }
    before = await snapshot(client, ledger, tmp_path)
    refused = await act(client, ledger, made["id"], "post", {"amount": 100})
    assert_problem(refused, 422, "partial_post_not_supported")
    assert await snapshot(client, ledger, tmp_path) == before
    done = await act(client, ledger, made["id"], "post", {})
    assert done.status_code == 200, done.text
    assert [leg["amount"] for leg in done.json()["legs"]] == [300, 100, 200]
    assert await balances(client, ledger, "alice", "bob", "carol") == {
        "alice": (700, 0, 0, 700, 3),
        "bob": (100, 0, 0, 100, 2),
        "carol": (200, 0, 0, 200, 2),
    }


@pytest.mark.usefixtures("accounts")
async def test_posting_more_than_is_held_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, ledger: LedgerKeys, tmp_path: Path
) -> None:
    made = await hold(client, ledger, "alice", "bob", 300)
    before = await snapshot(client, ledger, tmp_path)
    assert_problem(
        await act(client, ledger, made["id"], "post", {"amount": 301}), 422, "amount_exceeds_pending"
    )
    assert await snapshot(client, ledger, tmp_path) == before
    exact = await act(client, ledger, made["id"], "post", {"amount": 300})
    assert (exact.status_code, exact.json()["amount"]) == (200, 300)


@pytest.mark.usefixtures("accounts")
async def test_holds_draw_on_available_so_a_hold_that_no_longer_fits_is_refused(
    client: httpx.AsyncClient, ledger: LedgerKeys, tmp_path: Path
) -> None:
    await hold(client, ledger, "alice", "bob", 700)
    before = await snapshot(client, ledger, tmp_path)
    for body in (simple("alice", "carol", 301, pending=True), simple("alice", "carol", 301)):
        assert_problem(await create(client, ledger, body), 422, "insufficient_funds")
    assert await snapshot(client, ledger, tmp_path) == before
    await hold(client, ledger, "alice", "carol", 300)
    assert (await balances(client, ledger, "alice"))["alice"] == (1000, 1000, 0, 0, 3)


@pytest.mark.usefixtures("accounts")
async def test_pending_inflows_count_against_a_maximum_balance(
    client: httpx.AsyncClient, ledger: LedgerKeys, tmp_path: Path
) -> None:
    await open_account(client, ledger.write, id="capped", max_balance=500)
    await hold(client, ledger, "world", "capped", 400)
    before = await snapshot(client, ledger, tmp_path)
    for body in (simple("world", "capped", 101, pending=True), simple("world", "capped", 101)):
        assert_problem(await create(client, ledger, body), 422, "insufficient_funds")
    assert await snapshot(client, ledger, tmp_path) == before
    assert (await create(client, ledger, simple("world", "capped", 100))).status_code == 201
    assert (await balances(client, ledger, "capped"))["capped"] == (100, 0, 400, 100, 2)


async def test_an_overdraft_limit_lets_holds_take_available_down_to_it(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    await open_account(client, ledger.write, id="world", normal_balance="debit", min_balance=None)
    await open_account(client, ledger.write, id="overdrawn", min_balance=-200)
    await open_account(client, ledger.write, id="shop")
    assert (await create(client, ledger, simple("world", "overdrawn", 100))).status_code == 201
    await hold(client, ledger, "overdrawn", "shop", 300)
    assert_problem(
        await create(client, ledger, simple("overdrawn", "shop", 1, pending=True)), 422, "insufficient_funds"
    )
    assert (await balances(client, ledger, "overdrawn"))["overdrawn"] == (100, 300, 0, -200, 2)


async def test_on_a_debit_normal_account_pending_credits_are_what_reduces_available(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    await open_account(client, ledger.write, id="equity", min_balance=None)
    await open_account(client, ledger.write, id="cash", normal_balance="debit")
    await open_account(client, ledger.write, id="fees", normal_balance="debit", min_balance=None)
    assert (await create(client, ledger, simple("cash", "equity", 500))).status_code == 201
    await hold(client, ledger, "fees", "cash", 400)
    assert_problem(
        await create(client, ledger, simple("fees", "cash", 101, pending=True)), 422, "insufficient_funds"
    )
    assert await balances(client, ledger, "cash", "fees") == {
        "cash": (500, 0, 400, 100, 2),
        "fees": (0, 400, 0, 0, 1),  # a pending debit is an inflow here
    }


@pytest.mark.usefixtures("accounts")
async def test_a_frozen_account_refuses_a_post_and_a_new_hold_but_lets_a_hold_be_voided(
    client: httpx.AsyncClient, ledger: LedgerKeys, tmp_path: Path
) -> None:
    made = await hold(client, ledger, "alice", "bob", 300)
    frozen = await client.patch("/v1/accounts/bob", json={"status": "frozen"}, headers=ledger.write)
    assert frozen.status_code == 200, frozen.text
    before = await snapshot(client, ledger, tmp_path)
    assert_problem(await act(client, ledger, made["id"], "post"), 422, "account_not_open")
    assert_problem(
        await create(client, ledger, simple("alice", "bob", 5, pending=True)), 422, "account_not_open"
    )
    assert await snapshot(client, ledger, tmp_path) == before
    voided = await act(client, ledger, made["id"], "void")
    assert (voided.status_code, voided.json()["status"]) == (200, "voided")
    assert await balances(client, ledger, "alice", "bob") == {
        "alice": (1000, 0, 0, 1000, 3),
        "bob": (0, 0, 0, 0, 2),
    }


@pytest.mark.usefixtures("accounts")
@pytest.mark.parametrize(("verb", "body"), [("post", {"amount": 120}), ("post", None), ("void", {})])
async def test_a_retried_post_or_void_replays_the_first_reply_without_a_second_effect(
    client: httpx.AsyncClient, ledger: LedgerKeys, tmp_path: Path, verb: str, body: dict[str, Any] | None
) -> None:
    made = await hold(client, ledger, "alice", "bob", 300)
    first = await act(client, ledger, made["id"], verb, body, key="resolve-1")
    assert first.status_code == 200, first.text
    assert not replayed(first)
    after = await snapshot(client, ledger, tmp_path)
    again = await act(client, ledger, made["id"], verb, body, key="resolve-1")
    assert (again.status_code, again.content, replayed(again)) == (200, first.content, True)
    assert await snapshot(client, ledger, tmp_path) == after
    other = await act(
        client, ledger, made["id"], verb, {"amount": 7} if verb == "post" else None, key="resolve-1"
    )
    assert_problem(other, 422, "idempotency_key_reused")
    # The path is part of the fingerprint: the same key on another transfer is another request.
    assert_problem(
        await act(client, ledger, "tr_other", verb, body, key="resolve-1"), 422, "idempotency_key_reused"
    )
    assert await snapshot(client, ledger, tmp_path) == after


@pytest.mark.usefixtures("accounts")
async def test_a_refused_post_is_replayed_even_after_the_obstacle_is_gone(
    client: httpx.AsyncClient, ledger: LedgerKeys, tmp_path: Path
) -> None:
    made = await hold(client, ledger, "alice", "bob", 300)
    await client.patch("/v1/accounts/bob", json={"status": "frozen"}, headers=ledger.write)
    refused = await act(client, ledger, made["id"], "post", key="post-1")
    assert_problem(refused, 422, "account_not_open")
    await client.patch("/v1/accounts/bob", json={"status": "open"}, headers=ledger.write)
    before = await snapshot(client, ledger, tmp_path)
    again = await act(client, ledger, made["id"], "post", key="post-1")
    assert (again.status_code, again.content, replayed(again)) == (422, refused.content, True)
    assert await snapshot(client, ledger, tmp_path) == before
    assert (await act(client, ledger, made["id"], "post", key="post-2")).status_code == 200
    late = await act(client, ledger, made["id"], "void", key="void-1")  # a 409 is stored too
    assert_problem(late, 409, "transfer_not_pending")
    replay = await act(client, ledger, made["id"], "void", key="void-1")
    assert (replay.status_code, replay.content, replayed(replay)) == (409, late.content, True)


@pytest.mark.parametrize("verb", ["post", "void", "reverse"])
async def test_a_transfer_of_another_ledger_is_not_found_by_post_void_or_reverse(
    client: httpx.AsyncClient, ledger: LedgerKeys, tmp_path: Path, verb: str
) -> None:
    other = await new_ledger(client, "other")
    await open_accounts(client, other)
    theirs = await hold(client, other, "alice", "bob", 300)
    if verb == "reverse":
        theirs = (await act(client, other, theirs["id"], "post")).json()
    before = await snapshot(client, other, tmp_path)
    assert_problem(await act(client, ledger, theirs["id"], verb), 404, "not_found")
    assert_problem(await act(client, ledger, "tr_nothing", verb), 404, "not_found")
    assert await snapshot(client, other, tmp_path) == before


@pytest.mark.usefixtures("accounts")
@pytest.mark.parametrize("verb", ["post", "void", "reverse"])
async def test_post_void_and_reverse_answer_scope_then_body_then_key_then_lookup(
    client: httpx.AsyncClient, ledger: LedgerKeys, verb: str
) -> None:
    path = f"/v1/transfers/tr_nothing/{verb}"
    invalid = {"amount": 0} if verb != "void" else {"amount": 5}
    assert_problem(await client.post(path, json=invalid, headers=ledger.read), 403, "forbidden")
    assert_problem(await client.post(path, json=invalid, headers=ledger.write), 422, "validation_error")
    assert_problem(await client.post(path, headers=ledger.write), 400, "idempotency_key_required")
    assert_problem(await act(client, ledger, "tr_nothing", verb), 404, "not_found")


@pytest.mark.usefixtures("accounts")
@pytest.mark.parametrize("ended", ["posted", "voided"])
async def test_a_hold_no_longer_pending_answers_409_before_any_rule_about_the_amount(
    client: httpx.AsyncClient, ledger: LedgerKeys, tmp_path: Path, ended: str
) -> None:
    simple_hold = await hold(client, ledger, "alice", "bob", 300)
    multi = {
        "legs": legs(("alice", "debit", 10), ("bob", "credit", 5), ("carol", "credit", 5)),
        "pending": True,
    }
    multi_hold = (await create(client, ledger, multi)).json()
    for made in (simple_hold, multi_hold):
        assert (
            await act(client, ledger, made["id"], "post" if ended == "posted" else "void")
        ).status_code == 200
    before = await snapshot(client, ledger, tmp_path)
    # amount_exceeds_pending and partial_post_not_supported would apply, but the state answers first
    for made in (simple_hold, multi_hold):
        assert_problem(
            await act(client, ledger, made["id"], "post", {"amount": 301}), 409, "transfer_not_pending"
        )
    assert await snapshot(client, ledger, tmp_path) == before


async def test_a_hold_that_would_overflow_a_balance_is_refused_never_wrapped(
    client: httpx.AsyncClient, ledger: LedgerKeys, tmp_path: Path
) -> None:
    await open_account(client, ledger.write, id="mint", min_balance=None)
    for account_id in ("vault", "spare"):
        await open_account(client, ledger.write, id=account_id)
    await hold(client, ledger, "mint", "vault", INT64_MAX)
    before = await snapshot(client, ledger, tmp_path)
    for body in (
        simple("mint", "spare", 1, pending=True),  # mint's pending debits would pass 2**63 - 1
        simple("mint", "vault", 1),  # vault's posted + pending inflows would
    ):
        assert_problem(await create(client, ledger, body), 422, "amount_overflow")
    assert await snapshot(client, ledger, tmp_path) == before
    assert await balances(client, ledger, "mint", "vault") == {
        "mint": (0, INT64_MAX, 0, -INT64_MAX, 1),
        "vault": (0, 0, INT64_MAX, 0, 1),
    }

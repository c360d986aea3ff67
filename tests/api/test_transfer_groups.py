"""Concurrent ``POST /v1/transfers`` written in groups (``services.transfer_groups``, ADR 0042).

A group is one transaction for many requests; each request must still get what it would have got
alone. The main test sends one script of requests twice: to a service that writes each alone,
one after another, and to one where they queue behind a held group and are then written together
as a single group. Every answer, every replay and every balance must be the same.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tally.bootstrap import Tally
from tally.services import transfer_groups
from tally.services.transfer_groups import TransferGroups
from tally.services.transfers import KeyedTransfer, create_transfers
from tests.observability.scrape import samples, total
from tests.support import (
    LedgerKeys,
    funded_account,
    new_ledger,
    open_account,
    serving_in_process,
    settings_for,
)

Script = list[tuple[str, str, dict[str, Any]]]  # (ledger "main" or "other", idempotency key, body)


def _body(debit: str, credit: str, amount: int, **extra: Any) -> dict[str, Any]:
    return {"debit_account_id": debit, "credit_account_id": credit, "amount": amount, **extra}


# The wallet holds 110, of which "early" already moved 10 before the script.
SCRIPT: Script = [
    ("main", "k-30", _body("wallet", "shop", 30)),
    ("main", "k-50", _body("wallet", "shop", 50)),
    ("main", "k-too-much", _body("wallet", "shop", 50)),  # 20 left: insufficient funds, stored
    ("main", "k-20", _body("wallet", "shop", 20)),  # the refusal before it changed nothing
    ("main", "early", _body("wallet", "shop", 10)),  # a replay of a request made before
    ("main", "early-too", _body("wallet", "shop", 99)),  # a key used before with another body
    ("main", "k-client", _body("world", "shop", 5, id="client-1")),
    ("main", "k-client-again", _body("world", "shop", 5, id="client-1")),  # the same transfer: 200
    ("main", "k-client-other", _body("world", "shop", 6, id="client-1")),  # another body: refused
    ("main", "k-nobody", _body("world", "nobody", 5)),  # no such account: a stored 422
    ("main", "k-hold", _body("world", "shop", 3, pending=True)),
    ("other", "k-other", _body("world", "wallet", 7)),  # another ledger, same group
]


@asynccontextmanager
async def _service(tmp_path: Path, *, limit: int) -> AsyncIterator[tuple[Tally, httpx.AsyncClient]]:
    """A service whose transfers are written alone (``limit`` 1), or in groups by one runner (as
    on SQLite; PostgreSQL runs several, which would split the groups these tests hold together)."""
    tally = Tally(settings_for(tmp_path, transfer_group_limit=limit))
    if limit > 1:
        hooks = tally.group_hooks()
        tally.transfer_groups = TransferGroups(
            tally.database, tally.executor, limit=limit, runners=1, hooks=hooks
        )
    async with serving_in_process(tally, tokens=False) as client:
        yield tally, client


async def _ledgers(client: httpx.AsyncClient) -> dict[str, LedgerKeys]:
    ledgers = {"main": await new_ledger(client, "main"), "other": await new_ledger(client, "other")}
    await funded_account(client, ledgers["main"], "wallet", 110)
    await open_account(client, ledgers["main"].write, id="shop")
    await open_account(client, ledgers["main"].write, id="spare")
    await funded_account(client, ledgers["other"], "wallet", 1)
    for key, amount in (("early", 10), ("early-too", 1)):
        headers = {**ledgers["main"].write, "Idempotency-Key": key}
        body = _body("wallet", "shop", amount) if key == "early" else _body("world", "shop", amount)
        assert (await client.post("/v1/transfers", json=body, headers=headers)).status_code == 201
    return ledgers


def _post(
    client: httpx.AsyncClient, ledgers: dict[str, LedgerKeys], step: tuple[str, str, dict[str, Any]]
) -> Coroutine[Any, Any, httpx.Response]:
    ledger, key, body = step
    return client.post("/v1/transfers", json=body, headers={**ledgers[ledger].write, "Idempotency-Key": key})


MADE_BY_THE_RUN = {"created_at", "posted_at", "updated_at", "request_id", "as_of"}


def _masked(value: Any) -> Any:
    """An answer without what differs between two runs: server-made ids and times, request ids."""
    if isinstance(value, dict):
        return {
            name: "*" if name in MADE_BY_THE_RUN or _made(name, item) else _masked(item)
            for name, item in value.items()
        }
    if isinstance(value, list):
        return [_masked(item) for item in value]
    return value


def _made(name: str, value: Any) -> bool:
    return name == "id" and isinstance(value, str) and value.startswith("tr_")


async def _balances(client: httpx.AsyncClient, ledgers: dict[str, LedgerKeys]) -> dict[str, Any]:
    """The balances the script moves (the grouped run's first transfer moved main's world too)."""
    found = {}
    for name, account in (("main", "wallet"), ("main", "shop"), ("other", "world"), ("other", "wallet")):
        response = await client.get(f"/v1/accounts/{account}/balance", headers=ledgers[name].read)
        assert response.status_code == 200, response.text
        found[f"{name}/{account}"] = _masked(response.json())
    return found


async def _replays(client: httpx.AsyncClient, ledgers: dict[str, LedgerKeys]) -> list[tuple[int, str | None]]:
    answers = [await _post(client, ledgers, step) for step in SCRIPT]
    return [(r.status_code, r.headers.get("idempotent-replayed")) for r in answers]


async def test_a_group_answers_each_request_as_it_would_have_been_answered_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _service(tmp_path / "alone", limit=1) as (_, client):
        ledgers = await _ledgers(client)
        alone = [await _post(client, ledgers, step) for step in SCRIPT]
        alone_balances = await _balances(client, ledgers)
        alone_replays = await _replays(client, ledgers)

    gate = asyncio.Event()
    groups: list[int] = []

    async def held(tx: Any, members: list[KeyedTransfer]) -> Any:
        groups.append(len(members))
        if len(groups) == 1:  # the first group waits, so that the script queues behind it
            await gate.wait()
        return await create_transfers(tx, members)

    async with _service(tmp_path / "grouped", limit=32) as (tally, client):
        ledgers = await _ledgers(client)
        before = samples((await client.get("/metrics")).text)
        monkeypatch.setattr(transfer_groups, "create_transfers", held)
        first = asyncio.create_task(_post(client, ledgers, ("main", "k-first", _body("world", "spare", 1))))
        await _until(lambda: len(groups) == 1)
        script = [asyncio.create_task(_post(client, ledgers, step)) for step in SCRIPT]
        assert tally.transfer_groups is not None
        groups_ = tally.transfer_groups
        await _until(lambda: groups_.queued == len(SCRIPT))
        gate.set()
        assert (await first).status_code == 201
        grouped = await asyncio.gather(*script)
        assert groups == [1, len(SCRIPT)]  # the whole script was one group
        after = samples((await client.get("/metrics")).text)
        for suffix, grew in (("count", 2), ("sum", 1 + len(SCRIPT))):
            name = f"tally_transfer_group_size_{suffix}"
            assert total(after, name) - total(before, name) == grew
        monkeypatch.undo()
        grouped_balances = await _balances(client, ledgers)
        grouped_replays = await _replays(client, ledgers)
        events = (await client.get("/v1/events?limit=100", headers=ledgers["main"].read)).json()["data"]

    expected = [
        201, 201, 422, 201, 201, 422, 201, 200, 409, 422, 201, 201,
    ]  # fmt: skip
    assert [r.status_code for r in alone] == expected, [r.json() for r in alone]
    for one, other in zip(alone, grouped, strict=True):
        assert (one.status_code, _masked(one.json())) == (other.status_code, _masked(other.json()))
        assert one.headers.get("idempotent-replayed") == other.headers.get("idempotent-replayed")
    assert grouped[4].headers["idempotent-replayed"] == "true"
    assert [r.json().get("code") for r in grouped if r.status_code >= 400] == [
        "insufficient_funds", "idempotency_key_reused", "id_conflict", "account_not_found",
    ]  # fmt: skip
    assert alone_balances == grouped_balances
    # Sent again, every stored answer replays; the refused key reuse is not stored, so refused again.
    assert (
        alone_replays
        == grouped_replays
        == [(status, None if index == 5 else "true") for index, status in enumerate(expected)]
    )
    # One transaction, one instant; each transfer's event names its own request.
    created = [r for r in grouped if r.status_code == 201 and r.headers.get("idempotent-replayed") is None]
    assert len({r.json()["created_at"] for r in created}) == 1
    requests = {e["data"]["id"]: e["request_id"] for e in events if e["type"] == "transfer.created"}
    for response in created:
        if response.json()["id"] in requests:  # the other ledger's is in its own feed
            assert requests[response.json()["id"]] == response.headers["x-request-id"]


async def test_a_group_that_fails_as_a_whole_runs_each_request_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    async def broken(tx: Any, members: list[KeyedTransfer]) -> Any:
        calls.append(len(members))
        raise RuntimeError("the group's transaction fails")

    async with _service(tmp_path, limit=32) as (_, client):
        ledgers = await _ledgers(client)
        monkeypatch.setattr(transfer_groups, "create_transfers", broken)
        steps = [("main", f"k-{n}", _body("wallet", "shop", 10)) for n in range(12)]
        answers = await asyncio.gather(*(_post(client, ledgers, step) for step in steps))
        monkeypatch.undo()
        assert calls, "no group was tried"
        # 100 left in the wallet: ten moves of 10 and two refusals, each decided alone.
        assert sorted(r.status_code for r in answers) == [201] * 10 + [422] * 2
        balance = (await client.get("/v1/accounts/wallet/balance", headers=ledgers["main"].read)).json()
        assert balance["posted"] == 0
        again = await asyncio.gather(*(_post(client, ledgers, step) for step in steps))
        assert [(r.status_code, r.json()) for r in again] == [(r.status_code, r.json()) for r in answers]


async def test_a_request_cancelled_while_queued_is_withdrawn_and_one_cancelled_in_its_group_applies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = asyncio.Event()
    entered = asyncio.Event()

    async def held(tx: Any, members: list[KeyedTransfer]) -> Any:
        entered.set()
        await gate.wait()
        return await create_transfers(tx, members)

    async with _service(tmp_path, limit=32) as (tally, client):
        ledgers = await _ledgers(client)
        monkeypatch.setattr(transfer_groups, "create_transfers", held)
        running_step = ("main", "k-running", _body("wallet", "shop", 7))
        queued_step = ("main", "k-queued", _body("wallet", "shop", 5))
        running = asyncio.create_task(_post(client, ledgers, running_step))
        await entered.wait()
        queued = asyncio.create_task(_post(client, ledgers, queued_step))
        assert tally.transfer_groups is not None
        groups_ = tally.transfer_groups
        await _until(lambda: groups_.queued == 1)
        running.cancel()
        queued.cancel()
        for task in (running, queued):
            with pytest.raises(asyncio.CancelledError):
                await task
        assert groups_.queued == 0  # withdrawn
        # The running group goes on; until it ends, its key stays in flight.
        in_flight = await _post(client, ledgers, running_step)
        assert (in_flight.status_code, in_flight.json()["code"]) == (409, "idempotency_key_in_use")
        gate.set()
        await _until(lambda: not tally.executor.in_flight)
        monkeypatch.undo()
        replay = await _post(client, ledgers, running_step)
        assert (replay.status_code, replay.headers.get("idempotent-replayed")) == (201, "true")
        fresh = await _post(client, ledgers, queued_step)
        assert (fresh.status_code, fresh.headers.get("idempotent-replayed")) == (201, None)
        balance = (await client.get("/v1/accounts/wallet/balance", headers=ledgers["main"].read)).json()
        assert balance["posted"] == 100 - 7 - 5


async def test_a_group_answers_its_members_before_the_next_group_begins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The next group's statements do not yield to the event loop: if they ran first, every member
    # would wait a whole group longer than its own for its answer.
    gate = asyncio.Event()
    order: list[str] = []

    async def held(tx: Any, members: list[KeyedTransfer]) -> Any:
        order.append("group " + ",".join(member.key.key for member in members))
        if len(order) == 1:
            await gate.wait()
        return await create_transfers(tx, members)

    create = TransferGroups.create

    async def answered(self: TransferGroups, member: KeyedTransfer, alone: Any) -> Any:
        outcome = await create(self, member, alone)
        order.append(f"answered {member.key.key}")
        return outcome

    async with _service(tmp_path, limit=32) as (tally, client):
        ledgers = await _ledgers(client)
        monkeypatch.setattr(transfer_groups, "create_transfers", held)
        monkeypatch.setattr(TransferGroups, "create", answered)
        first = asyncio.create_task(_post(client, ledgers, ("main", "k-1", _body("wallet", "shop", 1))))
        await _until(lambda: len(order) == 1)
        second = asyncio.create_task(_post(client, ledgers, ("main", "k-2", _body("wallet", "shop", 2))))
        assert tally.transfer_groups is not None
        groups_ = tally.transfer_groups
        await _until(lambda: groups_.queued == 1)
        gate.set()
        assert [(await task).status_code for task in (first, second)] == [201, 201]

    assert order == ["group k-1", "answered k-1", "group k-2", "answered k-2"]


async def _until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Wait for what other tasks of this loop do; nothing here can signal it."""

    async def poll() -> None:
        while not condition():  # noqa: ASYNC110 - a state of the service, polled
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), seconds)

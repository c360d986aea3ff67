"""Queued transfer batches: 202 at once, applied by a worker like the synchronous batch, once.

Every test runs on SQLite and on PostgreSQL. The worker runs inside the app, as in `tally serve`.
Reads that check a worker's effects ask for `Tally-Consistency: strong`: the worker's commits are
not covered by the client's consistency token, and a replica may not have them yet.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tally.bootstrap import Tally
from tally.services.batch_intake import QUEUE
from tally.services.queue_ports import NewJob
from tests.api.holds_support import balances, batch, legs, open_accounts, simple
from tests.observability.scrape import samples, total
from tests.support import (
    LedgerKeys,
    assert_problem,
    idem,
    new_ledger,
    serving_in_process,
    settings_for,
)

STRONG = {"Tally-Consistency": "strong"}
WAIT_SECONDS = 30.0  # a bound, only reached when a test fails

# Item 1 fails only because item 0 has already spent alice's money: items apply in order.
MIXED = [
    simple("alice", "bob", 600, id="m-0"),
    simple("alice", "carol", 600, id="m-1"),
    simple("alice", "alice", 5),
    simple("ghost", "bob", 5),
    {"legs": legs(("alice", "debit", 10), ("bob", "credit", 9))},
    simple("alice", "bob", 5, currency="EUR"),
    simple("bob", "carol", 100, id="m-6", pending=True),
    {"id": "m-7", "legs": legs(("alice", "debit", 30), ("bob", "credit", 10), ("carol", "credit", 20))},
]
MIXED_ERRORS = {
    1: "insufficient_funds",
    2: "same_account",
    3: "account_not_found",
    4: "unbalanced_transfer",
    5: "currency_mismatch",
}


async def submit(
    client: httpx.AsyncClient,
    ledger: LedgerKeys,
    transfers: list[dict[str, Any]],
    *,
    atomic: bool,
    key: str | None = None,
    request_id: str | None = None,
) -> httpx.Response:
    headers = {**ledger.write, **idem(key)}
    if request_id is not None:
        headers["X-Request-ID"] = request_id
    body = {"transfers": transfers, "atomic": atomic}
    return await client.post("/v1/transfer-batches", json=body, headers=headers)


async def accepted(
    client: httpx.AsyncClient, ledger: LedgerKeys, transfers: list[Any], **options: Any
) -> str:
    response = await submit(client, ledger, transfers, **options)
    assert response.status_code == 202, response.text
    body = response.json()
    assert set(body) == {"id", "status"}
    assert body["status"] == "queued"
    assert body["id"].startswith("tb_")
    return str(body["id"])


async def finished(client: httpx.AsyncClient, ledger: LedgerKeys, batch_id: str) -> dict[str, Any]:
    """Poll the batch until it is `completed` or `failed`; returns it."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        response = await client.get(f"/v1/transfer-batches/{batch_id}", headers={**ledger.read, **STRONG})
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        assert found["status"] in ("queued", "processing", "completed", "failed")
        if found["status"] in ("completed", "failed"):
            return found
        assert "results" not in found  # never partial results
        assert time.monotonic() < deadline, f"batch {batch_id} still {found['status']}"
        await asyncio.sleep(0.02)


async def feed(client: httpx.AsyncClient, ledger: LedgerKeys, **query: Any) -> list[dict[str, Any]]:
    """Every event of the ledger, oldest first, through `GET /v1/events`."""
    found: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        params = {"limit": 1000, **query, **({"after": after} if after else {})}
        response = await client.get("/v1/events", params=params, headers={**ledger.read, **STRONG})
        assert response.status_code == 200, response.text
        page = response.json()
        found += page["data"]
        if not page["data"]:
            return found
        after = page["next_cursor"]


async def strong_balances(client: httpx.AsyncClient, ledger: LedgerKeys, *ids: str) -> dict[str, Any]:
    return await balances(client, LedgerKeys(ledger.ledger_id, {}, {}, {**ledger.read, **STRONG}), *ids)


def comparable(result: dict[str, Any]) -> dict[str, Any]:
    """A result without what differs between two ledgers: server ids and timestamps."""
    shown = dict(result)
    if "transfer" in shown:
        transfer = {k: v for k, v in shown["transfer"].items() if k not in ("created_at", "posted_at")}
        if not str(transfer["id"]).startswith("m-"):
            transfer["id"] = "server id"
        shown["transfer"] = transfer
    return shown


async def test_a_queued_batch_is_accepted_at_once_then_applied_as_the_synchronous_batch_would(
    client: httpx.AsyncClient,
) -> None:
    synchronous, queued = await new_ledger(client, "sync"), await new_ledger(client, "queued")
    for ledger in (synchronous, queued):
        await open_accounts(client, ledger)
    expected = await batch(client, synchronous, MIXED, atomic=False)
    assert expected.status_code == 200, expected.text

    batch_id = await accepted(client, queued, MIXED, atomic=False)
    done = await finished(client, queued, batch_id)

    assert done["status"] == "completed"
    assert done["atomic"] is False
    assert done["completed_at"] >= done["created_at"]
    assert [comparable(r) for r in done["results"]] == [comparable(r) for r in expected.json()["results"]]
    for result in done["results"]:
        assert (result["status"] == "error") == (result["index"] in MIXED_ERRORS)
        if result["index"] in MIXED_ERRORS:
            assert result["error"]["code"] == MIXED_ERRORS[result["index"]]
    names = ("world", "alice", "bob", "carol")
    assert await strong_balances(client, queued, *names) == await strong_balances(client, synchronous, *names)
    assert await strong_balances(client, queued, "alice", "bob", "carol") == {
        "alice": (370, 0, 0, 370, 3),
        "bob": (610, 100, 0, 510, 3),
        "carol": (20, 0, 100, 20, 2),
    }


async def test_a_completed_batch_emits_one_event_and_its_transfers_carry_the_submit_request_id(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    await open_accounts(client, ledger)
    items = [simple("alice", "bob", 1), simple("alice", "carol", 2), simple("alice", "alice", 3)]
    batch_id = await accepted(client, ledger, items, atomic=False, request_id="submit-req-1")
    done = await finished(client, ledger, batch_id)

    completions = await feed(client, ledger, type="transfer_batch.completed")
    assert [(e["type"], e["request_id"], e["data"]) for e in completions] == [
        ("transfer_batch.completed", "submit-req-1", done)
    ]
    made = [r["transfer"]["id"] for r in done["results"] if r["status"] == "created"]
    created = [e for e in await feed(client, ledger) if e["request_id"] == "submit-req-1"]
    assert [(e["type"], e["data"].get("id")) for e in created] == [
        ("transfer.created", made[0]),
        ("transfer.created", made[1]),
        ("transfer_batch.completed", batch_id),
    ]


async def test_an_atomic_batch_with_a_bad_transfer_fails_with_each_error_and_applies_nothing(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    await open_accounts(client, ledger)
    before = await strong_balances(client, ledger, "world", "alice", "bob", "carol")
    events_before = await feed(client, ledger)
    batch_id = await accepted(client, ledger, MIXED, atomic=True, request_id="atomic-req")
    done = await finished(client, ledger, batch_id)

    assert done["status"] == "failed"
    assert [(r["index"], r["status"], r["error"]["code"]) for r in done["results"]] == [
        (index, "error", code) for index, code in MIXED_ERRORS.items()
    ]
    assert all(r["error"]["detail"] and "transfer" not in r for r in done["results"])
    assert await strong_balances(client, ledger, "world", "alice", "bob", "carol") == before
    assert (await client.get("/v1/transfers/m-0", headers={**ledger.read, **STRONG})).status_code == 404
    new = (await feed(client, ledger))[len(events_before) :]
    assert [(e["type"], e["request_id"], e["data"]) for e in new] == [
        ("transfer_batch.completed", "atomic-req", done)
    ]


async def test_an_atomic_batch_that_fits_applies_every_transfer_in_one_go(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    await open_accounts(client, ledger)
    items = [simple("alice", "bob", 600), simple("bob", "carol", 500), simple("carol", "alice", 500)]
    done = await finished(client, ledger, await accepted(client, ledger, items, atomic=True))
    assert done["status"] == "completed"
    assert [r["status"] for r in done["results"]] == ["created"] * 3
    assert await strong_balances(client, ledger, "alice", "bob", "carol") == {
        "alice": (900, 0, 0, 900, 3),
        "bob": (100, 0, 0, 100, 2),
        "carol": (0, 0, 0, 0, 2),
    }


async def test_a_replayed_submission_answers_the_same_batch_which_is_applied_once(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    await open_accounts(client, ledger)
    items = [simple("alice", "bob", 10), simple("alice", "carol", 20)]  # no client ids: only the key dedupes
    first = await submit(client, ledger, items, atomic=False, key="submit-once")
    again = await submit(client, ledger, items, atomic=False, key="submit-once")
    assert first.status_code == again.status_code == 202
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    done = await finished(client, ledger, first.json()["id"])
    assert done["status"] == "completed"

    later = await submit(client, ledger, items, atomic=False, key="submit-once")
    assert later.content == first.content  # replayed as it was answered: "queued"
    assert await strong_balances(client, ledger, "alice") == {"alice": (970, 0, 0, 970, 3)}
    assert len(await feed(client, ledger, type="transfer_batch.completed")) == 1
    reused = await submit(client, ledger, items[:1], atomic=False, key="submit-once")
    assert_problem(reused, 422, "idempotency_key_reused")


async def test_client_ids_already_applied_by_an_earlier_batch_read_as_existing(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    await open_accounts(client, ledger)
    items = [simple("alice", "bob", 100, id="pay-1"), simple("alice", "carol", 50, id="pay-2")]
    first = await finished(client, ledger, await accepted(client, ledger, items, atomic=False))
    second = await finished(client, ledger, await accepted(client, ledger, items, atomic=True))
    assert [r["status"] for r in first["results"]] == ["created", "created"]
    assert second["status"] == "completed"
    assert [r["status"] for r in second["results"]] == ["exists", "exists"]
    assert [r["transfer"] for r in second["results"]] == [r["transfer"] for r in first["results"]]
    assert await strong_balances(client, ledger, "alice") == {"alice": (850, 0, 0, 850, 3)}
    changed = [simple("alice", "bob", 101, id="pay-1")]
    conflict = await finished(client, ledger, await accepted(client, ledger, changed, atomic=False))
    assert conflict["results"][0]["error"]["code"] == "id_conflict"


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"transfers": [], "atomic": False}, ["body", "transfers"]),
        ({"transfers": [simple("a", "b", 1)] * 1001, "atomic": False}, ["body", "transfers"]),
        ({"transfers": [simple("a", "b", 1.5)], "atomic": False}, ["body", "transfers", 0, "amount"]),
        ({"transfers": [simple("a", "b", 1, tint="red")], "atomic": False}, ["body", "transfers", 0, "tint"]),
        ({"transfers": [simple("a", "b", 1)]}, ["body", "atomic"]),
        ({"transfers": [simple("a", "b", 1)], "atomic": "yes"}, ["body", "atomic"]),
        ({"transfers": [simple("a", "b", 1)], "atomic": True, "priority": 1}, ["body", "priority"]),
    ],
)
async def test_a_body_the_synchronous_batch_would_refuse_is_refused_before_anything_is_queued(
    client: httpx.AsyncClient, ledger: LedgerKeys, body: dict[str, Any], loc: list[Any]
) -> None:
    response = await client.post("/v1/transfer-batches", json=body, headers={**ledger.write, **idem()})
    problem = assert_problem(response, 422, "validation_error")
    assert loc in [error["loc"][: len(loc)] for error in problem["errors"]], problem["errors"]
    assert await feed(client, ledger) == []


async def test_a_submission_needs_a_write_key_and_an_idempotency_key(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    body = {"transfers": [simple("alice", "bob", 1)], "atomic": False}
    assert_problem(await client.post("/v1/transfer-batches", json=body), 401, "unauthenticated")
    read_only = await client.post("/v1/transfer-batches", json=body, headers={**ledger.read, **idem()})
    assert_problem(read_only, 403, "forbidden")
    keyless = await client.post("/v1/transfer-batches", json=body, headers=ledger.write)
    assert_problem(keyless, 400, "idempotency_key_required")


async def test_a_batch_of_another_ledger_is_not_found(client: httpx.AsyncClient, ledger: LedgerKeys) -> None:
    await open_accounts(client, ledger)
    batch_id = await accepted(client, ledger, [simple("alice", "bob", 1)], atomic=False)
    await finished(client, ledger, batch_id)
    other = await new_ledger(client, "other")
    for path in (f"/v1/transfer-batches/{batch_id}", "/v1/transfer-batches/tb_nothing"):
        assert_problem(await client.get(path, headers={**other.read, **STRONG}), 404, "not_found")


@pytest.fixture
async def tally_client(tmp_path: Path) -> AsyncIterator[tuple[Tally, httpx.AsyncClient]]:
    """A client of a fresh app, and the running Tally behind it (to queue jobs the API cannot)."""
    tally = Tally(settings_for(tmp_path))
    async with serving_in_process(tally) as c:
        yield tally, c


async def test_queue_metrics_show_runs_depths_and_dead_letters(
    tally_client: tuple[Tally, httpx.AsyncClient],
) -> None:
    tally, client = tally_client
    ledger = await new_ledger(client)
    await open_accounts(client, ledger)
    await finished(client, ledger, await accepted(client, ledger, [simple("alice", "bob", 1)], atomic=False))
    async with tally.database.write() as tx:
        now = await tx.now()
        # A job whose batch does not exist dies at once (Permanent); one due in an hour waits, ready.
        await tx.jobs.add(NewJob(QUEUE, {"batch": 10**9}, request_id="metrics-req"), now)
        await tx.jobs.add(NewJob(QUEUE, {"batch": 10**9 + 1}, run_at=now + timedelta(hours=1)), now)

    deadline = time.monotonic() + WAIT_SECONDS  # the depths are sampled every 5 s
    while True:
        found = samples((await client.get("/metrics")).text)
        if total(found, "tally_queue_dead_jobs", queue=QUEUE) == 1:
            break
        assert time.monotonic() < deadline, "the queue sampler never saw the dead job"
        await asyncio.sleep(0.1)
    assert total(found, "tally_queue_job_runs_total", queue=QUEUE, outcome="done") >= 1
    assert total(found, "tally_queue_job_runs_total", queue=QUEUE, outcome="dead") == 1
    assert total(found, "tally_queue_dead_lettered_total", queue=QUEUE) == 1
    assert total(found, "tally_queue_jobs", queue=QUEUE, status="dead") == 1
    assert total(found, "tally_queue_jobs", queue=QUEUE, status="ready") == 1
    assert total(found, "tally_queue_ready_jobs", queue=QUEUE) == 1
    age = [
        s.value
        for s in found
        if s.name == "tally_queue_oldest_ready_age_seconds" and s.labels == {"queue": QUEUE}
    ]
    assert age == [0.0]  # the ready job is not due yet
    assert total(found, "tally_queue_job_duration_seconds_count", queue=QUEUE) >= 2

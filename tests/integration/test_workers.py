"""`tally worker` processes applying queued transfer batches: crashes, shutdowns, several workers.

Invariants, in plain words:
- a worker killed mid-batch (`kill -9`) loses nothing and doubles nothing: once its lease runs
  out another worker resumes the batch, every transfer exists once, balances are exact, and the
  batch completes with one `transfer_batch.completed` event;
- on SIGTERM a worker exits with status 0; a job it had not started stays ready, and the one it was
  running finishes within the grace period or is given back (ready, attempt not spent);
- with PostgreSQL, two workers absorb a spike of batches: each is applied once;
- a worker's log lines about a batch carry the id of the request that submitted it.

The API runs in its own `tally serve` with its workers off, so that only `tally worker` processes
apply batches. The transfers here carry no client ids: only the queue's own idempotency (inbox
messages and saved progress) stands between a crash and a doubled transfer.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import (
    BACKENDS,
    LedgerKeys,
    Server,
    client_for,
    idem,
    new_ledger,
    open_account,
    start_server,
    transfer,
)

STRONG = {"Tally-Consistency": "strong"}
WAIT_SECONDS = 60.0  # a bound, only reached when a test fails
QUEUE = "transfer-batches"


@dataclass
class WorkerProcess:
    """A real `tally worker` process; its output goes to ``log_path``."""

    process: subprocess.Popen[bytes]
    log_path: Path

    def lines(self) -> list[dict[str, Any]]:
        found = []
        for line in self.log_path.read_text().splitlines():
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
        return found

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def server(backend: str, tmp_path: Path) -> Iterator[Server]:
    """`tally serve` with no workers of its own: only `tally worker` processes apply batches."""
    del backend
    running = start_server(tmp_path, {"TALLY_WORKER_ENABLED": "false"})
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def workers(server: Server) -> Iterator[list[WorkerProcess]]:
    """Worker processes the test starts (``start_worker``); any left running are killed at the end."""
    del server
    started: list[WorkerProcess] = []
    try:
        yield started
    finally:
        for worker in started:
            worker.stop()


def start_worker(directory: Path, started: list[WorkerProcess], **env: str) -> WorkerProcess:
    """Start `tally worker` on the test's database; return once it has started its loops."""
    url, _ = BACKENDS.urls(directory)
    log_path = directory / f"worker-{len(started)}.log"
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TALLY_")},
        "TALLY_DATABASE_URL": url,
        "TALLY_LOG_FORMAT": "json",
        "TALLY_WORKER_POLL_MS": "100",
        **{f"TALLY_{name.upper()}": value for name, value in env.items()},
    }
    tally = Path(sys.executable).parent / "tally"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(tally), "worker"], env=full_env, stdout=log, stderr=subprocess.STDOUT, cwd=directory
        )
    worker = WorkerProcess(process, log_path)
    started.append(worker)
    deadline = time.monotonic() + WAIT_SECONDS
    while not any(line.get("event") == "started" for line in worker.lines()):
        assert process.poll() is None, f"tally worker exited: {log_path.read_text()}"
        assert time.monotonic() < deadline, f"tally worker did not start: {log_path.read_text()}"
        time.sleep(0.05)
    return worker


def count(directory: Path, query: str, *params: Any) -> int:
    [(found,)] = BACKENDS.rows(directory, query, params)
    return int(found)


def transfers_of(directory: Path, ledger: LedgerKeys) -> int:
    return count(directory, "SELECT count(*) FROM transfers WHERE ledger_id = ?", ledger.ledger_id)


def job_of(directory: Path, batch_id: str) -> tuple[str, int]:
    [(status, attempts)] = BACKENDS.rows(
        directory, "SELECT status, attempts FROM jobs WHERE queue = ? AND dedupe_key = ?", (QUEUE, batch_id)
    )
    return str(status), int(attempts)


async def until(what: str, check: Any) -> Any:
    """Poll ``check`` (a coroutine function) until it returns something truthy; return it."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        found = await check()
        if found:
            return found
        assert time.monotonic() < deadline, f"still waiting for {what}"
        await asyncio.sleep(0.02)


async def funded_ledger(client: httpx.AsyncClient, accounts: int) -> LedgerKeys:
    """``world`` (unbounded) and accounts ``a0``…; ``a0`` holds 1,000,000."""
    ledger = await new_ledger(client)
    await open_account(client, ledger.write, id="world", normal_balance="debit", min_balance=None)
    for n in range(accounts):
        await open_account(client, ledger.write, id=f"a{n}")
    funded = await transfer(client, ledger.write, "world", "a0", 1_000_000)
    assert funded.status_code == 201, funded.text
    return ledger


def spread(count: int, accounts: int) -> list[dict[str, Any]]:
    """``count`` transfers from ``a0`` to the others, of amounts 1, 2, 3…, no client ids."""
    return [
        {"debit_account_id": "a0", "credit_account_id": f"a{1 + n % (accounts - 1)}", "amount": n + 1}
        for n in range(count)
    ]


def expected_balances(items: list[dict[str, Any]], accounts: int) -> dict[str, int]:
    posted = {f"a{n}": 0 for n in range(accounts)}
    posted["a0"] = 1_000_000
    for item in items:
        posted[item["debit_account_id"]] -= item["amount"]
        posted[item["credit_account_id"]] += item["amount"]
    return posted


async def posted_balances(client: httpx.AsyncClient, ledger: LedgerKeys, accounts: int) -> dict[str, int]:
    found = {}
    for n in range(accounts):
        response = await client.get(f"/v1/accounts/a{n}", headers={**ledger.read, **STRONG})
        assert response.status_code == 200, response.text
        found[f"a{n}"] = response.json()["balance"]["posted"]
    return found


async def submit(
    client: httpx.AsyncClient, ledger: LedgerKeys, items: list[dict[str, Any]], request_id: str
) -> str:
    response = await client.post(
        "/v1/transfer-batches",
        json={"transfers": items, "atomic": False},
        headers={**ledger.write, **idem(), "X-Request-ID": request_id},
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def batch_status(client: httpx.AsyncClient, ledger: LedgerKeys, batch_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/transfer-batches/{batch_id}", headers={**ledger.read, **STRONG})
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def completed(client: httpx.AsyncClient, ledger: LedgerKeys, batch_id: str) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        found = await batch_status(client, ledger, batch_id)
        return found if found["status"] == "completed" else None

    result: dict[str, Any] = await until(f"batch {batch_id} to complete", done)
    return result


async def completion_events(client: httpx.AsyncClient, ledger: LedgerKeys) -> list[dict[str, Any]]:
    response = await client.get(
        "/v1/events",
        params={"type": "transfer_batch.completed", "limit": 1000},
        headers={**ledger.read, **STRONG},
    )
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["data"]
    return found


def batch_lines(worker: WorkerProcess, batch_id: str) -> list[dict[str, Any]]:
    return [line for line in worker.lines() if line.get("batch_id") == batch_id]


async def test_a_worker_killed_mid_batch_is_relieved_after_its_lease_and_the_batch_applies_once(
    server: Server, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    accounts, items = 11, spread(400, 11)
    lease = {"job_lease_ms": "2000", "batch_chunk_size": "10"}  # 40 transactions: a slow batch
    async with client_for(server.base_url) as client:
        ledger = await funded_ledger(client, accounts)
        first = start_worker(tmp_path, workers, **lease)
        batch_id = await submit(client, ledger, items, "submit-killed")

        async def partly_applied() -> bool:
            return transfers_of(tmp_path, ledger) - 1 >= 100

        await until("the first chunks", partly_applied)
        os.kill(first.process.pid, signal.SIGKILL)
        first.process.wait()
        at_kill = transfers_of(tmp_path, ledger) - 1
        assert at_kill < 400, "the batch finished before the kill: make it slower"
        assert (await batch_status(client, ledger, batch_id))["status"] == "processing"
        assert job_of(tmp_path, batch_id) == ("running", 1)  # still leased to the dead worker

        second = start_worker(tmp_path, workers, **lease)
        done = await completed(client, ledger, batch_id)

        assert [r["status"] for r in done["results"]] == ["created"] * 400
        assert [r["index"] for r in done["results"]] == list(range(400))
        assert len({r["transfer"]["id"] for r in done["results"]}) == 400
        assert transfers_of(tmp_path, ledger) - 1 == 400
        assert await posted_balances(client, ledger, accounts) == expected_balances(items, accounts)
        events = await completion_events(client, ledger)
        assert [(e["data"]["id"], e["request_id"]) for e in events] == [(batch_id, "submit-killed")]
        created = count(
            tmp_path,
            "SELECT count(*) FROM events WHERE ledger_id = ? AND type = ? AND request_id = ?",
            ledger.ledger_id,
            "transfer.created",
            "submit-killed",
        )
        assert created == 400
        assert job_of(tmp_path, batch_id) == ("done", 2)

    resumed = batch_lines(second, batch_id)
    assert [line["event"] for line in resumed] == ["transfer batch started", "transfer batch completed"]
    assert 0 < resumed[0]["resumed_at"] <= at_kill
    assert all(line["request_id"] == "submit-killed" and line["job"] == QUEUE for line in resumed)
    assert [line["event"] for line in batch_lines(first, batch_id)] == ["transfer batch started"]


@pytest.mark.parametrize("grace_ms", [100, 30_000], ids=["release", "finish"])
async def test_sigterm_stops_a_worker_gracefully_and_leaves_unstarted_jobs_ready(
    server: Server, workers: list[WorkerProcess], tmp_path: Path, grace_ms: int
) -> None:
    # 1,000 items in chunks of 5: the 195 chunks left after the first 25 transfers cannot all commit
    # within the 100 ms grace, however fast the host, so the release case always finds work to give back.
    accounts, items = 6, spread(1000, 6)
    settings = {"batch_chunk_size": "5", "worker_shutdown_grace_ms": str(grace_ms)}
    async with client_for(server.base_url) as client:
        ledger = await funded_ledger(client, accounts)
        running = await submit(client, ledger, items, "submit-running")
        waiting = await submit(client, ledger, items[:10], "submit-waiting")
        worker = start_worker(tmp_path, workers, **settings)

        async def started() -> bool:
            return transfers_of(tmp_path, ledger) - 1 >= 25

        await until("the first batch to be under way", started)
        worker.process.send_signal(signal.SIGTERM)
        assert worker.process.wait(timeout=WAIT_SECONDS) == 0
        assert job_of(tmp_path, waiting) == ("ready", 0)  # one loop: never started
        assert (await batch_status(client, ledger, waiting))["status"] == "queued"
        if grace_ms == 100:
            assert job_of(tmp_path, running) == ("ready", 0)  # given back, attempt not spent
            assert (await batch_status(client, ledger, running))["status"] == "processing"
            assert transfers_of(tmp_path, ledger) - 1 < 1000
        else:
            assert job_of(tmp_path, running) == ("done", 1)
            assert (await batch_status(client, ledger, running))["status"] == "completed"
        assert "Traceback" not in worker.log_path.read_text()

        start_worker(tmp_path, workers, **settings)  # a fresh worker takes over at once: no lease to wait out
        for batch_id in (running, waiting):
            await completed(client, ledger, batch_id)
        assert transfers_of(tmp_path, ledger) - 1 == 1010
        assert await posted_balances(client, ledger, accounts) == expected_balances(
            items + items[:10], accounts
        )
        assert len(await completion_events(client, ledger)) == 2


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_two_workers_absorb_a_spike_of_batches_each_applied_once(
    server: Server, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    accounts, batches, per_batch = 8, 30, 10
    async with client_for(server.base_url) as client:
        ledger = await funded_ledger(client, accounts)
        pair = [start_worker(tmp_path, workers, batch_workers="2") for _ in range(2)]
        spike = [spread(per_batch, accounts) for _ in range(batches)]
        ids = await asyncio.gather(
            *(submit(client, ledger, items, f"spike-{n}") for n, items in enumerate(spike))
        )
        results = [await completed(client, ledger, batch_id) for batch_id in ids]

        assert all(r["status"] == "created" for done in results for r in done["results"])
        assert transfers_of(tmp_path, ledger) - 1 == batches * per_batch
        everything = [item for items in spike for item in items]
        assert await posted_balances(client, ledger, accounts) == expected_balances(everything, accounts)
        events = await completion_events(client, ledger)
        assert sorted((e["data"]["id"], e["request_id"]) for e in events) == sorted(
            (batch_id, f"spike-{n}") for n, batch_id in enumerate(ids)
        )
        assert {job_of(tmp_path, batch_id)[0] for batch_id in ids} == {"done"}

    completions = [
        line["batch_id"]
        for w in pair
        for line in w.lines()
        if line.get("event") == "transfer batch completed"
    ]
    assert sorted(completions) == sorted(ids)  # each batch completed once, by one worker
    assert all(any(line.get("event") == "transfer batch completed" for line in w.lines()) for w in pair)

"""The database ceilings of ``tally bench`` write a real ledger: after a run, its books balance.

Invariants, in plain words, checked on the rows each ceiling left behind:
- across the ledger's accounts, the signed balances of each currency sum to zero (debits = credits);
- each account's entries add up to its posted balance, one entry per version, and its newest entry
  carries that balance and that version;
- every transfer has two legs, two entries and one event; every request one idempotency record;
- the measurement counts each committed transaction once: as many requests as were written.
No timing is asserted; each ceiling runs for about a second.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tally.bench import ceiling, pgbench
from tally.bench.results import Measured
from tests.support import BACKENDS

ACCOUNTS = 20  # few, so that each account takes many entries


def rows(directory: Path, query: str) -> list[tuple[Any, ...]]:
    return BACKENDS.rows(directory, query)


def check_books(directory: Path, *, transfers: int, requests: int) -> None:
    currencies = rows(
        directory,
        "SELECT a.currency, sum(CASE a.normal_balance WHEN 'credit' THEN b.posted ELSE -b.posted END)"
        " FROM accounts AS a JOIN account_balances AS b ON b.account_pk = a.pk GROUP BY a.currency",
    )
    assert currencies, "no account"
    assert all(net == 0 for _, net in currencies), currencies
    accounts = rows(
        directory,
        "SELECT a.pk, a.normal_balance, b.posted, b.version,"
        " coalesce(sum(CASE e.direction WHEN 'credit' THEN e.amount ELSE -e.amount END), 0), count(e.pk)"
        " FROM accounts AS a JOIN account_balances AS b ON b.account_pk = a.pk"
        " LEFT JOIN entries AS e ON e.account_pk = a.pk GROUP BY a.pk, a.normal_balance, b.posted, b.version",
    )
    assert len(accounts) == ACCOUNTS
    for pk, normal, posted, version, net_credits, entries in accounts:
        sign = 1 if normal == "credit" else -1
        assert sign * net_credits == posted, (pk, posted, net_credits)
        assert entries == version, (pk, version, entries)
    newest = rows(
        directory,
        "SELECT b.account_pk, b.posted, b.version, e.posted_after, e.account_version"
        " FROM account_balances AS b JOIN entries AS e ON e.account_pk = b.account_pk"
        " WHERE e.pk = (SELECT max(pk) FROM entries WHERE account_pk = b.account_pk)",
    )
    assert newest
    assert all((posted, version) == (after, at) for _, posted, version, after, at in newest), newest
    counts = rows(
        directory,
        "SELECT (SELECT count(*) FROM transfers), (SELECT count(*) FROM transfer_legs),"
        " (SELECT count(*) FROM entries), (SELECT count(*) FROM events),"
        " (SELECT count(*) FROM idempotency_keys)",
    )
    assert counts == [(transfers, 2 * transfers, 2 * transfers, transfers, requests)]


def committed(measured: Measured) -> int:
    assert measured.errors == 0, measured.statuses
    assert measured.histogram.get_total_count() == measured.requests > 0
    return measured.requests


@pytest.fixture
def sqlite() -> Iterator[None]:
    with BACKENDS.using("sqlite"):
        yield


@pytest.fixture
def postgresql() -> Iterator[None]:
    with BACKENDS.using("postgresql"):
        yield


@pytest.mark.usefixtures("sqlite")
async def test_the_sqlite_single_ceiling_commits_one_balanced_transfer_per_request(tmp_path: Path) -> None:
    measured = await ceiling.sqlite_single(tmp_path / "tally.db", ACCOUNTS, 1.0)

    assert (measured.scenario, measured.database, measured.units_per_request) == (
        "ceiling-single",
        "sqlite",
        1,
    )
    requests = committed(measured)
    check_books(tmp_path, transfers=requests, requests=requests)


@pytest.mark.usefixtures("sqlite")
async def test_the_sqlite_batch_ceiling_commits_a_batch_of_balanced_transfers_per_request(
    tmp_path: Path,
) -> None:
    measured = await ceiling.sqlite_batch(tmp_path / "tally.db", ACCOUNTS, 1.0, batch=50)

    assert (measured.scenario, measured.units_per_request) == ("ceiling-batch", 50)
    requests = committed(measured)
    check_books(tmp_path, transfers=50 * requests, requests=requests)


@pytest.mark.usefixtures("postgresql")
async def test_the_postgresql_ceiling_logs_each_pgbench_call_and_each_call_is_a_balanced_transfer(
    tmp_path: Path,
) -> None:
    url, _ = BACKENDS.urls(tmp_path)  # a fresh database holding the head schema

    measured = await pgbench.postgres_single(url, ACCOUNTS, clients=4, seconds=1.0)

    assert (measured.scenario, measured.database, measured.clients) == ("ceiling-single", "postgresql", 4)
    requests = committed(measured)
    check_books(tmp_path, transfers=requests, requests=requests)


def test_a_pgbench_log_gives_latencies_and_failures_and_leaves_the_warm_up_out() -> None:
    # client transaction latency_us script epoch_s epoch_us: ends at 100.5, 101.0, 102.0 and 103.0 s.
    lines = ["0 0 500000 0 100 500000", "1 0 100000 0 101 0", "0 1 failed 0 102 0", "1 1 1000 0 103 0"]

    measured = pgbench.measured_from_log(lines, Measured("ceiling-single", "postgresql", "closed", 2, 0), 0.8)

    # The first starts at 100.0 s, so the warm-up lasts until 100.8 s: the first call began before.
    assert measured.statuses == {"201": 2, "error failed": 1}
    assert measured.histogram.get_total_count() == 2
    assert measured.seconds == pytest.approx(103.0 - 100.8)


def floor_module() -> Any:
    """``scripts/bench_db_floor.py``, which is a script, not a package module."""
    path = Path(__file__).resolve().parents[2] / "scripts" / "bench_db_floor.py"
    spec = importlib.util.spec_from_file_location("bench_db_floor", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.usefixtures("sqlite")
@pytest.mark.parametrize("commit_on_loop", [False, True], ids=["commit-in-thread", "commit-on-loop"])
async def test_the_floor_service_writes_grouped_singles_and_a_batch_as_balanced_books(
    tmp_path: Path, commit_on_loop: bool
) -> None:
    floor = floor_module()
    books = ceiling.Books(tmp_path / "tally.db", ACCOUNTS)
    app = floor.Floor(books, commit_on_loop=commit_on_loop, spin_us=0)
    calls = floor.Calls(ACCOUNTS)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://floor") as client:

        async def send(call: Any) -> httpx.Response:
            return await client.request(call.method, call.path, content=call.body, headers=dict(call.headers))

        singles = await asyncio.gather(*(send(calls.single()) for _ in range(40)))
        batch = await send(calls.batch())

    assert {answer.status_code for answer in singles} == {201}
    assert all(answer.json()["status"] == "posted" for answer in singles)
    assert batch.status_code == 200
    assert len(batch.json()["results"]) == floor.BATCH_SIZE
    check_books(tmp_path, transfers=40 + floor.BATCH_SIZE, requests=41)


@pytest.mark.usefixtures("sqlite")
async def test_the_floor_service_rolls_a_failed_write_back_and_goes_on(tmp_path: Path) -> None:
    floor = floor_module()
    app = floor.Floor(ceiling.Books(tmp_path / "tally.db", ACCOUNTS), commit_on_loop=False, spin_us=0)
    calls = floor.Calls(ACCOUNTS)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://floor") as client:
        first = calls.single()
        headers = dict(first.headers)
        assert (await client.post(first.path, content=first.body, headers=headers)).status_code == 201
        # The same idempotency key again: its record's insert fails inside the transaction.
        failed = calls.single()
        with pytest.raises(sqlite3.IntegrityError):
            await client.post(first.path, content=failed.body, headers=headers)
        # The same transfer under a fresh key: its accounts' balances must be as before the failure.
        after = calls.single()
        answer = await client.post(after.path, content=failed.body, headers=dict(after.headers))

    assert answer.status_code == 201
    check_books(tmp_path, transfers=2, requests=2)

"""Group commit on SQLite (``store.commit_groups``): shared COMMITs, isolated requests.

Concurrent write requests queue for SQLite's one writer and share COMMITs; concurrent single
transfers are, by default, also coalesced into one transaction per group (ADR 0042), and the
first test runs both ways. What must hold:
- money is conserved and each request takes effect once: a request and its retry with the same
  ``Idempotency-Key``, sent at the same moment, get the same answer and one transfer;
- a rejection is its own: the 422s of the requests that found the account empty leave their
  neighbours in the same COMMIT applied, and are themselves stored for replay;
- a failure that ends SQLite's whole transaction fails every member of the group, applies
  nothing of it, and leaves the writer usable.

The sharing is real, not assumed: ``tally_db_commit_group_size`` shows fewer COMMITs than writes,
and ``tally_transfer_group_size`` fewer groups than transfers.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from tally.domain.errors import DeadlineExceeded, TransientConflict
from tally.domain.keys import Ledger
from tally.services.deadline import Deadline, set_deadline
from tally.store.sqlite import SqliteDatabase
from tests.observability.scrape import Sample, samples, total
from tests.support import asgi_client, funded_account, new_ledger, open_account, running_sqlite, settings_for

FUNDS = 1_000
AMOUNT = 50
REQUESTS = 40  # twice what the funds allow: half are refused
SINKS = 8


@pytest.mark.parametrize("group_limit", [1, 32], ids=["commit-groups", "transfer-groups"])
async def test_concurrent_transfers_share_commits_yet_each_applies_once_and_rejections_stay_their_own(
    tmp_path: Path, group_limit: int
) -> None:
    # group_limit 1: each request its own write transaction, queued for SQLite's writer, sharing
    # COMMITs (ADR 0035). 32: the requests coalesced into groups of transfers, each group one
    # transaction (ADR 0042). Either way each request must apply once and refuse alone.
    database_url = f"sqlite:///{tmp_path / 'g.db'}"
    settings = settings_for(tmp_path, database_url=database_url, transfer_group_limit=group_limit)
    async with asgi_client(settings) as client:
        keys = await new_ledger(client)
        await funded_account(client, keys, "source", FUNDS)
        for sink in range(SINKS):
            await open_account(client, keys.write, id=f"sink-{sink}")
        before = samples((await client.get("/metrics")).text)

        async def send(number: int) -> httpx.Response:
            body = {"debit_account_id": "source", "credit_account_id": f"sink-{number % SINKS}"}
            headers = {**keys.write, "Idempotency-Key": f"move-{number}"}
            return await client.post("/v1/transfers", json={**body, "amount": AMOUNT}, headers=headers)

        # Each request twice at once, same key: the second is a retry racing the first.
        answers = await asyncio.gather(*(send(number) for number in range(REQUESTS) for _ in range(2)))
        after = samples((await client.get("/metrics")).text)

        # Of two at once, one is answered and the other is the same answer replayed, or told the
        # key is in use (API.md); sent again now, it replays what the key got, rejections included.
        pairs = [answers[i : i + 2] for i in range(0, len(answers), 2)]
        outcomes: Counter[int] = Counter()
        for number, pair in enumerate(pairs):
            answered = [r for r in pair if not _in_use(r)]
            assert answered, [r.json() for r in pair]
            outcomes[answered[0].status_code] += 1
            again = await send(number)
            for response in answered:
                assert (response.status_code, response.json()) == (again.status_code, again.json())
            if again.status_code == 422:
                assert again.json()["code"] == "insufficient_funds"
        assert outcomes == {201: FUNDS // AMOUNT, 422: REQUESTS - FUNDS // AMOUNT}, outcomes

        source = await client.get("/v1/accounts/source/balance", headers={**keys.read, **STRONG})
        assert source.json()["posted"] == 0
        sinks = 0
        for sink in range(SINKS):
            got = await client.get(f"/v1/accounts/sink-{sink}/balance", headers={**keys.read, **STRONG})
            sinks += got.json()["posted"]
        assert sinks == FUNDS
        listed = await client.get("/v1/transfers?account_id=source&limit=100", headers=keys.read)
        # The funding and one transfer per 201, none twice.
        ids = [item["id"] for item in listed.json()["data"]]
        assert len(ids) == len(set(ids)) == 1 + FUNDS // AMOUNT

    if group_limit == 1:
        commits = _groups(after) - _groups(before)
        members = _members(after) - _members(before)
        assert members >= REQUESTS  # each request's one write transaction (a retry replays in its own)
        assert commits < members, (commits, members)  # some COMMITs carried more than one
    else:
        groups = _grew(before, after, "tally_transfer_group_size_count")
        written = _grew(before, after, "tally_transfer_group_size_sum")
        assert written >= REQUESTS  # every request was written in some group
        assert groups < written, (groups, written)  # some groups carried more than one


STRONG = {"Tally-Consistency": "strong"}


def _in_use(response: httpx.Response) -> bool:
    return response.status_code == 409 and response.json()["code"] == "idempotency_key_in_use"


def _grew(before: list[Sample], after: list[Sample], name: str) -> float:
    return total(after, name) - total(before, name)


def _groups(found: list[Sample]) -> float:
    return total(found, "tally_db_commit_group_size_count")


def _members(found: list[Sample]) -> float:
    return total(found, "tally_db_commit_group_size_sum")


# -- the adapter itself: what a failing member does to its group ------------------------------------


class Groups:
    """A ``ConnectionObserver`` that keeps the size of each COMMIT's group."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def committed_group(self, members: int) -> None:
        self.sizes.append(members)

    def waited(self, role: str, seconds: float) -> None:
        pass

    def holding(self, role: str, delta: int) -> None:
        pass

    def replication(self, primary_up: bool, lags: dict[str, float]) -> None:
        pass


@pytest.fixture
def groups() -> Groups:
    return Groups()


@pytest.fixture
async def database(tmp_path: Path, groups: Groups) -> AsyncIterator[SqliteDatabase]:
    async with running_sqlite(tmp_path / "store.db", observer=groups) as db:
        yield db


# An INSERT that never ends: interrupted, SQLite rolls the whole transaction back, not the statement.
ENDLESS_INSERT = text(
    "INSERT INTO ledgers (id, name, created_at)"
    " WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c)"
    " SELECT 'led_' || x, 'x', 0 FROM c WHERE x < 0"
)


async def _add(database: SqliteDatabase, ledger_id: str, *, then: str | None = None) -> None:
    if then == "endless":
        set_deadline(Deadline.after(0.2))  # this task's budget: its statements are interrupted at it
    async with database.write() as tx:
        await tx.ledgers.add(Ledger(ledger_id, ledger_id, datetime.now(UTC)))
        # Let the writers started with this one queue behind it (asyncio runs them in order).
        await asyncio.sleep(0)
        if then == "fail":
            raise ValueError("this request fails after writing")
        if then == "endless":
            await tx.connection.execute(ENDLESS_INSERT)


async def _exists(database: SqliteDatabase, ledger_id: str) -> bool:
    async with database.read() as tx:
        return await tx.ledgers.get(ledger_id) is not None


async def test_a_member_that_fails_is_rolled_back_alone(database: SqliteDatabase, groups: Groups) -> None:
    # Started together, the three queue for the writer and share one transaction.
    groups.sizes.clear()
    results = await asyncio.gather(
        _add(database, "led_a"), _add(database, "led_b", then="fail"), _add(database, "led_c"),
        return_exceptions=True,
    )  # fmt: skip
    assert results[0] is None
    assert results[2] is None
    assert isinstance(results[1], ValueError)
    assert [await _exists(database, name) for name in ("led_a", "led_b", "led_c")] == [True, False, True]
    assert groups.sizes == [2]  # one COMMIT for the two that succeeded


async def test_a_failure_that_ends_the_transaction_fails_the_whole_group_and_applies_none_of_it(
    database: SqliteDatabase, groups: Groups
) -> None:
    groups.sizes.clear()
    results = await asyncio.gather(
        _add(database, "led_first"), _add(database, "led_endless", then="endless"),
        return_exceptions=True,
    )  # fmt: skip
    set_deadline(None)
    assert isinstance(results[1], DeadlineExceeded)
    # The first had finished its part, but its rows went with the transaction: it must not
    # answer success. TransientConflict: the services run it again (ADR 0020).
    assert isinstance(results[0], TransientConflict)
    assert not await _exists(database, "led_first")
    assert not await _exists(database, "led_endless")
    assert groups.sizes == []  # no COMMIT: the group was rolled back
    await _add(database, "led_after")  # the writer goes on
    assert await _exists(database, "led_after")
    assert groups.sizes == [1]


async def test_a_writer_alone_commits_its_own_group_before_it_returns(
    database: SqliteDatabase, groups: Groups, tmp_path: Path
) -> None:
    """Nobody queued: one COMMIT for one write, done when ``write()`` returns: the file is free."""
    groups.sizes.clear()
    await _add(database, "led_alone")
    assert groups.sizes == [1]
    with sqlite3.connect(tmp_path / "store.db", timeout=0) as other:  # would raise "locked" at once
        other.execute("UPDATE ledgers SET name = 'renamed' WHERE id = 'led_alone'")
    other.close()

"""The move of account balances to ``account_balances`` (ADR 0034), phase by phase, on both databases.

A running Tally keeps serving while the schema goes: baseline shape → expanded (triggers mirror
the old columns) → backfilled (this code switches to the new table) → contracted → and back down
again. In every phase the balances the API shows are the ones before the step, every account's
entries add up to its balance, and while both shapes exist they hold the same numbers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command

from tally.bootstrap import Tally
from tally.jobs.balances_backfill import BackfillAccountBalances
from tally.jobs.runs import OutcomeStatus, run_batch_job
from tally.store.schema import alembic_config
from tests.integration.postgres_support import STRONG, check_books, listed
from tests.support import (
    BACKENDS,
    LedgerKeys,
    idem,
    new_ledger,
    open_account,
    serving_in_process,
    settings_for,
)

pytestmark = pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)

LEASE = timedelta(seconds=30)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    with BACKENDS.using(request.param) as name:
        yield name


async def migrate(url: str, action: str, target: str) -> None:
    """``alembic upgrade|downgrade target`` on ``url``, with a grace for processes to look again that
    fits this test's one process, which looks every 50 ms."""
    config = alembic_config()
    config.set_main_option("sqlalchemy.url", url)
    config.attributes["process_grace_seconds"] = 0.25
    run = command.upgrade if action == "upgrade" else command.downgrade
    await asyncio.to_thread(run, config, target)


@asynccontextmanager
async def serving(tmp_path: Path) -> AsyncIterator[tuple[Tally, httpx.AsyncClient]]:
    settings = settings_for(
        tmp_path, replica_urls=[], schema_check_ms=50, job_schedule=[], cache_invalidation="off"
    )
    tally = Tally(settings)
    tally.database.balance_shape.switch_delay = 0.0
    async with serving_in_process(tally, tokens=False) as client:
        yield tally, client


async def until_phase(tally: Tally, phase: str) -> None:
    deadline = time.monotonic() + 10
    while tally.database.balance_shape.phase != phase:
        assert time.monotonic() < deadline, f"still {tally.database.balance_shape.phase}, not {phase}"
        await asyncio.sleep(0.02)


async def activity(client: httpx.AsyncClient, keys: LedgerKeys, round_: int) -> None:
    """An account opened, money moved, a hold placed and another posted: every balance column moves."""
    new = await open_account(client, keys.write, id=f"acc-{round_}")
    moves = [("funding", "acc-0", 500), ("acc-0", new["id"], 120), ("funding", new["id"], 7)]
    for debit, credit, amount in moves:
        body = {"debit_account_id": debit, "credit_account_id": credit, "amount": amount}
        response = await client.post("/v1/transfers", json=body, headers={**keys.write, **idem()})
        assert response.status_code == 201, response.text
    hold = {"debit_account_id": "acc-0", "credit_account_id": new["id"], "amount": 11, "pending": True}
    for post in (False, True):
        held = await client.post("/v1/transfers", json=hold, headers={**keys.write, **idem()})
        assert held.status_code == 201, held.text
        if post:
            path = f"/v1/transfers/{held.json()['id']}/post"
            assert (await client.post(path, json={}, headers={**keys.write, **idem()})).status_code == 200


async def balances(client: httpx.AsyncClient, keys: LedgerKeys) -> dict[str, Any]:
    accounts = await listed(client, "/v1/accounts", keys.read)
    return {a["id"]: (a["balance"], a["version"], a["updated_at"]) for a in accounts}


def shapes_agree(tmp_path: Path) -> None:
    """While both shapes exist, every account holds the same numbers in each."""
    rows = BACKENDS.rows(
        tmp_path,
        "SELECT a.pk, a.posted, a.pending_debits, a.pending_credits, a.version, b.account_pk,"
        " b.posted, b.pending_debits, b.pending_credits, b.version"
        " FROM accounts a LEFT JOIN account_balances b ON b.account_pk = a.pk",
    )
    assert rows
    for row in rows:
        assert row[5] is not None, f"account {row[0]} has no account_balances row"
        assert row[1:5] == row[6:10], row


async def step(
    tmp_path: Path, tally: Tally, client: httpx.AsyncClient, keys: LedgerKeys, *, to: tuple[str, str, str]
) -> None:
    """Run one migration under the running app; once it sees the new phase, the data reads the same."""
    action, target, phase = to
    before = await balances(client, keys)
    url, _ = BACKENDS.urls(tmp_path, empty=True)
    await migrate(url, action, target)
    await until_phase(tally, phase)
    assert await balances(client, keys) == before


async def test_a_running_tally_keeps_every_balance_while_they_move_to_their_own_table_and_back(
    tmp_path: Path, backend: str
) -> None:
    url, _ = BACKENDS.urls(tmp_path, empty=True)
    await migrate(url, "upgrade", "0004_audit_events")  # before the change; this Tally needs 0004
    async with serving(tmp_path) as (tally, client):
        assert tally.database.balance_shape.phase == "before"
        keys = await new_ledger(client)
        await open_account(client, keys.write, id="funding", min_balance=None, normal_balance="debit")
        await open_account(client, keys.write, id="acc-0")
        await activity(client, keys, 1)

        await step(tmp_path, tally, client, keys, to=("upgrade", "0003_account_balances", "expanded"))
        await activity(client, keys, 2)  # written to the old columns, mirrored by the triggers
        rows = BACKENDS.rows(tmp_path, "SELECT count(*) FROM account_balances")
        assert 0 < rows[0][0] < len(await balances(client, keys))  # untouched accounts are not copied

        outcome = await run_batch_job(
            tally.database, BackfillAccountBalances(batch=2), "all", owner="test", lease=LEASE, progress=None
        )
        assert outcome.status is OutcomeStatus.FINISHED
        shapes_agree(tmp_path)
        await until_phase(tally, "expanded, backfilled")
        assert tally.database.balance_shape.uses_new_table
        await activity(client, keys, 3)  # written to the table, mirrored back to the old columns
        shapes_agree(tmp_path)

        await step(tmp_path, tally, client, keys, to=("upgrade", "contract@head", "contracted"))
        await activity(client, keys, 4)

        await step(tmp_path, tally, client, keys, to=("downgrade", "contract@-1", "expanded, backfilled"))
        shapes_agree(tmp_path)
        await activity(client, keys, 5)
        shapes_agree(tmp_path)

        await step(tmp_path, tally, client, keys, to=("downgrade", "0003_account_balances@-1", "before"))
        await activity(client, keys, 6)
        await check_books(client, keys.read)
        assert (await client.get("/v1/accounts/acc-6", headers={**keys.read, **STRONG})).status_code == 200

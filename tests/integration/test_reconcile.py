"""The ``reconcile`` job on SQLite and PostgreSQL: a healthy ledger (postings, holds, a partial
post, a void, a reversal) has no difference; a stored balance changed behind Tally's back and an
unbalanced entry are found and reported in the result, the log and the metrics.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from tally.bootstrap import Tally
from tally.jobs.reconcile import ReconcileJob
from tally.jobs.runs import OutcomeStatus, RunOutcome, new_owner, run_batch_job
from tally.services.ports import Database
from tally.store import tables as t
from tally.store.repositories.reconciliation import SqlReconciliationRepository
from tests.batch_jobs_support import run_job
from tests.observability.scrape import samples, total
from tests.support import (
    LedgerKeys,
    idem,
    new_ledger,
    open_account,
    primary_read,
    serving_in_process,
    settings_for,
    transfer,
)


@dataclass
class Books:
    tally: Tally
    client: httpx.AsyncClient
    ledger: LedgerKeys
    accounts: dict[str, str]


@pytest.fixture
async def books(backend: str, tmp_path: Path) -> AsyncIterator[Books]:
    tally = Tally(settings_for(tmp_path, hold_sweep_seconds=3600.0, job_schedule=[]))
    async with serving_in_process(tally, tokens=False) as client:
        ledger = await new_ledger(client)
        world = await open_account(client, ledger.write, normal_balance="debit", min_balance=None)
        names = {"world": world["id"]}
        for name in ("alice", "bob", "carol"):
            names[name] = (await open_account(client, ledger.write, id=name))["id"]
        await open_account(client, ledger.write, id="euro", currency="EUR")
        yield Books(tally, client, ledger, names)


async def make_history(books: Books) -> None:
    write, ids = books.ledger.write, books.accounts

    async def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await books.client.post(path, json=body, headers={**write, **idem()})
        assert response.is_success, response.text
        found: dict[str, Any] = response.json()
        return found

    for name, amount in (("alice", 1000), ("bob", 300)):
        assert (await transfer(books.client, write, ids["world"], ids[name], amount)).is_success
    hold = {"debit_account_id": ids["alice"], "credit_account_id": ids["bob"], "pending": True}
    partly = await post("/v1/transfers", {**hold, "amount": 50})
    voided = await post("/v1/transfers", {**hold, "amount": 20})
    await post("/v1/transfers", {**hold, "amount": 7})  # stays open: pending on both sides
    await post(f"/v1/transfers/{partly['id']}/post", {"amount": 30})
    await post(f"/v1/transfers/{voided['id']}/void", {})
    moved = await post(
        "/v1/transfers", {"debit_account_id": ids["bob"], "credit_account_id": ids["carol"], "amount": 40}
    )
    await post(f"/v1/transfers/{moved['id']}/reverse", {"amount": 15})


async def reconcile(database: Database, period: str) -> RunOutcome:
    job = ReconcileJob(batch=2)  # several steps
    return await run_batch_job(
        database, job, period, owner=new_owner(), lease=timedelta(seconds=30), progress=None
    )


def balance_tables() -> list[Any]:
    """Wherever the schema keeps the stored ``posted`` (it moves to ``account_balances``, ADR 0034)."""
    return [table for table in t.metadata.tables.values() if "posted" in table.c]


async def corrupt_posted(database: Database, account_id: str, by: int) -> None:
    async with database.write() as tx:
        [account] = [a for a in await tx.accounts.scan(None, 100) if a.id == account_id]
        for table in balance_tables():
            key = table.c.account_pk if "account_pk" in table.c else table.c.pk
            await tx.connection.execute(  # type: ignore[attr-defined]
                update(table).where(key == account.pk).values(posted=table.c.posted + by)
            )


async def add_unbalanced_credit(database: Database, account_id: str, amount: int) -> None:
    """One posting entry with no matching debit, and the account's stored balance moved to match,
    so the account reconciles but its currency no longer sums to zero."""
    await corrupt_posted(database, account_id, amount)
    async with database.write() as tx:
        conn = tx.connection  # type: ignore[attr-defined]
        [account] = [a for a in await tx.accounts.scan(None, 100) if a.id == account_id]
        transfer_pk = (await conn.execute(select(t.transfers.c.pk).limit(1))).scalar_one()
        last = (
            await conn.execute(
                select(t.entries.c.account_version, t.entries.c.created_at)
                .where(t.entries.c.account_pk == account.pk)
                .order_by(t.entries.c.created_at.desc(), t.entries.c.pk.desc())
                .limit(1)
            )
        ).one()
        await conn.execute(
            t.entries.insert().values(
                account_pk=account.pk, transfer_pk=transfer_pk, kind="posting", direction="credit",
                amount=amount, posted_after=account.balance.posted, pending_debits_after=0,
                pending_credits_after=account.balance.pending_credits,
                account_version=last.account_version, created_at=last.created_at + 1,
            )
        )  # fmt: skip


async def test_a_healthy_ledger_reconciles(books: Books) -> None:
    await make_history(books)
    outcome = await reconcile(books.tally.database, "2025-03-01")
    assert outcome.status is OutcomeStatus.FINISHED
    result = outcome.result
    assert result is not None
    assert result["ok"] is True, result
    assert (result["accounts"], result["difference_count"], result["differences"]) == (5, 0, [])
    usd = result["currencies"]["USD"]
    assert usd["balanced"]
    assert usd["debits"] == usd["credits"] > 0
    assert usd["pending_debits"] == usd["pending_credits"] == 7
    assert result["unbalanced_currencies"] == []


async def test_transfers_committed_while_a_step_reads_cause_no_difference(
    books: Books, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each step reads one snapshot and holds no write lock: a transfer commits between its read of
    the accounts and of their entries (on SQLite it could not while a step held the writer), and
    the step sees neither half of it; the last step's sums see every committed transfer whole."""
    await make_history(books)
    write, ids = books.ledger.write, books.accounts
    committed = 0
    sums = SqlReconciliationRepository.entry_totals

    async def entry_totals(repository: SqlReconciliationRepository, pks: Any) -> Any:
        nonlocal committed
        response = await transfer(books.client, write, ids["world"], ids["alice"], 5)
        assert response.is_success, response.text
        committed += 1
        return await sums(repository, pks)

    monkeypatch.setattr(SqlReconciliationRepository, "entry_totals", entry_totals)
    result = (await reconcile(books.tally.database, "2025-03-04")).result
    assert result is not None
    assert committed >= 3  # one per step of two accounts, five accounts
    assert (result["ok"], result["difference_count"], result["accounts"]) == (True, 0, 5), result
    assert result["currencies"]["USD"]["balanced"]


async def test_a_corrupted_balance_and_a_broken_zero_sum_are_reported(books: Books) -> None:
    await make_history(books)
    database = books.tally.database
    await corrupt_posted(database, "bob", 1)
    first = (await reconcile(database, "2025-03-02")).result
    assert first is not None
    assert first["ok"] is False
    assert first["difference_count"] == 1
    [difference] = first["differences"]
    assert difference["account_id"] == "bob"
    assert difference["field"] == "posted"
    assert difference["stored"] == difference["recomputed"] + 1
    assert first["unbalanced_currencies"] == []

    await add_unbalanced_credit(database, "carol", 3)
    second = (await reconcile(database, "2025-03-03")).result
    assert second is not None
    assert second["ok"] is False
    assert [d["account_id"] for d in second["differences"]] == ["bob"]  # carol's books agree with her entries
    assert second["unbalanced_currencies"] == ["USD"]
    usd = second["currencies"]["USD"]
    assert usd["credits"] - usd["debits"] == 3

    assert books.tally.telemetry is not None
    async with primary_read(database) as tx:
        [latest] = await tx.job_runs.recent("reconcile", 1)
    books.tally.telemetry.jobs.reconciled(latest)  # what every process's sampler does
    found = samples((await books.client.get("/metrics")).text)
    assert total(found, "tally_reconcile_differences", kind="balance") == 1
    assert total(found, "tally_reconcile_differences", kind="zero_sum") == 1
    assert total(found, "tally_reconcile_last_run_timestamp_seconds") > 0


async def test_tally_jobs_run_reconcile_logs_each_difference_and_exits_with_status_2(tmp_path: Path) -> None:
    """On SQLite, through the real command: the error lines, the summary, and the exit status."""
    tally = Tally(settings_for(tmp_path, hold_sweep_seconds=3600.0, job_schedule=[]))
    async with serving_in_process(tally, tokens=False) as client:
        ledger = await new_ledger(client)
        world = await open_account(client, ledger.write, normal_balance="debit", min_balance=None)
        await open_account(client, ledger.write, id="alice")
        assert (await transfer(client, ledger.write, world["id"], "alice", 25)).is_success
        await corrupt_posted(tally.database, "alice", -5)
    ran = run_job(tmp_path / "tally.db", "reconcile", "2025-03-05", job_schedule="off")
    assert ran.returncode == 2, ran.stderr
    lines = [json.loads(line) for line in ran.stderr.splitlines() if line.startswith("{")]
    [difference] = [line for line in lines if line["event"] == "reconcile found a balance difference"]
    assert (difference["account_id"], difference["field"], difference["stored"]) == ("alice", "posted", 20)
    [summary] = [line for line in lines if line["event"] == "reconcile finished"]
    assert (summary["level"], summary["ok"], summary["difference_count"]) == ("error", False, 1)

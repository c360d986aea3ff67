"""``tally jobs run statements`` and ``tally jobs run reconcile`` killed with SIGKILL mid-run, then run
again: the outcome equals that of an uninterrupted run on a copy of the same database file, and
nothing was counted twice.

The data: 1,000 accounts on SQLite, each with postings on one past day and the day before it, so
that with 40 accounts per step both jobs take about 25 steps (one transaction each). The
uninterrupted run and the killed one run side by side, on two copies.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import subprocess
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from tally.domain.accounts import Bounds, Direction, NormalBalance
from tally.domain.transfers import LegRequest, TransferRequest
from tally.services.accounts import OpenAccount, open_account
from tally.services.audit import ROOT_ACTOR, Actor
from tally.services.ledgers import create_ledger
from tally.services.transfers import BatchItem, create_batch
from tally.store.codec import to_micros
from tally.store.sqlite import SqliteDatabase
from tests.batch_jobs_support import WAIT_SECONDS, jobs_command, kill_mid_run, run_job, tally_env

ACCOUNTS = 1000
DAY = date(2025, 3, 2)
# About 25 steps a run; NORMAL synchronous: a SIGKILL is a process crash, which it survives.
SETTINGS = {"job_batch_size": "40", "job_schedule": "off", "sqlite_synchronous": "NORMAL"}


def _micros(day: date) -> int:
    return to_micros(datetime(day.year, day.month, day.day, tzinfo=UTC))


async def _ring(database: SqliteDatabase, ledger_id: str, day: date, amount: int) -> None:
    """Every account pays the next one ``amount`` (plus its index), all dated on ``day``."""
    items = [
        BatchItem(
            TransferRequest(
                (
                    LegRequest(f"a{i}", Direction.DEBIT, amount + i),
                    LegRequest(f"a{(i + 1) % ACCOUNTS}", Direction.CREDIT, amount + i),
                )
            ),
            b"",
        )
        for i in range(ACCOUNTS)
    ]
    for chunk in range(0, ACCOUNTS, 1000):  # a batch locks its accounts once
        async with database.write() as tx:
            await create_batch(tx, ledger_id, items[chunk : chunk + 1000], atomic=True, request_id=None)
    async with database.write() as tx:
        # The entries just written, dated onto the day in the order they were written.
        await tx.connection.execute(
            text("UPDATE entries SET created_at = :start + pk WHERE created_at > :recent"),
            {"start": _micros(day), "recent": _micros(date(2025, 12, 31))},
        )


@pytest.fixture(scope="module")
def books(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The database file, made once for the module; each test works on copies of it."""
    path = tmp_path_factory.mktemp("kill") / "books.db"
    asyncio.run(_make_books(path))
    return path


async def _make_books(path: Path) -> None:
    database = SqliteDatabase(f"sqlite:///{path}")
    await database.start()
    try:
        async with database.write() as tx:
            ledger = await create_ledger(tx, "kill", Actor(ROOT_ACTOR, None))
            for i in range(ACCOUNTS):
                side = NormalBalance.DEBIT if i % 7 == 0 else NormalBalance.CREDIT
                account = OpenAccount("USD", id=f"a{i}", normal_balance=side, bounds=Bounds(None, None))
                await open_account(tx, ledger.id, account, request_hash=b"", request_id=None)
        await _ring(database, ledger.id, date(2025, 3, 1), 10)
        await _ring(database, ledger.id, DAY, 1000)
    finally:
        await database.stop()


def _copy(source: Path, directory: Path, name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / name
    shutil.copyfile(source, target)  # the database was stopped: everything is in the main file
    return target


def _rows(path: Path, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        found = conn.execute(query, params).fetchall()
    conn.close()
    return found


def _result(path: Path, job: str, period: str) -> tuple[str, int, dict[str, Any]]:
    query = "SELECT status, done, result FROM job_runs WHERE job = ? AND period = ?"
    [(status, done, result)] = _rows(path, query, (job, period))
    return status, done, json.loads(result)


@pytest.mark.parametrize("job", ["statements", "reconcile"])
def test_a_run_killed_mid_way_and_run_again_ends_as_an_uninterrupted_run(
    books: Path, tmp_path: Path, job: str
) -> None:
    period = DAY.isoformat()
    whole = _copy(books, tmp_path / "whole", "tally.db")
    killed = _copy(books, tmp_path / "killed", "tally.db")

    uninterrupted = subprocess.Popen(
        jobs_command(job, period),
        env=tally_env(whole, **SETTINGS),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    stop = kill_mid_run(killed, job, period, **SETTINGS)
    assert uninterrupted.wait(timeout=WAIT_SECONDS) == 0
    assert not stop.finished, "the kill landed after the last step: nothing was shown"
    assert 0 < stop.done < (stop.total or 0)
    resumed = run_job(killed, job, period, **SETTINGS)
    assert resumed.returncode == 0, resumed.stderr
    assert "batch job resumed" in resumed.stderr

    assert _result(killed, job, period) == _result(whole, job, period)
    status, done, result = _result(killed, job, period)
    assert status == "finished"
    if job == "statements":
        statements = (
            "SELECT account_pk, day, opening_balance, closing_balance, debits, credits, postings "
            "FROM statements ORDER BY account_pk"
        )
        assert _rows(killed, statements) == _rows(whole, statements)
        assert len(_rows(killed, statements)) == ACCOUNTS == done == result["statements"]
        # Each account paid once and was paid once that day, so its statement adds up.
        [(wrong,)] = _rows(killed, "SELECT count(*) FROM statements WHERE postings != 2")
        assert wrong == 0
    else:
        assert result["ok"] is True
        assert result["accounts"] == ACCOUNTS == done

"""The ``statements`` job on SQLite and PostgreSQL: a known history over three days gives the
statements worked out by hand, a re-run changes nothing, and a day that has not ended is refused.

The history is made through the API; its entries are then dated onto fixed past days (in commit
order) with an UPDATE, the way a database clock would have dated them on those days.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from tally.bootstrap import Tally
from tally.domain.errors import TransientConflict
from tally.jobs.runs import OutcomeStatus, new_owner, run_batch_job
from tally.jobs.statements import StatementsJob
from tally.services.ports import Database
from tally.store.codec import to_micros
from tally.store.repositories.statements import SqlStatementRepository
from tests.support import (
    LedgerKeys,
    new_ledger,
    open_account,
    primary_read,
    serving_in_process,
    settings_for,
    transfer,
)

DAYS = [date(2025, 3, 1), date(2025, 3, 2), date(2025, 3, 3)]


@dataclass
class Books:
    tally: Tally
    client: httpx.AsyncClient
    ledger: LedgerKeys
    accounts: dict[str, str]  # name → account id


@pytest.fixture
async def books(backend: str, tmp_path: Path) -> AsyncIterator[Books]:
    settings = settings_for(tmp_path, hold_sweep_seconds=3600.0, job_schedule=[])
    tally = Tally(settings)
    async with serving_in_process(tally, tokens=False) as client:
        ledger = await new_ledger(client)
        world = await open_account(client, ledger.write, normal_balance="debit", min_balance=None)
        names = {"world": world["id"]}
        for name in ("alice", "bob", "carol", "dave"):
            names[name] = (await open_account(client, ledger.write, id=name))["id"]
        yield Books(tally, client, ledger, names)


async def move(books: Books, debit: str, credit: str, amount: int, **extra: Any) -> None:
    response = await transfer(
        books.client, books.ledger.write, books.accounts[debit], books.accounts[credit], amount, **extra
    )
    assert response.status_code in (200, 201), response.text


async def date_new_entries(database: Database, day: date) -> None:
    """Move the entries written since the last call onto ``day``, keeping their order."""
    start = to_micros(datetime(day.year, day.month, day.day, tzinfo=UTC))
    async with database.write() as tx:
        await tx.connection.execute(  # type: ignore[attr-defined]
            text("UPDATE entries SET created_at = :start + pk WHERE created_at > :recent"),
            {"start": start, "recent": to_micros(datetime(2025, 12, 31, tzinfo=UTC))},
        )


async def make_history(books: Books) -> None:
    await move(books, "world", "alice", 1000)
    await move(books, "world", "bob", 500)
    await move(books, "world", "dave", 20)
    await date_new_entries(books.tally.database, DAYS[0])
    await move(books, "alice", "bob", 100)
    await move(books, "bob", "alice", 30)
    await move(books, "world", "alice", 7)
    await move(books, "dave", "carol", 10, pending=True)  # holds only: no statement for dave or carol
    await date_new_entries(books.tally.database, DAYS[1])
    await move(books, "alice", "carol", 5)
    await date_new_entries(books.tally.database, DAYS[2])


async def stored(database: Database) -> list[tuple[Any, ...]]:
    """Every statement row, read on the primary (the job's rows carry no consistency token)."""
    async with primary_read(database) as tx:
        rows = await tx.connection.execute(  # type: ignore[attr-defined]
            text(
                "SELECT a.id, s.day, s.opening_balance, s.closing_balance, s.debits, s.credits, s.postings "
                "FROM statements s JOIN accounts a ON a.pk = s.account_pk ORDER BY s.day, a.pk"
            )
        )
        return [tuple(row) for row in rows.all()]


async def run(database: Database, job: StatementsJob, day: date) -> Any:
    return await run_batch_job(
        database, job, day.isoformat(), owner=new_owner(), lease=timedelta(seconds=30), progress=None
    )


async def test_statements_of_three_days_are_the_ones_worked_out_by_hand(books: Books) -> None:
    await make_history(books)
    database = books.tally.database
    job = StatementsJob(batch=2)  # several steps a day
    outcomes = [await run(database, job, day) for day in DAYS]
    assert [o.status for o in outcomes] == [OutcomeStatus.FINISHED] * 3
    world = books.accounts["world"]
    assert await stored(database) == [
        (world, "2025-03-01", 0, 1520, 1520, 0, 3),  # debit-normal: debits − credits
        ("alice", "2025-03-01", 0, 1000, 0, 1000, 1),
        ("bob", "2025-03-01", 0, 500, 0, 500, 1),
        ("dave", "2025-03-01", 0, 20, 0, 20, 1),
        (world, "2025-03-02", 1520, 1527, 7, 0, 1),
        ("alice", "2025-03-02", 1000, 937, 100, 37, 3),
        ("bob", "2025-03-02", 500, 570, 30, 100, 2),
        ("alice", "2025-03-03", 937, 932, 5, 0, 1),
        ("carol", "2025-03-03", 0, 5, 0, 5, 1),
    ]
    assert outcomes[1].result == {
        "day": "2025-03-02",
        "after": outcomes[1].result["after"],
        "accounts": 5,
        "statements": 3,
    }


async def test_a_step_sums_without_holding_the_writer_and_stores_its_rows_with_its_checkpoint(
    books: Books, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each step sums in a background read (ADR 0044): a transfer commits while it sums (on SQLite
    it could not while a step held the writer), and the day's rows are the same."""
    await make_history(books)
    database = books.tally.database
    committed = 0
    compute = SqlStatementRepository.compute

    async def compute_during_a_transfer(repository: SqlStatementRepository, *args: Any) -> Any:
        nonlocal committed
        await move(books, "world", "bob", 1)  # today: not in the ended day being summed
        committed += 1
        return await compute(repository, *args)

    monkeypatch.setattr(SqlStatementRepository, "compute", compute_during_a_transfer)
    outcome = await run(database, StatementsJob(batch=2), DAYS[1])
    assert outcome.status is OutcomeStatus.FINISHED
    assert committed >= 3  # one per step of two accounts, five accounts
    assert [row for row in await stored(database) if row[1] == "2025-03-02"] == [
        (books.accounts["world"], "2025-03-02", 1520, 1527, 7, 0, 1),
        ("alice", "2025-03-02", 1000, 937, 100, 37, 3),
        ("bob", "2025-03-02", 500, 570, 30, 100, 2),
    ]


async def test_a_rerun_of_a_finished_day_changes_nothing(books: Books) -> None:
    await make_history(books)
    database = books.tally.database
    first = await run(database, StatementsJob(batch=2), DAYS[1])
    before = await stored(database)
    again = await run(database, StatementsJob(batch=2), DAYS[1])
    assert again.status is OutcomeStatus.ALREADY_FINISHED
    assert again.result == first.result
    assert await stored(database) == before


async def test_a_day_that_has_not_ended_is_refused(books: Books) -> None:
    now = datetime(2026, 5, 1, 12, tzinfo=UTC)
    job = StatementsJob()
    assert job.period(None, now) == "2026-04-30"
    assert job.period("2026-04-30", now) == "2026-04-30"
    with pytest.raises(ValueError, match="has not ended"):
        job.period("2026-05-01", now)
    with pytest.raises(ValueError, match="period"):
        job.period("yesterday", now)


async def write_day_again(database: Database, day: date) -> None:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    end = start + timedelta(days=1)
    async with database.write() as tx:
        pks = await tx.statements.accounts_with_entries(start, end, after_pk=None, limit=10)
        await tx.statements.add(await tx.statements.compute(pks, day, start, end))


async def test_a_statement_written_twice_fails_loudly(books: Books) -> None:
    await make_history(books)
    database = books.tally.database
    await run(database, StatementsJob(), DAYS[0])
    before = await stored(database)
    # SQLite raises the integrity error; PostgreSQL's adapter calls a unique violation a collision
    # (23505 is how two concurrent inserts of one key meet), which the runner retries, then raises.
    with pytest.raises((IntegrityError, TransientConflict)):
        await write_day_again(database, DAYS[0])
    assert await stored(database) == before

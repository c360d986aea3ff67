"""The SQLite adapter on a real file: deadlines interrupt statements, and nothing half-applies."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from tally.domain.errors import DeadlineExceeded
from tally.domain.keys import Ledger
from tally.services.deadline import Deadline, set_deadline
from tally.store.sqlite import SqliteDatabase

# Counts for ever: only an interrupt ends it.
ENDLESS = text("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT max(x) FROM c")


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[SqliteDatabase]:
    db = SqliteDatabase(f"sqlite:///{tmp_path / 'store.db'}")
    await db.start()
    try:
        yield db
    finally:
        set_deadline(None)
        await db.stop()


async def _read_forever(database: SqliteDatabase) -> None:
    async with database.read() as tx:
        await tx.connection.execute(ENDLESS)


async def test_a_statement_past_the_deadline_is_interrupted(database: SqliteDatabase) -> None:
    set_deadline(Deadline.after(0.05))
    with pytest.raises(DeadlineExceeded):
        await _read_forever(database)


async def _write_a_ledger_then_run_forever(database: SqliteDatabase) -> None:
    async with database.write() as tx:
        await tx.ledgers.add(Ledger("led_half", "half", datetime.now(UTC)))
        await tx.connection.execute(ENDLESS)


async def test_an_interrupted_write_applies_nothing(database: SqliteDatabase) -> None:
    set_deadline(Deadline.after(0.05))
    with pytest.raises(DeadlineExceeded):
        await _write_a_ledger_then_run_forever(database)
    set_deadline(None)
    async with database.read() as tx:
        assert await tx.ledgers.get("led_half") is None
    # The writer connection is usable again.
    async with database.write() as tx:
        await tx.ledgers.add(Ledger("led_whole", "whole", datetime.now(UTC)))
    async with database.read() as tx:
        assert await tx.ledgers.get("led_whole") is not None


async def test_write_times_never_go_backwards_even_when_the_clock_does(tmp_path: Path) -> None:
    readings = iter([5_000_000, 4_000_000, 4_000_000, 3_000_000])
    db = SqliteDatabase(f"sqlite:///{tmp_path / 'clock.db'}", clock=lambda: next(readings))
    await db.start()
    try:
        times = []
        for _ in range(3):
            async with db.write() as tx:
                times.append(await tx.now())
        assert times == sorted(times)
        assert len(set(times)) == 3
    finally:
        await db.stop()

"""Statements on psycopg's connection (``store.postgres_statements``) answer exactly as SQLAlchemy does.

The statements of the SQLite comparison (``test_sqlite_statements.STATEMENTS``) run twice on a
real PostgreSQL database, each in a transaction rolled back after: through ``PostgresConnection``
and through SQLAlchemy's ``AsyncConnection``; rows, keys, row counts, errors and cursor events must
agree.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import event, func, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.sql.expression import Executable

from tally.store.postgres_statements import PostgresConnection, read_between_transactions
from tally.store.statement_plans import Rows, StatementPlans
from tests.integration.test_sqlite_statements import REUSED, SEED, STATEMENTS, metadata, things
from tests.support import BACKENDS


@pytest.fixture
async def engine() -> AsyncIterator[AsyncEngine]:
    cluster = BACKENDS.cluster()
    name = cluster.create_database()
    made = create_async_engine(cluster.primary.url(name))
    async with made.begin() as conn:
        await conn.run_sync(metadata.create_all)
        await conn.execute(insert(things), SEED)
    yield made
    await made.dispose()
    cluster.drop_database(name)


def _answer(result: Any) -> Any:
    if not result.returns_rows:
        return ("rowcount", result.rowcount)
    rows = result.all()
    return (list(result.keys()), [tuple(row) for row in rows], [row._asdict() for row in rows])


async def _run(
    engine: AsyncEngine,
    statement: Executable,
    parameters: Any,
    *,
    fast: bool,
    plans: StatementPlans | None = None,
) -> Any:
    async with engine.connect() as conn:
        # Tally's transactions begin with a statement of SQLAlchemy's; the next pk is the same each run.
        await conn.execute(text("SELECT setval('things_pk_seq', 6)"))
        if fast:
            answered = await PostgresConnection(conn, plans or StatementPlans(conn.dialect)).execute(
                statement, parameters
            )
            assert isinstance(answered, Rows), "the statement should take psycopg's path"
        else:
            answered = await conn.execute(statement, parameters)
        answer = _answer(answered)
        if parameters:  # what executemany wrote (SQLAlchemy reports no row count for it here)
            answer = (answer, _answer(await conn.execute(select(things).order_by(things.c.pk))))
        await conn.rollback()
    return answer


@pytest.mark.parametrize("statement", STATEMENTS.values(), ids=STATEMENTS.keys())
async def test_rows_keys_and_counts_match_sqlalchemy(engine: AsyncEngine, statement: Executable) -> None:
    assert await _run(engine, statement, None, fast=True) == await _run(engine, statement, None, fast=False)


@pytest.mark.parametrize("case", REUSED.values(), ids=REUSED.keys())
async def test_a_reused_statement_answers_as_sqlalchemy_on_every_call(engine: AsyncEngine, case: Any) -> None:
    statement, calls = case
    plans = StatementPlans(engine.dialect)  # one for all calls: from the second one the statement is bound
    for parameters in calls:
        fast = await _run(engine, statement, parameters, fast=True, plans=plans)
        slow = await _run(engine, statement, parameters, fast=False)
        if isinstance(parameters, list):  # executemany: SQLAlchemy reports no row count here
            fast, slow = fast[1], slow[1]
        assert fast == slow


async def test_executemany_matches_sqlalchemy(engine: AsyncEngine) -> None:
    rows = [{"id": "x1", "blob": b"a", "amount": 1}, {"id": "x2", "blob": None, "amount": 2}]
    (count, fast), (_, slow) = [await _run(engine, insert(things), rows, fast=way) for way in (True, False)]
    assert count == ("rowcount", 2)
    assert fast == slow


async def test_errors_and_events_are_sqlalchemys(engine: AsyncEngine) -> None:
    seen: list[tuple[str, str]] = []

    def before(_c: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(("before", statement))

    def after(_c: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(("after", statement))

    event.listen(engine.sync_engine, "before_cursor_execute", before)
    event.listen(engine.sync_engine, "after_cursor_execute", after)
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
        seen.clear()
        statements = PostgresConnection(conn, StatementPlans(conn.dialect))
        found = await statements.execute(select(things.c.amount).where(things.c.id == "t3"))
        assert isinstance(found, Rows)
        assert found.scalar_one() == 30
        assert [kind for kind, _ in seen] == ["before", "after"]
        assert "FROM things" in seen[0][1]
        with pytest.raises(IntegrityError) as refused:
            await statements.execute(insert(things).values(id="t1", amount=1))
        assert getattr(refused.value.orig, "sqlstate", None) == "23505"
        assert [kind for kind, _ in seen[2:]] == ["before"]  # a failed statement is never "after"
        await conn.rollback()
        # Outside a transaction (SQLAlchemy's autobegin), the statement goes through SQLAlchemy.
        assert not isinstance(await statements.execute(select(things.c.pk)), Rows)
        await conn.rollback()


async def test_a_statement_cancelled_midway_invalidates_its_connection(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
        statements = PostgresConnection(conn, StatementPlans(conn.dialect))
        sleeping = asyncio.ensure_future(statements.execute(select(func.pg_sleep(30))))
        await asyncio.sleep(0.3)
        sleeping.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sleeping
        assert conn.invalidated  # never handed out again in an unknown state
    async with engine.connect() as fresh:  # the pool makes a new connection
        assert (await fresh.execute(select(things.c.amount).where(things.c.id == "t5"))).scalar_one() == 50


async def test_a_read_between_transactions_leaves_the_connection_idle(engine: AsyncEngine) -> None:
    lsn = "SELECT pg_current_wal_lsn()::text"
    async with engine.connect() as conn:
        await conn.execute(insert(things).values(id="between", amount=1))
        await conn.commit()
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        assert isinstance(driver, psycopg.AsyncConnection)
        found = await read_between_transactions(conn, lsn)
        assert isinstance(found, str)
        assert "/" in found
        # No BEGIN was sent, so there is nothing for the pool to roll back (psycopg forgets its
        # prepared statements on every ROLLBACK), and autocommit is off again.
        assert driver.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert not driver.autocommit
        assert not conn.in_transaction()
        # The plain way, for contrast: SQLAlchemy's autobegin leaves a transaction open.
        await conn.execute(text(lsn))
        status: psycopg.pq.TransactionStatus = driver.info.transaction_status
        assert status == psycopg.pq.TransactionStatus.INTRANS
        await conn.rollback()

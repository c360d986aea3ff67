"""Time per statement: SQLAlchemy's execution against the driver path of ADR 0039, on SQLite and PostgreSQL.

On a real database (a SQLite file; a PostgreSQL primary started on loopback by the harness), in
one transaction, with a before/after cursor-event listener attached (as statement timing is in
``tally serve``), it runs ``--rounds`` rounds of the shapes a transfer uses: an insert, a select
with an IN list, an update by expression and a select of one row, each a statement built once with
bound parameters (as the hot repositories build theirs). Each round runs ``--count`` of each shape
through SQLAlchemy, then through the driver path, and prints this process's CPU time per
statement (PostgreSQL's own time is in its server process, not counted). Steady enough to compare
tens of microseconds, which the end-to-end ``tally bench`` cannot resolve on this machine.

    .venv/bin/python scripts/bench_statements.py [--database sqlite|postgresql|both]
        [--rounds 3] [--count 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Integer,
    MetaData,
    Table,
    Text,
    bindparam,
    create_engine,
    event,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.sql.expression import Executable

from tally.harness.postgres import cluster
from tally.store.postgres_statements import PostgresConnection
from tally.store.sqlite_statements import SqliteStatements
from tally.store.statement_plans import StatementPlans

metadata = MetaData()
things = Table(
    "things",
    metadata,
    Column("pk", Integer, primary_key=True),
    Column("id", Text, nullable=False, unique=True),
    Column("amount", Integer, nullable=False),
)
INSERT = insert(things).values(id=bindparam("id"), amount=bindparam("amount"))
SELECT_IN = select(things).where(things.c.id.in_(bindparam("ids", expanding=True)))
UPDATE = update(things).where(things.c.id == bindparam("wanted")).values(amount=things.c.amount + 1)
SELECT_ONE = select(things.c.pk, things.c.amount).where(things.c.id == bindparam("wanted"))
Run = Callable[[Executable, dict[str, Any]], Awaitable[Any]]


async def round_of(run: Run, count: int, prefix: str) -> float:
    """CPU seconds per statement for ``count`` of each of the four shapes."""
    started = time.process_time()
    for number in range(count):
        key = f"{prefix}{number}"
        await run(INSERT, {"id": key, "amount": number})
        (await run(SELECT_IN, {"ids": [key, "absent"]})).all()
        await run(UPDATE, {"wanted": key})
        (await run(SELECT_ONE, {"wanted": key})).one()
    return (time.process_time() - started) / (4 * count)


async def compare(database: str, ways: dict[str, Run], options: argparse.Namespace) -> None:
    for number in range(options.rounds):
        figures = {name: await round_of(run, options.count, f"{name}{number}-") for name, run in ways.items()}
        print(
            f"{database}: " + "  ".join(f"{name} {seconds * 1e6:.1f} µs" for name, seconds in figures.items())
        )


def listen(engine: Any) -> None:
    """A timing listener like statement timing's, so that both paths pay for the events."""

    def before(conn: Connection, *_: Any) -> None:
        conn.info["started"] = time.perf_counter()

    def after(conn: Connection, *_: Any) -> None:
        conn.info.pop("started", None)

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)


async def on_sqlite(options: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as work:
        engine = create_engine(f"sqlite:///{Path(work) / 'statements.db'}")
        metadata.create_all(engine)
        listen(engine)
        statements = SqliteStatements(engine.dialect)
        with engine.connect() as conn:
            conn.begin()

            async def sqlalchemy(statement: Executable, params: dict[str, Any]) -> Any:
                return conn.execute(statement, params)

            async def driver(statement: Executable, params: dict[str, Any]) -> Any:
                return statements.execute(conn, statement, params)

            await compare("sqlite", {"sqlalchemy": sqlalchemy, "driver": driver}, options)
            conn.rollback()
        engine.dispose()


async def on_postgresql(url: str, options: argparse.Namespace) -> None:
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    listen(engine.sync_engine)
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))  # SQLAlchemy begins the transaction, as in Tally
        fast = PostgresConnection(conn, StatementPlans(conn.dialect))
        plain: AsyncConnection = conn

        async def sqlalchemy(statement: Executable, params: dict[str, Any]) -> Any:
            return await plain.execute(statement, params)

        await compare("postgresql", {"sqlalchemy": sqlalchemy, "driver": fast.execute}, options)
        await conn.rollback()
    await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--database", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=2000)
    options = parser.parse_args()
    if options.database in ("sqlite", "both"):
        asyncio.run(on_sqlite(options))
    if options.database in ("postgresql", "both"):
        with cluster(replicas=0) as pg:
            asyncio.run(on_postgresql(pg.primary.url(pg.create_database()), options))


if __name__ == "__main__":
    main()

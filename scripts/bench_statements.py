"""Time per SQLite statement: SQLAlchemy's ``Connection.execute`` against ``SqliteStatements`` (ADR 0039).

On a real SQLite file, in one transaction, with a before/after cursor-event listener attached (as
statement timing is in ``tally serve``), it runs ``--rounds`` rounds of the shapes a transfer
uses: an insert, a select with an IN list, an update by expression and a select of one row, each
a statement built once with bound parameters (as the hot repositories build theirs). Each round
runs ``--count`` of each shape through SQLAlchemy, then through ``SqliteStatements``, and prints the
process CPU time per statement. Deterministic enough to compare a few microseconds, which the
end-to-end ``tally bench`` cannot resolve on this machine.

    .venv/bin/python scripts/bench_sqlite_statements.py [--rounds 3] [--count 3000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
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
    update,
)
from sqlalchemy.sql.expression import Executable

from tally.store.sqlite_statements import SqliteStatements

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
Run = Callable[[Connection, Executable, dict[str, Any]], Any]


def round_of(conn: Connection, run: Run, count: int, prefix: str) -> float:
    """CPU seconds per statement for ``count`` of each of the four shapes."""
    started = time.process_time()
    for number in range(count):
        key = f"{prefix}{number}"
        run(conn, INSERT, {"id": key, "amount": number})
        run(conn, SELECT_IN, {"ids": [key, "absent"]}).all()
        run(conn, UPDATE, {"wanted": key})
        run(conn, SELECT_ONE, {"wanted": key}).one()
    return (time.process_time() - started) / (4 * count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=3000)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        engine = create_engine(f"sqlite:///{Path(work) / 'statements.db'}")
        metadata.create_all(engine)

        def before(conn: Connection, *_: Any) -> None:
            conn.info["started"] = time.perf_counter()

        def after(conn: Connection, *_: Any) -> None:
            conn.info.pop("started", None)

        event.listen(engine, "before_cursor_execute", before)
        event.listen(engine, "after_cursor_execute", after)
        statements = SqliteStatements(engine.dialect)
        ways: dict[str, Run] = {
            "sqlalchemy": lambda conn, statement, params: conn.execute(statement, params),
            "cursor": statements.execute,
        }
        with engine.connect() as conn:
            conn.begin()
            for number in range(options.rounds):
                figures = {
                    name: round_of(conn, run, options.count, f"{name}{number}-") for name, run in ways.items()
                }
                print(
                    "  ".join(
                        f"{name}: {seconds * 1e6:.1f} µs per statement" for name, seconds in figures.items()
                    )
                )
            conn.rollback()
        engine.dispose()


if __name__ == "__main__":
    main()

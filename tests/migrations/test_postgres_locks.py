"""PostgreSQL: a migration never queues the service behind a lock it cannot have, and builds
indexes without blocking writes.

- A revision whose table another transaction holds waits at most ``lock_timeout`` per try, gives
  up, is retried (logged each time), and succeeds once the lock is released; when it never is, the
  command fails with a message naming the statement that waited, and nothing of it is applied.
- ``create_index_concurrently`` builds ``CONCURRENTLY``, drops the INVALID index an interrupted
  build left and builds it again, and keeps a valid one; ``drop_index_concurrently`` drops
  ``CONCURRENTLY``.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, event, inspect

from tally.migrations.operations import create_index_concurrently, drop_index_concurrently
from tally.store import migration_connection, migrations
from tally.store.migration_connection import MigrationBlocked
from tally.store.schema import SCRIPTS, revisions
from tests.integration.postgres_support import eventually, fresh_database
from tests.migrations.schemas import applied, on_connection
from tests.pg_cluster import PgServer
from tests.support import BACKENDS

_PROBE = '''"""Probe: a column on ledgers, which a lock held elsewhere blocks."""

import sqlalchemy as sa
from alembic import op

revision = "9001_probe"
down_revision = {head!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("ledgers", sa.Column("probe", sa.Text()))


def downgrade() -> None:
    op.drop_column("ledgers", "probe")
'''


@pytest.fixture
def server() -> PgServer:
    return BACKENDS.cluster().primary


@pytest.fixture
def database(server: PgServer) -> Iterator[str]:
    with fresh_database(BACKENDS.cluster()) as name:
        yield name


@pytest.fixture
def with_probe(tmp_path: Path) -> Path:
    """A copy of the script directory with one more expand revision on top: ``9001_probe``."""
    copy = tmp_path / "migrations"
    shutil.copytree(SCRIPTS, copy, ignore=shutil.ignore_patterns("__pycache__"))
    probe = _PROBE.format(head=revisions().expand_heads[0])
    (copy / "versions" / "expand" / "9001_probe.py").write_text(probe)
    return copy


@pytest.fixture
async def ledgers_in_use(server: PgServer, database: str) -> AsyncIterator[psycopg.AsyncConnection]:
    """A transaction that has read ``ledgers`` and stays open: it holds ACCESS SHARE on it."""
    await migrations.upgrade(server.url(database))
    conn = await psycopg.AsyncConnection.connect(server.dsn(database))
    await conn.execute("SELECT count(*) FROM ledgers")
    try:
        yield conn
    finally:
        await conn.close()


def _retries(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "lock wait timed out" in r.getMessage()]


async def test_a_migration_retries_a_lock_it_cannot_have_and_succeeds_once_released(
    server: PgServer,
    database: str,
    with_probe: Path,
    ledgers_in_use: psycopg.AsyncConnection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="tally.migrations")
    url = server.url(database)
    upgrading = asyncio.create_task(migrations.upgrade(url, lock_timeout_ms=50, location=with_probe))

    async def retried_twice() -> bool:
        return len(_retries(caplog)) >= 2

    await eventually(retried_twice, "two retries of the blocked migration")
    assert not upgrading.done()
    await ledgers_in_use.commit()  # the long transaction ends
    await upgrading

    assert all("ALTER TABLE ledgers ADD COLUMN probe" in line for line in _retries(caplog))
    columns = await on_connection(url, lambda c: [col["name"] for col in inspect(c).get_columns("ledgers")])
    assert "probe" in columns
    assert await on_connection(url, applied) >= {"9001_probe"}


async def test_a_lock_never_released_fails_the_migration_naming_the_statement(
    server: PgServer,
    database: str,
    with_probe: Path,
    ledgers_in_use: psycopg.AsyncConnection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(migration_connection, "LOCK_TRIES", 2)
    url = server.url(database)
    before = await on_connection(url, applied)

    with pytest.raises(MigrationBlocked) as blocked:
        await migrations.upgrade(url, lock_timeout_ms=50, location=with_probe)

    assert "waited 2 times for a lock, 50 ms each" in str(blocked.value)
    assert "ALTER TABLE ledgers ADD COLUMN probe" in str(blocked.value)
    assert await on_connection(url, applied) == before


def _index(server: PgServer, database: str) -> list[tuple[bool, bool]]:
    """(valid, unique) of ``ix_probe``, if it exists."""
    query = (
        "SELECT i.indisvalid, i.indisunique FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE c.relname = 'ix_probe'"
    )
    return [(row[0], row[1]) for row in server.execute(query, database)]


def _running(operation: str) -> Callable[[Connection], list[str]]:
    """Run the helper ``operation`` as a revision would, returning the statements it sent."""

    def run(conn: Connection) -> list[str]:
        sent: list[str] = []
        event.listen(
            conn,
            "before_cursor_execute",
            lambda _c, _cur, statement, *_: sent.append(" ".join(statement.split())),
        )
        with Operations.context(MigrationContext.configure(conn)):
            if operation == "create":
                create_index_concurrently("ix_probe", "ledgers", ["name"])
            else:
                drop_index_concurrently("ix_probe", "ledgers")
        return sent

    return run


async def test_an_index_is_built_concurrently_and_an_invalid_leftover_rebuilt(
    server: PgServer, database: str
) -> None:
    url = server.url(database)
    await migrations.upgrade(url)
    server.execute(
        "INSERT INTO ledgers (id, name, created_at) VALUES ('led_a', 'same', 1), ('led_b', 'same', 1)",
        database,
    )
    with pytest.raises(psycopg.errors.UniqueViolation):  # an interrupted build: INVALID, left behind
        server.execute("CREATE UNIQUE INDEX CONCURRENTLY ix_probe ON ledgers (name)", database)
    assert _index(server, database) == [(False, True)]

    sent = await on_connection(url, _running("create"))

    assert any(s.startswith("DROP INDEX CONCURRENTLY IF EXISTS") for s in sent)
    assert any(s.startswith("CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_probe") for s in sent)
    assert _index(server, database) == [(True, False)]  # rebuilt as asked: valid, not unique

    again = await on_connection(url, _running("create"))
    assert not any(s.startswith("DROP INDEX") for s in again)  # a valid index is kept
    assert _index(server, database) == [(True, False)]

    dropped = await on_connection(url, _running("drop"))
    assert any(s.startswith("DROP INDEX CONCURRENTLY IF EXISTS ix_probe") for s in dropped)
    assert _index(server, database) == []

"""A request's time budget on PostgreSQL (ADR 0010, 0022): it bounds the wait for a pooled
connection, and it becomes the transaction's own ``statement_timeout``, never the session's.

With ``pool_size=1`` one busy transaction holds the only primary connection, so whatever else
needs the primary waits for the pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tally.bootstrap import Tally
from tally.domain.errors import DeadlineExceeded
from tally.services.deadline import Deadline, set_deadline
from tally.store.postgres import PostgresDatabase
from tests.integration.postgres_support import (
    STRONG,
    eventually,
    fresh_database,
    listed,
    plain_asgi_client,
    settings_on,
    token_session,
)
from tests.pg_cluster import PgCluster, require_postgres
from tests.support import BACKENDS, assert_problem, funded_account, idem, new_ledger, open_account

_TIMEOUT_MS = text("SELECT setting::bigint FROM pg_settings WHERE name = 'statement_timeout'")
_BACKEND = text("SELECT pg_backend_pid()")
_DEFAULT_BUDGET_MS = 10_000  # Settings.request_timeout_ms: the budget outside any request


class RolledBack(Exception):
    """Raised inside a transaction to end it with a rollback; carries what the transaction saw."""

    def __init__(self, timeout_ms: int) -> None:
        super().__init__(timeout_ms)
        self.timeout_ms = timeout_ms


@asynccontextmanager
async def started_database(cluster: PgCluster, database: str) -> AsyncIterator[PostgresDatabase]:
    """Tally's PostgreSQL adapter on ``database`` with one primary connection, started."""
    tally = Tally(settings_on(cluster, database, replicas=False, pool_size=1))
    db = tally.database
    assert isinstance(db, PostgresDatabase)
    await db.start()
    try:
        yield db
    finally:
        set_deadline(None)
        await db.stop()
        if tally.telemetry is not None:
            tally.telemetry.close()


@contextmanager
def accounts_locked_elsewhere(cluster: PgCluster, database: str, *account_ids: str) -> Iterator[None]:
    """Another session holds these accounts' rows ``FOR UPDATE`` until the block ends."""
    with psycopg.connect(cluster.primary.dsn(database)) as conn:
        conn.execute("SELECT pk FROM accounts WHERE id = ANY(%s) FOR UPDATE", (list(account_ids),)).fetchall()
        yield
        conn.rollback()


def waiting_for_a_lock(cluster: PgCluster, database: str) -> int:
    """How many of Tally's primary connections wait for a row lock in ``database``."""
    rows = cluster.primary.execute(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = %s AND application_name = 'tally-primary' AND wait_event_type = 'Lock'",
        params=(database,),
    )
    return int(rows[0][0])


async def test_a_wait_for_the_only_connection_ends_with_the_budget_and_loses_no_slot() -> None:
    require_postgres()
    cluster = BACKENDS.cluster()
    with fresh_database(cluster) as database:
        async with started_database(cluster, database) as db:
            inside = asyncio.Event()
            release = asyncio.Event()

            async def occupy() -> None:
                async with db.write():
                    inside.set()
                    await release.wait()

            holder = asyncio.create_task(occupy())  # created before any budget: it has none
            await inside.wait()
            try:
                set_deadline(Deadline.after(0.2))
                with pytest.raises(DeadlineExceeded):
                    async with db.write():
                        pytest.fail("a write got the only connection while another transaction held it")
                set_deadline(Deadline.after(0.2))
                with pytest.raises(DeadlineExceeded):
                    async with db.read():
                        pytest.fail("a read got the only connection while another transaction held it")
            finally:
                release.set()
                await holder
            # The slot given up by the budget was not lost: the connection serves again.
            set_deadline(Deadline.after(5))
            async with db.write() as tx:
                assert (await tx.connection.execute(text("SELECT 1"))).scalar_one() == 1


async def test_statement_timeout_is_the_budget_inside_the_transaction_and_the_default_after_it() -> None:
    require_postgres()
    cluster = BACKENDS.cluster()
    with fresh_database(cluster) as database:
        async with started_database(cluster, database) as db:
            # The same AsyncEngine pool, used directly: with pool_size=1 it is the same session.
            direct = AsyncEngine(db.engines[0])

            async def session_timeout_ms() -> tuple[int, int]:
                async with direct.connect() as conn:
                    pid = (await conn.execute(_BACKEND)).scalar_one()
                    return int(pid), int((await conn.execute(_TIMEOUT_MS)).scalar_one())

            pid, before = await session_timeout_ms()
            assert before == 0  # the server's default: none

            set_deadline(Deadline.after(0.5))
            async with db.write() as tx:
                assert (await tx.connection.execute(_BACKEND)).scalar_one() == pid
                in_write = int((await tx.connection.execute(_TIMEOUT_MS)).scalar_one())
            assert 0 < in_write <= 500
            assert await session_timeout_ms() == (pid, 0)

            set_deadline(Deadline.after(0.3))
            async with db.read() as tx:
                assert (await tx.connection.execute(_BACKEND)).scalar_one() == pid
                in_read = int((await tx.connection.execute(_TIMEOUT_MS)).scalar_one())
            assert 0 < in_read <= 300
            assert await session_timeout_ms() == (pid, 0)

            # A transaction that fails is rolled back, and its setting with it.
            async def fail_inside() -> None:
                async with db.write() as tx:
                    raise RolledBack(int((await tx.connection.execute(_TIMEOUT_MS)).scalar_one()))

            set_deadline(Deadline.after(0.4))
            with pytest.raises(RolledBack) as rolled_back:
                await fail_inside()
            assert 0 < rolled_back.value.timeout_ms <= 400
            assert await session_timeout_ms() == (pid, 0)

            # Outside any request, the adapter's default budget (request_timeout_ms) applies.
            set_deadline(None)
            async with db.write() as tx:
                assert (await tx.connection.execute(_BACKEND)).scalar_one() == pid
                unbounded = int((await tx.connection.execute(_TIMEOUT_MS)).scalar_one())
            assert in_write < unbounded <= _DEFAULT_BUDGET_MS
            assert await session_timeout_ms() == (pid, 0)


async def test_a_request_that_cannot_get_a_connection_in_its_budget_is_a_504_with_nothing_applied() -> None:
    require_postgres()
    cluster = BACKENDS.cluster()
    with fresh_database(cluster) as database:
        settings = settings_on(cluster, database, pool_size=1)
        async with plain_asgi_client(settings, token_session()) as client:
            ledger = await new_ledger(client)
            await funded_account(client, ledger, "wallet", 1000)
            await open_account(client, ledger.write, id="savings")
            await open_account(client, ledger.write, id="shop")
            await open_account(client, ledger.write, id="bank")
            funded = await client.post(
                "/v1/transfers",
                json={"debit_account_id": "world", "credit_account_id": "savings", "amount": 700},
                headers={**ledger.write, **idem()},
            )
            assert funded.status_code == 201
            savings_entries = await listed(client, "/v1/accounts/savings/entries", ledger.read)

            first_body = {"debit_account_id": "wallet", "credit_account_id": "shop", "amount": 100}
            first_headers = {**ledger.write, **idem("first"), "Tally-Timeout-Ms": "5000"}
            # The second touches no locked row: only the pool can keep it waiting.
            second_body = {"debit_account_id": "savings", "credit_account_id": "bank", "amount": 250}
            second_headers = {**ledger.write, **idem("second"), "Tally-Timeout-Ms": "200"}

            with accounts_locked_elsewhere(cluster, database, "wallet", "shop"):
                first = asyncio.create_task(
                    client.post("/v1/transfers", json=first_body, headers=first_headers)
                )

                async def first_waits() -> bool:
                    assert not first.done(), first.result().text
                    return waiting_for_a_lock(cluster, database) == 1

                await eventually(first_waits, "the first transfer to hold the connection, waiting for a lock")
                second = await client.post("/v1/transfers", json=second_body, headers=second_headers)
            assert_problem(second, 504, "deadline_exceeded")
            assert (await first).status_code == 201

            async def balance(account_id: str) -> int:
                read = await client.get(f"/v1/accounts/{account_id}", headers={**ledger.read, **STRONG})
                assert read.status_code == 200
                posted: int = read.json()["balance"]["posted"]
                return posted

            assert [await balance(a) for a in ("wallet", "shop", "savings", "bank")] == [900, 100, 700, 0]
            assert await listed(client, "/v1/accounts/savings/entries", ledger.read) == savings_entries
            assert await listed(client, "/v1/accounts/bank/entries", ledger.read) == []

            # Nothing was stored under its key: the retry is processed, once.
            retried = await client.post("/v1/transfers", json=second_body, headers=second_headers)
            assert retried.status_code == 201, retried.text
            assert "idempotent-replayed" not in retried.headers
            again = await client.post("/v1/transfers", json=second_body, headers=second_headers)
            assert again.status_code == 201
            assert again.headers["idempotent-replayed"] == "true"
            assert again.content == retried.content
            assert [await balance(a) for a in ("savings", "bank")] == [450, 250]
            assert len(await listed(client, "/v1/accounts/bank/entries", ledger.read)) == 1


async def test_a_group_of_transfers_waiting_for_a_row_lock_holds_up_no_transfer_of_other_accounts() -> None:
    # On PostgreSQL several groups are written side by side (ADR 0042): one stuck behind a row
    # lock leaves the others to go on. With one runner, the second transfer would queue behind the
    # first until its budget ended.
    require_postgres()
    cluster = BACKENDS.cluster()
    with fresh_database(cluster) as database:
        async with plain_asgi_client(settings_on(cluster, database), token_session()) as client:
            ledger = await new_ledger(client)
            await funded_account(client, ledger, "wallet", 1000)
            for account in ("shop", "bank"):
                await open_account(client, ledger.write, id=account)
            stuck_body = {"debit_account_id": "wallet", "credit_account_id": "shop", "amount": 100}
            free_body = {"debit_account_id": "world", "credit_account_id": "bank", "amount": 5}
            free_headers = {**ledger.write, **idem(), "Tally-Timeout-Ms": "3000"}
            with accounts_locked_elsewhere(cluster, database, "wallet", "shop"):
                stuck = asyncio.create_task(
                    client.post("/v1/transfers", json=stuck_body, headers={**ledger.write, **idem()})
                )

                async def stuck_waits() -> bool:
                    assert not stuck.done(), stuck.result().text
                    return waiting_for_a_lock(cluster, database) == 1

                await eventually(stuck_waits, "the first transfer's group to wait for a row lock")
                free = await client.post("/v1/transfers", json=free_body, headers=free_headers)
                assert free.status_code == 201, free.text
                assert not stuck.done()
            assert (await stuck).status_code == 201

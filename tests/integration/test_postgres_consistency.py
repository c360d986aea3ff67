"""Where reads run on PostgreSQL, and how an answer that may lag says so (API.md, ADR 0021).

An ``available`` read may come from a streaming replica, labelled ``Tally-Stale: true`` with
``Tally-As-Of``; a ``strong`` read comes from the primary; a read that sends a write's
``Tally-Consistency-Token`` sees that write. The app runs in process with a fast lag monitor.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import httpx
import pytest

from tally.bootstrap import open_database
from tally.services.consistency import ReadIntent, begin_reads
from tests.integration.postgres_support import (
    STRONG,
    eventually,
    fresh_database,
    plain_asgi_client,
    settings_on,
)
from tests.pg_cluster import PgCluster, require_postgres
from tests.support import (
    BACKENDS,
    RFC3339_UTC_MICROS,
    ROOT,
    LedgerKeys,
    assert_problem,
    funded_account,
    new_ledger,
    open_account,
    transfer,
)

CHECK_MS = 50  # the lag monitor's period in these tests
LSN = re.compile(r"^[0-9A-F]{1,8}/[0-9A-F]{1,8}$")  # a WAL position, as PostgreSQL writes it


@dataclass
class Books:
    """A ledger on a fresh database of the shared cluster, and a client of an app serving it."""

    cluster: PgCluster
    database: str
    client: httpx.AsyncClient
    ledger: LedgerKeys
    funded_at: datetime  # when the funding transfer was acknowledged


@pytest.fixture
async def books() -> AsyncIterator[Books]:
    """``wallet`` holds 1000 and ``shop`` nothing; the replica has replayed all of it."""
    require_postgres()
    cluster = BACKENDS.cluster()
    with fresh_database(cluster) as database:
        # A lag bound long enough that a paused replica stays usable for the whole test.
        settings = settings_on(
            cluster,
            database,
            replica_check_ms=CHECK_MS,
            replica_max_lag_ms=60_000,
            cache_ttl_ms=0,  # these reads are about replicas: no cache answers for them
        )
        async with plain_asgi_client(settings) as client:
            ledger = await new_ledger(client)  # writes only: no token needed
            await funded_account(client, ledger, "wallet", 1000)
            funded_at = datetime.now(UTC)
            await open_account(client, ledger.write, id="shop")
            cluster.wait_for_replay()
            yield Books(cluster, database, client, ledger, funded_at)


def as_of(response: httpx.Response) -> datetime:
    """The response's ``Tally-As-Of``, checked to be RFC 3339 UTC with microseconds."""
    raw = response.headers["tally-as-of"]
    assert RFC3339_UTC_MICROS.match(raw), raw
    return datetime.fromisoformat(raw)


async def answered_by_replica(client: httpx.AsyncClient, ledger: LedgerKeys) -> bool:
    """Whether an available read without a token is answered by the replica (labelled stale)."""
    read = await client.get("/v1/accounts/shop", headers=ledger.read)
    assert read.status_code == 200, read.text
    return bool(read.headers.get("tally-stale") == "true")


async def monitor_cycles(count: int = 4) -> None:
    await asyncio.sleep(count * CHECK_MS / 1000)


async def test_an_available_read_from_a_caught_up_replica_is_labelled_stale_as_of_its_last_catch_up(
    books: Books,
) -> None:
    client, ledger = books.client, books.ledger
    await monitor_cycles()  # the monitor has seen the replica hold everything

    truth = await client.get("/v1/accounts/wallet", headers={**ledger.read, **STRONG})
    assert truth.status_code == 200
    assert truth.json()["balance"]["posted"] == 1000
    for _ in range(5):
        read = await client.get("/v1/accounts/wallet", headers=ledger.read)
        assert read.status_code == 200
        assert read.headers["tally-stale"] == "true"
        # Caught up after the funding was acknowledged, and not in the future.
        assert books.funded_at <= as_of(read) <= datetime.now(UTC)
        assert read.json() == truth.json()


async def test_a_strong_read_is_answered_by_the_primary_without_stale_labels(books: Books) -> None:
    client, ledger = books.client, books.ledger
    await eventually(partial(answered_by_replica, client, ledger), "available reads from the replica")

    read = await client.get("/v1/accounts/wallet", headers={**ledger.read, **STRONG})
    assert read.status_code == 200
    assert read.json()["balance"]["posted"] == 1000
    assert "tally-stale" not in read.headers, dict(read.headers)
    assert "tally-as-of" not in read.headers


async def test_a_write_answers_with_its_token_and_without_stale_labels(books: Books) -> None:
    client, ledger = books.client, books.ledger
    await eventually(partial(answered_by_replica, client, ledger), "available reads from the replica")

    paid = await transfer(client, ledger.write, "wallet", "shop", 10)
    assert paid.status_code == 201
    token = paid.headers["tally-consistency-token"]
    assert LSN.match(token), token
    assert "tally-stale" not in paid.headers, dict(paid.headers)
    assert "tally-as-of" not in paid.headers
    read = await client.get("/v1/accounts/shop", headers={**ledger.read, "Tally-Consistency-Token": token})
    assert read.status_code == 200
    assert read.json()["balance"]["posted"] == 10


async def test_while_replay_is_paused_a_token_read_sees_the_write_and_no_stale_value_goes_unlabelled(
    books: Books,
) -> None:
    cluster, ledger = books.cluster, books.ledger
    lenient = books.client  # replica_max_lag_ms=60_000
    strict_settings = settings_on(
        cluster, books.database, replica_check_ms=CHECK_MS, replica_max_lag_ms=300, cache_ttl_ms=0
    )
    async with plain_asgi_client(strict_settings) as strict:
        # Both apps read from the replica while it keeps up: their monitors have seen it caught up.
        for client in (lenient, strict):
            await eventually(partial(answered_by_replica, client, ledger), "a read from the replica")

        cluster.pause_replay()
        try:
            paid = await transfer(lenient, ledger.write, "wallet", "shop", 300)
            assert paid.status_code == 201
            paid_at = datetime.now(UTC)
            token = {"Tally-Consistency-Token": paid.headers["tally-consistency-token"]}

            # The replica has not applied the write, so an answer with it is the primary's.
            for client in (lenient, strict, lenient, strict, lenient):
                read = await client.get("/v1/accounts/shop", headers={**ledger.read, **token})
                assert read.status_code == 200
                assert read.json()["balance"]["posted"] == 300

            # Without the token the lenient app still reads the replica, within its lag bound: the
            # old value, labelled stale, as of a moment before the write.
            stale_reads = 0
            for _ in range(5):
                read = await lenient.get("/v1/accounts/shop", headers=ledger.read)
                assert read.status_code == 200
                posted = read.json()["balance"]["posted"]
                if read.headers.get("tally-stale") == "true":
                    stale_reads += 1
                    assert as_of(read) < paid_at
                else:
                    assert posted == 300, "an unlabelled answer must be current"
            assert stale_reads > 0

            # Past the strict app's 300 ms bound its reads without a token go to the primary.
            async def from_primary() -> bool:
                read = await strict.get("/v1/accounts/shop", headers=ledger.read)
                assert read.status_code == 200
                stale = read.headers.get("tally-stale") == "true"
                assert stale or read.json()["balance"]["posted"] == 300
                return not stale

            await eventually(from_primary, "the replica to fall out of the 300 ms lag bound", within=10)
            for _ in range(5):
                read = await strict.get("/v1/accounts/shop", headers=ledger.read)
                assert read.status_code == 200
                assert "tally-stale" not in read.headers
                assert "tally-as-of" not in read.headers
                assert read.json()["balance"]["posted"] == 300
        finally:
            cluster.resume_replay()
        cluster.wait_for_replay()


async def test_a_background_read_is_the_primarys_while_a_replica_that_lags_answers_available_reads(
    books: Books,
) -> None:
    """Background work (a batch job's step, the webhook dispatcher) checks the books as they are:
    its reads never go to a replica, however fresh the replica is thought to be (ADR 0044)."""
    cluster, ledger = books.cluster, books.ledger
    settings = settings_on(
        cluster, books.database, replica_check_ms=CHECK_MS, replica_max_lag_ms=60_000, cache_ttl_ms=0
    )
    database = open_database(settings, None)
    await database.start()
    try:

        async def shop_posted(read: Any) -> tuple[int, bool]:
            origin = begin_reads(ReadIntent())
            async with read() as tx:
                shop = await tx.accounts.get(ledger.ledger_id, "shop")
            assert shop is not None
            return shop.balance.posted, origin.stale

        async def replica_answers() -> bool:
            return (await shop_posted(database.read))[1]

        await eventually(replica_answers, "an available read from the replica")
        cluster.pause_replay()
        try:
            assert (await transfer(books.client, ledger.write, "wallet", "shop", 300)).status_code == 201
            assert await shop_posted(database.read) == (0, True)  # the replica, labelled
            assert await shop_posted(database.background_read) == (300, False)  # the primary
        finally:
            cluster.resume_replay()
        cluster.wait_for_replay()
    finally:
        await database.stop()


async def test_a_new_key_sent_with_the_token_of_its_creation_is_accepted_while_the_replica_lags(
    books: Books,
) -> None:
    cluster, client, ledger = books.cluster, books.client, books.ledger

    await eventually(lambda: answered_by_replica(client, ledger), "a read from the replica")
    cluster.pause_replay()
    try:
        created = await client.post(
            f"/v1/ledgers/{ledger.ledger_id}/keys", json={"name": "late", "scopes": ["read"]}, headers=ROOT
        )
        assert created.status_code == 201
        headers = {
            "Authorization": f"Bearer {created.json()['key']}",
            "Tally-Consistency-Token": created.headers["tally-consistency-token"],
        }
        read = await client.get("/v1/accounts/shop", headers=headers)
        assert read.status_code == 200, read.text
    finally:
        cluster.resume_replay()
    cluster.wait_for_replay()


async def test_malformed_consistency_headers_are_validation_errors_that_name_the_header(
    books: Books,
) -> None:
    client, ledger = books.client, books.ledger
    malformed = [
        ("Tally-Consistency", "sometimes"),
        ("Tally-Consistency-Token", "not-a-token!"),
        ("Tally-Consistency-Token", "DEADBEEF"),  # hexadecimal, but not an LSN (no "/")
    ]
    for header, value in malformed:
        for path in ("/v1/accounts/wallet", "/v1/accounts"):
            response = await client.get(path, headers={**ledger.read, header: value})
            problem = assert_problem(response, 422, "validation_error")
            assert ["header", header] in [error["loc"] for error in problem["errors"]], problem

"""Stale-if-error: with no database answering, available reads come from the cache, labelled stale.

A PostgreSQL primary and its replica both go down under a Tally process with an in-process cache.
Reads of accounts and balances it had cached answer 200 with ``Tally-Stale: true`` and
``Tally-As-Of``; a strong read, a write, and a read of an account never cached answer 503. The
cache never authorises a debit. The module stops its servers, so it has a cluster of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.integration.postgres_support import STRONG, fresh_database, plain_asgi_client, settings_on
from tests.pg_cluster import PgCluster, cluster, require_postgres
from tests.support import (
    RFC3339_UTC_MICROS,
    assert_problem,
    funded_account,
    new_ledger,
    open_account,
    transfer,
)


@pytest.fixture(scope="module")
def doomed() -> Iterator[PgCluster]:
    require_postgres()
    with cluster() as started:
        yield started


async def test_with_every_database_down_cached_accounts_are_served_stale_and_nothing_else(
    doomed: PgCluster,
) -> None:
    with fresh_database(doomed) as database:
        settings = settings_on(
            doomed,
            database,
            replica_check_ms=50,
            breaker_cooldown_ms=200,
            rate_limit="off",
            worker_enabled=False,
            cache_ttl_ms=300,  # fresh entries are current: the outage must outlast them
            key_cache_ttl_ms=300,
        )
        async with plain_asgi_client(settings) as client:
            keys = await new_ledger(client)
            await funded_account(client, keys, "alice", 100)
            await open_account(client, keys.write, id="never-read")
            for path in ("/v1/accounts/alice", "/v1/accounts/alice/balance"):
                fresh = await client.get(path, headers=keys.read)
                assert fresh.status_code == 200
                assert "tally-stale" not in fresh.headers

            for server in (*doomed.replicas, doomed.primary):
                server.stop("immediate")
            await asyncio.sleep(0.4)  # every entry is past its freshness: only stale-if-error serves
            try:
                for path in ("/v1/accounts/alice", "/v1/accounts/alice/balance"):
                    stale = await client.get(path, headers=keys.read)
                    assert stale.status_code == 200, stale.text
                    assert stale.headers["tally-stale"] == "true"
                    assert RFC3339_UTC_MICROS.match(stale.headers["tally-as-of"])
                body = (await client.get("/v1/accounts/alice/balance", headers=keys.read)).json()
                assert body["posted"] == 100

                strong = await client.get("/v1/accounts/alice/balance", headers={**keys.read, **STRONG})
                assert_problem(strong, 503, "unavailable")
                assert_problem(await transfer(client, keys.write, "alice", "world", 1), 503, "unavailable")
                # never-read was written through when opened: an entry, though never read.
                written = await client.get("/v1/accounts/never-read", headers=keys.read)
                assert written.status_code == 200
                assert written.headers["tally-stale"] == "true"
                assert_problem(await client.get("/v1/accounts/nobody", headers=keys.read), 503, "unavailable")
            finally:
                doomed.primary.start()
                for replica in doomed.replicas:
                    replica.start()

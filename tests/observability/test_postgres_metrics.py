"""On PostgreSQL, statements are timed by role (``primary``, ``replica``), pools are measured, and
replication is watched (``tally_db_primary_up``, ``tally_db_replica_lag_seconds``)."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.observability.scrape import Sample, samples, total
from tests.observability.test_metrics import _traffic
from tests.pg_cluster import require_postgres
from tests.support import BACKENDS, asgi_client, new_ledger, settings_for


async def test_statements_pools_and_replication_are_measured_on_postgresql(tmp_path: Path) -> None:
    require_postgres()
    BACKENDS.name = "postgresql"
    try:
        settings = settings_for(
            tmp_path,
            pool_size=4,
            replica_pool_size=3,
            replica_check_ms=20,
            cache_invalidation="off",  # no background read holding a connection at the scrape
        )
        async with asgi_client(settings) as client:
            ledger = await new_ledger(client)
            await _traffic(client, ledger)
            BACKENDS.cluster().wait_for_replay()
            found = await _scrape_once_replica_reads(client, ledger.read)
    finally:
        BACKENDS.finish()

    timed = [s for s in found if s.name == "tally_db_query_duration_seconds_count"]
    assert {s.labels["role"] for s in timed} == {"primary", "replica"}
    assert total(found, "tally_db_connections", role="primary") == 4
    assert total(found, "tally_db_connections", role="replica") == 3
    assert total(found, "tally_db_connections_in_use") == 0  # every transaction gave its connection back
    assert total(found, "tally_db_pool_wait_seconds_count", role="primary") >= 4
    assert total(found, "tally_db_pool_wait_seconds_count", role="replica") >= 1
    assert total(found, "tally_db_primary_up") == 1
    lag = [s for s in found if s.name == "tally_db_replica_lag_seconds"]
    assert [s.labels["replica"] for s in lag] == ["replica-1"]
    assert 0 <= lag[0].value < 60


async def _scrape_once_replica_reads(client: httpx.AsyncClient, read: dict[str, str]) -> list[Sample]:
    """Read until one answer comes from the replica (labelled stale), then scrape ``/metrics``."""
    for _ in range(200):
        answer = await client.get("/v1/accounts", headers={**read, "Tally-Consistency-Token": "0/0"})
        assert answer.status_code == 200
        if answer.headers.get("tally-stale") == "true":
            return samples((await client.get("/metrics")).text)
    raise AssertionError("no read was answered by the caught-up replica")

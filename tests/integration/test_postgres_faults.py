"""The primary crashes and comes back, under a real ``tally serve`` with a streaming replica.

While the primary is down, writes fail fast with 503 ``unavailable`` and ``Retry-After``, strong
reads fail with 503, and available reads are answered by the replica, labelled stale. When it is
back, the same process writes again; no acknowledged write is lost, and a write retried with its
key takes effect at most once. These tests stop a primary, so the module has a durable cluster of
its own.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.postgres_support import (
    STRONG,
    check_books,
    eventually,
    fresh_database,
    listed,
    plain_client,
    running_server,
    server_env,
    token_session,
)
from tests.pg_cluster import PgCluster, cluster, require_postgres
from tests.support import (
    RFC3339_UTC_MICROS,
    LedgerKeys,
    assert_problem,
    funded_account,
    idem,
    new_ledger,
    open_account,
)

pytestmark = pytest.mark.server

FAST_FAILOVER = {"TALLY_REPLICA_CHECK_MS": "50", "TALLY_BREAKER_COOLDOWN_MS": "200"}
FUNDS = 1_000_000


@pytest.fixture(scope="module")
def durable() -> Iterator[PgCluster]:
    """A primary and a replica that keep every acknowledged commit across a crash."""
    require_postgres()
    with cluster(durable=True) as started:
        yield started


@pytest.fixture
def crashable(durable: PgCluster) -> PgCluster:
    """The module's cluster, with its primary running."""
    if not durable.primary.running():
        durable.primary.start()
    return durable


@contextmanager
def primary_back_at_end(pg: PgCluster) -> Iterator[None]:
    """However the block ends, the primary runs again after it (so its database can be dropped)."""
    try:
        yield
    finally:
        if not pg.primary.running():
            pg.primary.start()


@dataclass
class Attempt:
    """One transfer request: its key and body, and what came back (None: no answer at all)."""

    key: str
    body: dict[str, Any]
    response: httpx.Response | None

    @property
    def status(self) -> int | None:
        return None if self.response is None else self.response.status_code


async def attempt(client: httpx.AsyncClient, ledger: LedgerKeys, key: str, amount: int) -> Attempt:
    """wallet → shop, with the key in the metadata so that the stored transfer names its request."""
    body = {
        "debit_account_id": "wallet",
        "credit_account_id": "shop",
        "amount": amount,
        "metadata": {"key": key},
    }
    try:
        response = await client.post("/v1/transfers", json=body, headers={**ledger.write, **idem(key)})
    except httpx.TransportError:
        return Attempt(key, body, None)
    return Attempt(key, body, response)


def assert_refused_fast(response: httpx.Response | None) -> None:
    """503 ``unavailable`` with ``Retry-After``: fail fast, never wait out the budget (504)."""
    assert response is not None
    assert_problem(response, 503, "unavailable")
    assert int(response.headers["retry-after"]) >= 1


def assert_stale(response: httpx.Response, before: datetime) -> None:
    """A replica's answer, labelled so, current as of a moment before ``before``."""
    assert response.status_code == 200, response.text
    assert response.headers["tally-stale"] == "true"
    as_of = response.headers["tally-as-of"]
    assert RFC3339_UTC_MICROS.match(as_of), as_of
    assert datetime.fromisoformat(as_of) <= before


async def wallet_and_shop(base_url: str, cluster: PgCluster) -> LedgerKeys:
    async with plain_client(base_url, token_session()) as client:
        ledger = await new_ledger(client)
        await funded_account(client, ledger, "wallet", FUNDS)
        await open_account(client, ledger.write, id="shop")
    cluster.wait_for_replay()
    return ledger


async def test_a_primary_crash_loses_no_acknowledged_write_and_writes_resume_in_the_same_process(
    crashable: PgCluster, tmp_path: Path
) -> None:
    require_postgres()
    pg = crashable
    with (
        fresh_database(pg) as database,
        running_server(tmp_path, server_env(pg, database, **FAST_FAILOVER)) as server,
        primary_back_at_end(pg),
    ):
        ledger = await wallet_and_shop(server.base_url, pg)
        attempts: list[Attempt] = []
        reads: list[tuple[str, httpx.Response | None]] = []
        phase = ["up"]  # up → down (the primary has stopped) → restarting (it is being started)
        stop = asyncio.Event()

        async with plain_client(server.base_url) as client:

            async def keep_writing() -> None:
                while not stop.is_set():
                    attempts.append(
                        await attempt(client, ledger, f"w-{len(attempts)}", len(attempts) % 50 + 1)
                    )
                    await asyncio.sleep(0.01)

            async def keep_reading() -> None:
                while not stop.is_set():
                    started_in = phase[0]
                    try:
                        reads.append((started_in, await client.get("/v1/accounts/shop", headers=ledger.read)))
                    except httpx.TransportError:
                        reads.append((started_in, None))
                    await asyncio.sleep(0.01)

            async def acknowledged(at_least: int, since: int = 0) -> bool:
                return sum(a.status == 201 for a in attempts[since:]) >= at_least

            writer, reader = asyncio.create_task(keep_writing()), asyncio.create_task(keep_reading())
            try:
                await eventually(lambda: acknowledged(10), "ten acknowledged writes")
                await asyncio.to_thread(pg.primary.stop, "immediate")
                crashed_at = datetime.now(UTC)
                phase[0] = "down"

                for number in range(3):
                    probe = await attempt(client, ledger, f"down-{number}", 7)
                    attempts.append(probe)
                    assert_refused_fast(probe.response)
                    # No replica can be known current after the primary went away.
                    assert_stale(await client.get("/v1/accounts/shop", headers=ledger.read), crashed_at)
                    strong = await client.get("/v1/accounts/shop", headers={**ledger.read, **STRONG})
                    assert_problem(strong, 503, "unavailable")
                # Ready for reads only: the replica answers (ADR 0021).
                ready = await client.get("/readyz")
                assert ready.status_code == 200
                assert ready.json()["checks"]["database"] == "degraded"

                # From here on the primary may answer any moment: reads may be current again.
                phase[0] = "restarting"
                await asyncio.to_thread(pg.primary.start)
                restarted = len(attempts)
                await eventually(lambda: acknowledged(1, since=restarted), "a write to succeed again")
                await eventually(lambda: acknowledged(5, since=restarted), "writes to keep succeeding")
            finally:
                stop.set()
                await asyncio.gather(writer, reader)
        assert server.process.poll() is None  # the same process throughout

        # What callers saw: 201, or a fast 503; available reads while down came from the replica.
        assert {a.status for a in attempts} <= {201, 503}, Counter(a.status for a in attempts)
        for refused in (a for a in attempts if a.status != 201):
            assert_refused_fast(refused.response)
        down_reads = [response for started_in, response in reads if started_in == "down"]
        assert down_reads
        for response in down_reads:
            assert response is not None
            assert_stale(response, crashed_at)
        for _, response in reads:
            assert response is not None
            assert response.status_code in (200, 503), response.text

        async with plain_client(server.base_url) as client:
            # No acknowledged write was lost.
            acked = [a for a in attempts if a.status == 201]
            for made in acked:
                assert made.response is not None
                transfer_id = made.response.json()["id"]
                stored = await client.get(f"/v1/transfers/{transfer_id}", headers={**ledger.read, **STRONG})
                assert stored.status_code == 200, made.key
                assert stored.json() == made.response.json()

            # Every request sent again with its key: the acknowledged ones replay, the others apply.
            final: dict[str, str] = {}
            for sent in attempts:
                again = await attempt(client, ledger, sent.key, sent.body["amount"])
                assert again.response is not None
                assert again.status == 201, again.response.text
                if sent.status == 201:
                    assert sent.response is not None
                    assert again.response.headers["idempotent-replayed"] == "true"
                    assert again.response.content == sent.response.content
                final[sent.key] = again.response.json()["id"]
            assert len(set(final.values())) == len(attempts)

            # Each request took effect exactly once, and the books balance.
            stored_keys = [
                t["metadata"]["key"]
                for t in await listed(client, "/v1/transfers", ledger.read, account_id="shop")
            ]
            assert Counter(stored_keys) == Counter(final.keys())
            books = await check_books(client, ledger.read)
        moved = sum(a.body["amount"] for a in attempts)
        assert books["shop"] == moved
        assert books["wallet"] == FUNDS - moved


async def test_with_the_primary_down_a_debit_is_refused_and_is_not_there_once_it_is_back(
    crashable: PgCluster, tmp_path: Path
) -> None:
    require_postgres()
    pg = crashable
    with (
        fresh_database(pg) as database,
        running_server(tmp_path, server_env(pg, database, **FAST_FAILOVER)) as server,
        primary_back_at_end(pg),
    ):
        ledger = await wallet_and_shop(server.base_url, pg)
        body = {
            "id": "paid-while-down",
            "debit_account_id": "wallet",
            "credit_account_id": "shop",
            "amount": 400,
        }
        headers = {**ledger.write, **idem("pay-while-down")}
        async with plain_client(server.base_url) as client:
            before = await client.get("/v1/accounts/wallet/entries", headers={**ledger.read, **STRONG})
            assert before.status_code == 200

            await asyncio.to_thread(pg.primary.stop, "immediate")
            # The replica holds the wallet's balance, but only the primary may authorise a debit.
            for _ in range(3):
                assert_refused_fast(await client.post("/v1/transfers", json=body, headers=headers))
            await asyncio.to_thread(pg.primary.start)

            async def writes_again() -> bool:
                opened = await client.post(
                    "/v1/accounts", json={"currency": "USD"}, headers={**ledger.write, **idem()}
                )
                assert opened.status_code in (201, 503), opened.text
                return opened.status_code == 201

            await eventually(writes_again, "a write to succeed again")
            missing = await client.get("/v1/transfers/paid-while-down", headers={**ledger.read, **STRONG})
            assert_problem(missing, 404, "not_found")
            after = await client.get("/v1/accounts/wallet/entries", headers={**ledger.read, **STRONG})
            assert after.json() == before.json()
            books = await check_books(client, ledger.read)
            assert books["wallet"] == FUNDS
            assert books["shop"] == 0

            # The refusal stored nothing under the key: sent again, the debit applies, once.
            retried = await client.post("/v1/transfers", json=body, headers=headers)
            assert retried.status_code == 201, retried.text
            assert "idempotent-replayed" not in retried.headers
            books = await check_books(client, ledger.read)
        assert books["wallet"] == FUNDS - 400
        assert books["shop"] == 400

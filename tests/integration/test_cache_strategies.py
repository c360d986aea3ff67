"""The caching strategies behave the same on every backend: in-process, Redis and Memcached.

Each test runs a Tally app in this process on a SQLite file, with ``TALLY_CACHE_URL`` pointing at
a real server the tests started (``memory://`` needs none). Clients send no consistency token
unless a test says so, so that a read may be answered from the cache; what each answer came from
is read off ``tally_cache_requests_total``.

In words, the invariants:
- a read after a committed write shows the write (written through), whatever the backend;
- an entry is never fresher than the database: a hold expiring makes the next read see it gone;
- a request carrying a consistency token is answered from an entry only when the entry covers it;
- ``strong`` reads and writes never use the cache;
- a revoked key is refused on the very next request, though its lookup was cached;
- concurrent misses of one key share one load.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cache_servers import cache_url
from tests.integration.postgres_support import STRONG, plain_asgi_client, token_session
from tests.observability.scrape import samples, total
from tests.support import (
    ROOT,
    LedgerKeys,
    assert_problem,
    funded_account,
    idem,
    new_ledger,
    settings_for,
    sqlite_url,
    transfer,
)

BACKENDS = ("memory", "redis", "memcached")


@pytest.fixture(params=BACKENDS, ids=BACKENDS, scope="module")
def cache(request: pytest.FixtureRequest) -> Iterator[str]:
    with cache_url(request.param) as url:
        yield url


@pytest.fixture
async def client(tmp_path: Path, cache: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = settings_for(
        tmp_path,
        database_url=sqlite_url(tmp_path),
        replica_urls=[],
        cache_url=cache,
        cache_ttl_ms=600_000,  # only writes, holds and tokens may end an entry's freshness here
        cache_timeout_ms=5_000,  # a busy test machine must not turn a slow call into a resting cache
        key_cache_ttl_ms=600_000,
        rate_limit="off",
        hold_sweep_seconds=3600.0,
        key_usage_flush_ms=600_000,  # no background statements between two looks at the metrics
        worker_enabled=False,
        cache_invalidation="off",  # one process: no feed reads between two looks at the metrics
    )
    async with plain_asgi_client(settings) as c:
        yield c


async def lookups(client: httpx.AsyncClient, result: str, cache: str = "accounts") -> float:
    found = samples((await client.get("/metrics")).text)
    return total(found, "tally_cache_requests_total", cache=cache, result=result)


async def balance(
    client: httpx.AsyncClient, keys: LedgerKeys, account: str, **headers: str
) -> dict[str, Any]:
    response = await client.get(f"/v1/accounts/{account}/balance", headers={**keys.read, **headers})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_read_after_a_transfer_shows_it_and_comes_from_the_cache(client: httpx.AsyncClient) -> None:
    keys = await new_ledger(client)
    await funded_account(client, keys, "alice", 100)
    first = await balance(client, keys, "alice")
    hits = await lookups(client, "hit")
    assert (await transfer(client, keys.write, "alice", "world", 30)).status_code == 201
    after = await balance(client, keys, "alice")
    assert after["posted"] == 70
    assert after["version"] == first["version"] + 1
    assert await lookups(client, "hit") == hits + 1  # written through: no load needed

    patched = await client.patch("/v1/accounts/alice", json={"name": "Alice"}, headers=keys.write)
    assert patched.status_code == 200
    account = await client.get("/v1/accounts/alice", headers=keys.read)
    assert account.json()["name"] == "Alice"
    assert account.json()["balance"]["posted"] == 70


async def test_interleaved_transfers_and_reads_leave_the_cache_equal_to_the_database(
    client: httpx.AsyncClient,
) -> None:
    keys = await new_ledger(client)
    await funded_account(client, keys, "alice", 1000)

    async def reads() -> None:
        for _ in range(20):
            await balance(client, keys, "alice")

    async def pays() -> None:
        for _ in range(10):
            assert (await transfer(client, keys.write, "alice", "world", 7)).status_code == 201

    await asyncio.gather(reads(), reads(), pays(), pays())
    cached = await balance(client, keys, "alice")
    strong = await balance(client, keys, "alice", **STRONG)
    assert cached["posted"] == strong["posted"] == 1000 - 20 * 7
    assert cached["version"] == strong["version"]


async def test_a_hold_expiring_ends_the_freshness_of_its_cached_account(client: httpx.AsyncClient) -> None:
    keys = await new_ledger(client)
    await funded_account(client, keys, "alice", 100)
    expires = datetime.now(UTC) + timedelta(milliseconds=400)
    body = {
        "debit_account_id": "alice",
        "credit_account_id": "world",
        "amount": 40,
        "pending": True,
        "expires_at": expires.isoformat(),
    }
    assert (
        await client.post("/v1/transfers", json=body, headers={**keys.write, **idem()})
    ).status_code == 201
    held = await balance(client, keys, "alice")
    assert (held["pending_debits"], held["available"]) == (40, 60)
    assert (await balance(client, keys, "alice"))["pending_debits"] == 40  # cached until the expiry
    await asyncio.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.01)
    released = await balance(client, keys, "alice")  # the sweeper is off: only the read can tell
    assert (released["pending_debits"], released["available"]) == (0, 100)


async def test_a_token_the_entry_does_not_cover_is_answered_by_the_database(
    client: httpx.AsyncClient,
) -> None:
    keys = await new_ledger(client)
    await funded_account(client, keys, "alice", 100)
    await funded_account_other(client, keys, "bob")
    await balance(client, keys, "alice")  # cached
    later = await transfer(client, keys.write, "world", "bob", 5)  # a write alice's entry predates
    token = later.headers["tally-consistency-token"]
    misses = await lookups(client, "miss")
    assert (await balance(client, keys, "alice", **{"Tally-Consistency-Token": token}))["posted"] == 100
    assert await lookups(client, "miss") == misses + 1
    hits = await lookups(client, "hit")
    assert (await balance(client, keys, "alice", **{"Tally-Consistency-Token": token}))["posted"] == 100
    assert await lookups(client, "hit") == hits + 1  # the load covered the token: cached again


async def funded_account_other(client: httpx.AsyncClient, keys: LedgerKeys, account: str) -> None:
    response = await client.post("/v1/accounts", json={"id": account, "currency": "USD"}, headers=keys.write)
    assert response.status_code == 201, response.text


async def test_strong_reads_never_look_in_the_cache(client: httpx.AsyncClient) -> None:
    keys = await new_ledger(client)
    await funded_account(client, keys, "alice", 100)
    before = {result: await lookups(client, result) for result in ("hit", "miss", "error")}
    for _ in range(3):
        assert (await balance(client, keys, "alice", **STRONG))["posted"] == 100
        strong = await client.get("/v1/accounts/alice", headers={**keys.read, **STRONG})
        assert strong.status_code == 200
    assert {result: await lookups(client, result) for result in before} == before


async def test_a_revoked_key_is_refused_on_the_next_request_though_its_lookup_was_cached(
    client: httpx.AsyncClient,
) -> None:
    keys = await new_ledger(client)
    for _ in range(3):
        assert (await client.get("/v1/accounts", headers=keys.read)).status_code == 200
    assert await lookups(client, "hit", cache="api_keys") >= 2
    listed = (await client.get(f"/v1/ledgers/{keys.ledger_id}/keys", headers=ROOT)).json()["data"]
    [read_key] = [key for key in listed if key["name"] == "read"]
    revoked = await client.delete(f"/v1/ledgers/{keys.ledger_id}/keys/{read_key['id']}", headers=ROOT)
    assert revoked.status_code == 204, revoked.text
    assert_problem(await client.get("/v1/accounts", headers=keys.read), 401, "unauthenticated")
    assert_problem(await client.get("/v1/accounts", headers=keys.read), 401, "unauthenticated")


async def test_concurrent_misses_of_one_account_share_one_load(client: httpx.AsyncClient) -> None:
    keys = await new_ledger(client)
    await funded_account(client, keys, "alice", 100)
    # An account with a pending hold is not written through (its next read works out its holds):
    # the hold leaves a tombstone, so the reads below all miss at once.
    body = {"debit_account_id": "alice", "credit_account_id": "world", "amount": 10, "pending": True}
    assert (
        await client.post("/v1/transfers", json=body, headers={**keys.write, **idem()})
    ).status_code == 201
    await client.get("/v1/accounts", headers=keys.read)  # the read key's lookup is cached from here
    found = samples((await client.get("/metrics")).text)
    statements = total(found, "tally_db_query_duration_seconds_count")
    looked = await lookups(client, "miss") + await lookups(client, "hit")
    answers = await asyncio.gather(*(balance(client, keys, "alice") for _ in range(30)))
    assert {(answer["posted"], answer["pending_debits"]) for answer in answers} == {(100, 10)}
    assert await lookups(client, "miss") + await lookups(client, "hit") == looked + 30
    found = samples((await client.get("/metrics")).text)
    # One load is a handful of statements; thirty loads would be well over a hundred.
    assert total(found, "tally_db_query_duration_seconds_count") - statements <= 10


async def test_writes_answer_the_same_with_a_token_session(client: httpx.AsyncClient) -> None:
    """Read-your-writes with tokens holds through the cache (the database answers what it can't)."""
    session = token_session()
    keys = await new_ledger(client)
    await funded_account(client, keys, "alice", 100)
    for amount in (1, 2, 3):
        response = await client.post(
            "/v1/transfers",
            json={"debit_account_id": "alice", "credit_account_id": "world", "amount": amount},
            headers={**keys.write, **idem()},
        )
        await session.after(response)
        request = client.build_request("GET", "/v1/accounts/alice/balance", headers=keys.read)
        await session.before(request)
        assert (await client.send(request)).json()["posted"] == 100 - sum(range(1, amount + 1))

"""Two `tally serve` processes, A and B, on one database, each with its own cache (``memory://``).

Invariants, in plain words:
- what A commits reaches B's cache through the invalidation channel (Redis pub/sub, or the outbox
  feed that B polls), long before any TTL: a balance after a transfer, an account's new name, a
  revoked API key;
- A shows its own commit at once, on the very next request;
- once B shows the new state it keeps showing it: no older load puts the old state back;
- the control: with the channel ``off``, B goes on serving what it cached (the old balance, the
  revoked key) until its TTL. So the tests with a channel see the channel at work, not chance.

Both processes keep accounts and keys fresh for ten minutes (``TALLY_CACHE_TTL_MS``,
``TALLY_KEY_CACHE_TTL_MS``), so within the few seconds these tests wait only the channel can
explain what B shows. The outbox channel carries no key events: there, key entries stay fresh one
poll interval at most (``cache.caches``), and that is what bounds a revocation.

B first caches account ``a`` by writing it (the funding transfer, written through to its own
cache), not by reading it: on PostgreSQL a read that a replica answered is never cached (every
replica answer counts as lagging, ADR 0021), so a read would cache it or not depending on where it
ran. The clients send no consistency tokens (``cache_support``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.cache_servers import cache_server
from tests.integration.cache_support import invalidations, lookups, metrics, plain_client, until
from tests.support import (
    BACKENDS,
    LedgerKeys,
    Server,
    assert_problem,
    bearer,
    new_ledger,
    open_account,
    start_server,
    transfer,
)

pytestmark = pytest.mark.server

TEN_MINUTES_MS = "600000"
CONTROL_SECONDS = 2.0  # how long the control watches B: ten outbox poll intervals
STRONG = {"Tally-Consistency": "strong"}
BALANCE = "/v1/accounts/a/balance"


@dataclass
class Pair:
    a: Server  # where every write goes
    b: Server  # the other process, whose cache must learn of them


@contextmanager
def processes(directory: Path, invalidation: str) -> Iterator[Pair]:
    """A and B on ``directory``'s database, started side by side (each start imports for seconds).

    Both may create the schema at once: SQLite does it under its write lock, PostgreSQL under an
    advisory lock. The database itself is made first, here, so that the two starts share one.
    """
    env = {
        "TALLY_CACHE_URL": "memory://",
        "TALLY_CACHE_INVALIDATION": invalidation,
        "TALLY_CACHE_TTL_MS": TEN_MINUTES_MS,
        "TALLY_KEY_CACHE_TTL_MS": TEN_MINUTES_MS,
    }
    BACKENDS.urls(directory)
    with ThreadPoolExecutor(max_workers=2) as pool:
        starting = [pool.submit(start_server, directory, env) for _ in range(2)]
    started = [future.result() for future in starting if future.exception() is None]
    try:
        for future in starting:
            if (error := future.exception()) is not None:
                raise error
        yield Pair(*started)
    finally:
        for server in started:
            server.stop()


@pytest.fixture(params=["redis", "outbox"])
def channel(request: pytest.FixtureRequest) -> Iterator[str]:
    """``TALLY_CACHE_INVALIDATION``: a Redis server of the test's own, or the outbox."""
    if request.param == "outbox":
        yield "outbox"
        return
    with cache_server("redis") as redis:
        yield redis.url


@pytest.fixture
def pair(backend: str, channel: str, tmp_path: Path) -> Iterator[Pair]:
    del backend  # chosen: the servers run on it
    with processes(tmp_path, channel) as started:
        yield started


@pytest.fixture
def uninformed_pair(tmp_path: Path) -> Iterator[Pair]:
    """The control: no channel between A and B, on SQLite."""
    with BACKENDS.using("sqlite"), processes(tmp_path, "off") as started:
        yield started


def state(response: httpx.Response) -> tuple[int, int]:
    """A balance as ``(posted, version)``: the version tells one state of the account from another."""
    assert response.status_code == 200, response.text
    body = response.json()
    return body["posted"], body["version"]


async def setup(a: httpx.AsyncClient, b: httpx.AsyncClient) -> LedgerKeys:
    """A ledger with ``world``, ``a`` and ``b``, opened through A; ``a`` funded with 1,000 through B."""
    keys = await new_ledger(a)
    await open_account(a, keys.write, id="world", normal_balance="debit", min_balance=None)
    for account_id in ("a", "b"):
        await open_account(a, keys.write, id=account_id)
    funded = await transfer(b, keys.write, "world", "a", 1_000)
    assert funded.status_code == 201, funded.text
    return keys


async def cached_on_b(b: httpx.AsyncClient, keys: LedgerKeys) -> tuple[int, int]:
    """The state of ``a`` that B answers from its cache (B wrote it through with the funding)."""
    hits = lookups(await metrics(b), "accounts", "hit")
    cached = state(await b.get(BALANCE, headers=keys.read))
    assert lookups(await metrics(b), "accounts", "hit") == hits + 1
    assert cached[0] == 1_000
    return cached


async def shared_key(a: httpx.AsyncClient, keys: LedgerKeys) -> tuple[str, dict[str, str]]:
    created = await a.post(
        f"/v1/ledgers/{keys.ledger_id}/keys", json={"name": "shared", "scopes": ["read"]}, headers=keys.admin
    )
    assert created.status_code == 201, created.text
    return created.json()["id"], bearer(created.json()["key"])


async def revoke(a: httpx.AsyncClient, keys: LedgerKeys, key_id: str) -> None:
    revoked = await a.delete(f"/v1/ledgers/{keys.ledger_id}/keys/{key_id}", headers=keys.admin)
    assert revoked.status_code == 204, revoked.text


async def test_what_one_process_commits_reaches_the_others_cache_through_the_channel(pair: Pair) -> None:
    async with plain_client(pair.a) as a, plain_client(pair.b) as b:
        keys = await setup(a, b)
        before = await cached_on_b(b, keys)
        heard = invalidations(await metrics(b))

        # A balance: a transfer through A.
        moved = await transfer(a, keys.write, "a", "b", 25)
        assert moved.status_code == 201, moved.text
        after = state(await a.get(BALANCE, headers={**keys.read, **STRONG}))
        assert after[0] == before[0] - 25
        assert state(await a.get(BALANCE, headers=keys.read)) == after  # A's cache, at once

        async def b_balance() -> tuple[int, int] | None:
            shown = state(await b.get(BALANCE, headers=keys.read))
            return shown if shown == after else None

        await until("B to show the transfer", b_balance)
        assert state(await b.get(BALANCE, headers=keys.read)) == after
        assert invalidations(await metrics(b)) > heard

        # An account's name: a PATCH through A.
        renamed = await a.patch("/v1/accounts/a", json={"name": "Renamed"}, headers=keys.write)
        assert renamed.status_code == 200, renamed.text
        assert (await a.get("/v1/accounts/a", headers=keys.read)).json()["name"] == "Renamed"

        async def b_name() -> str | None:
            shown = await b.get("/v1/accounts/a", headers=keys.read)
            assert shown.status_code == 200, shown.text
            name: str = shown.json()["name"]
            return name if name == "Renamed" else None

        await until("B to show the new name", b_name)
        assert (await b.get("/v1/accounts/a", headers=keys.read)).json()["name"] == "Renamed"

        # An API key: used through both, so both cached it, then revoked through A.
        key_id, key = await shared_key(a, keys)
        for client in (a, b, a, b):
            assert (await client.get(BALANCE, headers=key)).status_code == 200
        await revoke(a, keys, key_id)
        assert_problem(await a.get(BALANCE, headers=key), 401, "unauthenticated")

        async def b_refuses() -> httpx.Response | None:
            used = await b.get(BALANCE, headers=key)
            return used if used.status_code == 401 else None

        assert_problem(await until("B to refuse the revoked key", b_refuses), 401, "unauthenticated")
        assert_problem(await b.get(BALANCE, headers=key), 401, "unauthenticated")


async def test_without_a_channel_the_other_process_serves_what_it_cached_until_the_ttl(
    uninformed_pair: Pair,
) -> None:
    async with plain_client(uninformed_pair.a) as a, plain_client(uninformed_pair.b) as b:
        keys = await setup(a, b)
        before = await cached_on_b(b, keys)
        key_id, key = await shared_key(a, keys)
        for client in (a, b):
            assert (await client.get(BALANCE, headers=key)).status_code == 200

        moved = await transfer(a, keys.write, "a", "b", 25)
        assert moved.status_code == 201, moved.text
        await revoke(a, keys, key_id)
        assert state(await a.get(BALANCE, headers=keys.read))[0] == before[0] - 25
        assert_problem(await a.get(BALANCE, headers=key), 401, "unauthenticated")

        watched_until = time.monotonic() + CONTROL_SECONDS
        while time.monotonic() < watched_until:
            assert state(await b.get(BALANCE, headers=keys.read)) == before
            assert (await b.get(BALANCE, headers=key)).status_code == 200
            await asyncio.sleep(0.05)
        assert invalidations(await metrics(b)) == 0
        # The database had it all along: a strong read through B shows the transfer.
        assert state(await b.get(BALANCE, headers={**keys.read, **STRONG}))[0] == before[0] - 25

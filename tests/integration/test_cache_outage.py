"""The cache server (``TALLY_CACHE_URL``) killed under load, then started again: no request fails.

Invariants, in plain words:
- while Redis or Memcached is gone, every request still succeeds: the database answers what the
  cache cannot (``GuardedCache``), and the rate limiter, which uses the same server, fails open;
- the outage is real and counted: cache calls fail (``tally_cache_errors_total``) and lookups
  are counted with the result ``error``;
- once the server is back (empty: it persisted nothing), the cache fills again: once hits resume
  (after the backend's short rest), most lookups are hits;
- money is exact: each balance is its funding plus the transfers that were answered 201, whether
  the database answers (``strong``) or the cache does.

One `tally serve` process on SQLite; eight clients in this process: six read balances, two move
money between four accounts. The server is killed with SIGKILL after a warm-up, kept down for a
while, and started again on the same port. The phases last seconds so that each sees plenty of
requests; no timing is asserted.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.cache_servers import CacheServer, cache_server
from tests.integration.cache_support import cache_errors, lookups, metrics, plain_client, until
from tests.observability.scrape import Sample, total
from tests.support import LedgerKeys, Server, idem, new_ledger, open_account, start_server, transfer

pytestmark = pytest.mark.server

ACCOUNTS = ("a0", "a1", "a2", "a3")
FUNDING = 1_000_000
READERS, WRITERS = 6, 2
WARM_SECONDS = 1.5  # load before the kill, so that the cache is full and hits are counted
OUTAGE_SECONDS = 2.0
RECOVERY_SECONDS = 2.0
STRONG = {"Tally-Consistency": "strong"}


@dataclass
class Load:
    """What the clients saw, by phase (``warm``, ``outage``, ``recovery``)."""

    phase: str = "warm"
    answered: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    moved: list[tuple[str, str, int]] = field(default_factory=list)  # (debit, credit, amount), all 201
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    resent: int = 0  # requests sent again after their kept-alive connection closed under them

    def saw(self, what: str, response: httpx.Response, expected: int) -> bool:
        if response.status_code == expected:
            self.answered[self.phase] += 1
            return True
        self.failures.append(f"{self.phase}: {what} answered {response.status_code}: {response.text[:200]}")
        return False


@pytest.fixture(params=["redis", "memcached"])
def cache(request: pytest.FixtureRequest) -> Iterator[CacheServer]:
    with cache_server(request.param) as server:
        yield server


@pytest.fixture
def server(cache: CacheServer, tmp_path: Path) -> Iterator[Server]:
    env = {
        "TALLY_CACHE_URL": cache.url,
        "TALLY_CACHE_TTL_MS": "600000",  # no entry expires during the test: hits come from the cache
        # A killed server refuses at once; a busy test machine must not turn slow calls into rests.
        "TALLY_CACHE_TIMEOUT_MS": "1000",
        # The rate limiter keeps its counters on the cache's server too; it must fail open during the
        # outage, but never limit this load.
        "TALLY_RATE_LIMIT": "100000/second",
    }
    running = start_server(tmp_path, env)
    try:
        yield running
    finally:
        running.stop()


async def funded(client: httpx.AsyncClient) -> LedgerKeys:
    keys = await new_ledger(client)
    await open_account(client, keys.write, id="world", normal_balance="debit", min_balance=None)
    for account_id in ACCOUNTS:
        await open_account(client, keys.write, id=account_id)
        moved = await transfer(client, keys.write, "world", account_id, FUNDING)
        assert moved.status_code == 201, moved.text
    return keys


async def send(client: httpx.AsyncClient, load: Load, request: httpx.Request) -> httpx.Response:
    """Send ``request``; once more on a fresh connection if the kept-alive one was closed under it.

    What any careful HTTP client does: a server may close an idle keep-alive connection just as
    the client reuses it (uvicorn closes them after 5 s idle, and a busy machine can leave one
    idle that long), and the request never reached the application. A read is safe to repeat, a
    transfer too: it carries its Idempotency-Key. The repeats are counted, and any second failure
    is the test's.
    """
    try:
        return await client.send(request)
    except httpx.RemoteProtocolError:
        load.resent += 1
        return await client.send(request)


async def read_balances(server: Server, keys: LedgerKeys, load: Load, seed: int) -> None:
    pick = random.Random(seed)
    async with plain_client(server) as client:
        while not load.stop.is_set():
            account_id = pick.choice(ACCOUNTS)
            asked = client.build_request("GET", f"/v1/accounts/{account_id}/balance", headers=keys.read)
            try:
                read = await send(client, load, asked)
            except httpx.HTTPError as error:
                load.failures.append(f"{load.phase}: balance of {account_id}: {error!r}")
            else:
                load.saw(f"balance of {account_id}", read, 200)


async def move_money(server: Server, keys: LedgerKeys, load: Load, seed: int) -> None:
    pick = random.Random(seed)
    async with plain_client(server) as client:
        while not load.stop.is_set():
            debit, credit = pick.sample(ACCOUNTS, 2)
            amount = pick.randint(1, 100)
            body = {"debit_account_id": debit, "credit_account_id": credit, "amount": amount}
            asked = client.build_request("POST", "/v1/transfers", json=body, headers={**keys.write, **idem()})
            try:
                moved = await send(client, load, asked)
            except httpx.HTTPError as error:
                load.failures.append(f"{load.phase}: transfer {debit}->{credit}: {error!r}")
            else:
                if load.saw(f"transfer {debit}->{credit}", moved, 201):
                    load.moved.append((debit, credit, amount))


def _unusual(lines: list[str]) -> list[str]:
    """The server's log lines other than its routine access lines, and its last ten lines."""
    routine = ('"status": 200', '"status": 201')
    return [line for line in lines if not any(mark in line for mark in routine)] + ["..."] + lines[-10:]


def expected_balances(load: Load) -> dict[str, int]:
    balances = dict.fromkeys(ACCOUNTS, FUNDING)
    for debit, credit, amount in load.moved:
        balances[debit] -= amount
        balances[credit] += amount
    return balances


async def test_a_cache_server_killed_under_load_fails_no_request_and_is_used_again_once_back(
    cache: CacheServer, server: Server
) -> None:
    async with plain_client(server) as client:
        keys = await funded(client)
        load = Load()
        clients = [read_balances(server, keys, load, seed) for seed in range(READERS)]
        clients += [move_money(server, keys, load, 100 + seed) for seed in range(WRITERS)]
        running = [asyncio.create_task(work) for work in clients]
        try:
            await asyncio.sleep(WARM_SECONDS)
            before = await metrics(client)
            await asyncio.to_thread(cache.stop, kill=True)
            load.phase = "outage"
            await asyncio.sleep(OUTAGE_SECONDS)
            await asyncio.to_thread(cache.start)
            load.phase = "recovery"
            restarted = await metrics(client)

            async def hits_again() -> list[Sample] | None:
                # After a failure the backend rests a moment (GuardedCache): hits resume after it.
                now = await metrics(client)
                return (
                    now if lookups(now, "accounts", "hit") > lookups(restarted, "accounts", "hit") else None
                )

            recovered = await until("hits after the restart", hits_again)
            await asyncio.sleep(RECOVERY_SECONDS)
            end = await metrics(client)
        finally:
            load.stop.set()
            await asyncio.gather(*running)

        # The server's own account of a failure (a dropped connection leaves nothing in the answer).
        assert load.failures == [], "\n".join(_unusual(server.log_lines()))
        assert min(load.answered[phase] for phase in ("warm", "outage", "recovery")) > 0, load.answered
        # The outage was real: calls failed, and lookups fell through to the database.
        assert cache_errors(restarted) > cache_errors(before)
        assert lookups(restarted, "accounts", "error") > lookups(before, "accounts", "error")
        assert lookups(before, "accounts", "hit") > 0
        # Back, the cache is used again: once hits resume, most lookups are hits.
        since = {
            result: lookups(end, "accounts", result) - lookups(recovered, "accounts", result)
            for result in ("hit", "miss", "error", "stale")
        }
        assert since["hit"] > since["miss"] + since["error"] + since["stale"], since

        expected = expected_balances(load)
        for account_id, balance in expected.items():
            path = f"/v1/accounts/{account_id}/balance"
            strong = await client.get(path, headers={**keys.read, **STRONG})
            assert strong.json()["posted"] == balance, account_id
            cached = await client.get(path, headers=keys.read)
            assert cached.json()["posted"] == balance, account_id


@pytest.mark.parametrize("how", ["killed", "hung"])
async def test_a_read_while_the_cache_is_down_or_hung_calls_it_a_bounded_few_times(
    tmp_path: Path, how: str
) -> None:
    """One failed call rests the backend: the next calls of the request do not wait on it again."""
    with cache_server("redis") as redis:
        server = start_server(tmp_path, {"TALLY_CACHE_URL": redis.url, "TALLY_RATE_LIMIT": "off"})
        try:
            async with plain_client(server) as client:
                keys = await new_ledger(client)
                await open_account(client, keys.write, id="a")
                assert redis.process is not None
                if how == "killed":
                    redis.stop(kill=True)
                else:
                    os.kill(redis.process.pid, signal.SIGSTOP)
                try:
                    before = await metrics(client)
                    for _ in range(3):
                        read = await client.get("/v1/accounts/a/balance", headers=keys.read)
                        assert read.status_code == 200, read.text
                    after = await metrics(client)
                finally:
                    if how == "hung":
                        os.kill(redis.process.pid, signal.SIGCONT)
            # Three reads: each looks up its key and its account. Without the rest, each miss would
            # also try the load lock and wait on the server ten more times.
            looked = {
                operation: total(after, "tally_cache_errors_total", operation=operation)
                - total(before, "tally_cache_errors_total", operation=operation)
                for operation in ("get", "add", "set")
            }
            assert looked["get"] <= 6, looked
            assert looked["add"] <= 3, looked
        finally:
            server.stop()

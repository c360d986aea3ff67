"""Balance reads with no cache, the in-process cache, Redis and Memcached, side by side, in one run.

For each configuration it starts one `tally serve` of its own on loopback, on a fresh SQLite file
in a temporary directory (``bench_observability.start``: ``TALLY_SQLITE_SYNCHRONOUS=NORMAL``, which
only speeds up the setup's writes), with ``TALLY_RATE_LIMIT=off`` (one key at a high rate) and
``TALLY_LOG_LEVEL=WARNING`` (no access line):

- ``no cache``: ``TALLY_CACHE_TTL_MS=0`` and ``TALLY_KEY_CACHE_TTL_MS=0``, no cache lookups at all:
  every account and API key read goes to the database;
- ``memory``: ``TALLY_CACHE_URL=memory://`` (in-process);
- ``redis``: a real ``redis-server`` on a free loopback port (the tests' ``tests/cache_servers.py``);
- ``memcached``: a real ``memcached``, likewise.

It opens ``--accounts`` accounts and funds them with two batches of transfers, so that balances
are not trivial, then sends ``GET /v1/accounts/{id}/balance`` for random accounts from
``--clients`` workers, each with its own client and keep-alive connection, closed loop: a warm-up
of ``--warmup`` s (not counted), then ``--seconds`` s measured. Per configuration it reports
requests/s, latency percentiles, errors, the server process's CPU time per request (user + system,
from /proc: unlike requests/s and latency it does not move with the client's own CPU or with other
processes sharing the cores), and the lookups and hit ratio of the ``accounts`` cache during the
measured window (``tally_cache_requests_total`` from ``/metrics``, read before and after).

The client runs in this process, on the same cores as the server: with few cores, requests/s and
latency are the pair's, client included; compare the configurations with one another.

    .venv/bin/python scripts/bench_cache.py [--clients 16] [--seconds 10] [--warmup 2] [--accounts 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' cache servers

import httpx
from bench_fixture import ledger_with_two_accounts, print_table
from bench_observability import start
from prometheus_client.parser import text_string_to_metric_families
from tests.cache_servers import cache_server

from tally.bench.results import percentile
from tally.bench.server_load import cpu_seconds
from tally.domain.keys import new_secret

CONFIGURATIONS = ("no cache", "memory", "redis", "memcached")
QUIET = {"TALLY_RATE_LIMIT": "off", "TALLY_LOG_LEVEL": "WARNING"}


@contextmanager
def serving(directory: Path, root: str, extra: dict[str, str]) -> Iterator[tuple[str, int]]:
    """`tally serve` on a free port for the block (``bench_observability.start``); its URL and pid."""
    process, base = start(directory, root, extra)
    try:
        yield base, process.pid
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextmanager
def settings_for(name: str) -> Iterator[dict[str, str]]:
    """The ``TALLY_*`` settings of configuration ``name``, with its cache server up for the block."""
    if name == "no cache":
        yield {**QUIET, "TALLY_CACHE_TTL_MS": "0", "TALLY_KEY_CACHE_TTL_MS": "0"}
    elif name == "memory":
        yield {**QUIET, "TALLY_CACHE_URL": "memory://"}
    else:
        with cache_server(name) as server:
            yield {**QUIET, "TALLY_CACHE_URL": server.url}


async def prepare(client: httpx.AsyncClient, root: str, accounts: int) -> dict[str, str]:
    """A ledger, a write key and ``accounts`` accounts holding different balances; the key's headers."""
    headers = await ledger_with_two_accounts(client, root)
    gate = asyncio.Semaphore(16)

    async def open_account(number: int) -> None:
        async with gate:
            body = {"id": f"a{number:05d}", "currency": "USD"}
            response = await client.post("/v1/accounts", json=body, headers=headers)
            response.raise_for_status()

    await asyncio.gather(*(open_account(number) for number in range(accounts)))
    rng = random.Random(42)  # noqa: S311 (test data, not a secret)
    funding = [
        {"debit_account_id": "source", "credit_account_id": f"a{n:05d}", "amount": rng.randint(1000, 99_999)}
        for n in range(accounts)
    ]
    moves = [
        {"debit_account_id": f"a{n:05d}", "credit_account_id": f"a{(n + 1) % accounts:05d}", "amount": 1}
        for n in (rng.randrange(accounts) for _ in range(accounts // 2))
    ]
    for items in (funding, moves):
        for first in range(0, len(items), 1000):  # MAX_BATCH
            response = await client.post(
                "/v1/transfers/batch",
                json={"transfers": items[first : first + 1000], "atomic": True},
                headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
                timeout=120,
            )
            response.raise_for_status()
    return headers


async def cache_lookups(client: httpx.AsyncClient) -> dict[str, float]:
    """``tally_cache_requests_total`` of the ``accounts`` cache, by result."""
    text = (await client.get("/metrics")).raise_for_status().text
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "tally_cache_requests_total" and sample.labels.get("cache") == "accounts":
                result = sample.labels["result"]
                counts[result] = counts.get(result, 0.0) + sample.value
    return counts


async def measure(base: str, pid: int, root: str, args: argparse.Namespace, name: str) -> dict[str, Any]:
    """Open the accounts, warm up, then read balances from ``args.clients`` workers for ``args.seconds``."""
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with AsyncExitStack() as stack:
        setup = await stack.enter_async_context(httpx.AsyncClient(base_url=base, timeout=30))
        headers = await prepare(setup, root, args.accounts)
        # One client (one keep-alive connection) per worker, made once: a client costs tens of ms
        # to make (its TLS context), which must not fall in the measured window.
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=base, timeout=30, limits=limits, headers=headers)
            )
            for _ in range(args.clients)
        ]
        ids = [f"a{number:05d}" for number in range(args.accounts)]
        rngs = [random.Random(seed) for seed in range(args.clients)]  # noqa: S311 (not a secret)
        latencies: list[float] = []
        errors = 0

        async def worker(client: httpx.AsyncClient, rng: random.Random, until: float, measured: bool) -> None:
            nonlocal errors
            while time.perf_counter() < until:
                sent = time.perf_counter()
                try:
                    response = await client.get(f"/v1/accounts/{rng.choice(ids)}/balance")
                    failed = response.status_code != 200
                except httpx.HTTPError:
                    failed = True
                if measured:
                    latencies.append((time.perf_counter() - sent) * 1000)
                    errors += failed

        warm_until = time.perf_counter() + args.warmup
        await asyncio.gather(*(worker(*pair, warm_until, False) for pair in zip(clients, rngs, strict=True)))
        before = await cache_lookups(setup)
        started, cpu = time.perf_counter(), cpu_seconds(pid)
        stop_at = started + args.seconds
        await asyncio.gather(*(worker(*pair, stop_at, True) for pair in zip(clients, rngs, strict=True)))
        elapsed, used = time.perf_counter() - started, cpu_seconds(pid) - cpu
        after = await cache_lookups(setup)
    lookups = {result: after.get(result, 0.0) - before.get(result, 0.0) for result in after}
    total = sum(lookups.values())
    latencies.sort()
    return {
        "cache": name,
        "requests": len(latencies),
        "requests_per_second": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(latencies, 0.50), 3),
        "p99_ms": round(percentile(latencies, 0.99), 3),
        "max_ms": round(latencies[-1], 3),
        "errors": errors,
        "srv_cpu_us_per_req": round(1e6 * used / len(latencies)),
        "cache_lookups": round(total),
        "hit_ratio": f"{lookups.get('hit', 0.0) / total:.3f}" if total else "-",
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--accounts", type=int, default=1000)
    args = parser.parse_args()
    root = new_secret("root")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as directory:
        for name in CONFIGURATIONS:
            run_dir = Path(directory) / name.replace(" ", "-")
            run_dir.mkdir()
            with settings_for(name) as extra, serving(run_dir, root, extra) as (base, pid):
                rows.append(asyncio.run(measure(base, pid, root, args, name)))
    print(
        f"GET /v1/accounts/{{id}}/balance, SQLite, {args.accounts} accounts, {args.clients} keep-alive "
        f"connections, closed loop, {args.seconds:g} s per configuration after {args.warmup:g} s warm-up"
    )
    columns = (
        "cache", "requests_per_second", "p50_ms", "p99_ms", "max_ms", "errors", "srv_cpu_us_per_req",
        "cache_lookups", "hit_ratio",
    )  # fmt: skip
    print_table(columns, rows)
    return 0 if all(row["errors"] == 0 for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

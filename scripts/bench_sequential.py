"""Single transfers against a real `tally serve`: transfers/s and latency percentiles.

Starts its own server on loopback on a fresh SQLite file in a temporary directory, opens accounts,
then sends transfers: one after another over one keep-alive connection (the default), or from
``--clients N`` concurrent connections. Closed loop: it measures what one process serves, not an
open-loop P99 under a fixed arrival rate (that is the benchmark harness of the performance issue).

    .venv/bin/python scripts/bench_sequential.py [--transfers 2000] [--warmup 200] [--clients 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from bench_fixture import ledger_with_two_accounts, serving

from tally.domain.keys import new_secret


def percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transfers", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--clients", type=int, default=1)
    args = parser.parse_args()
    root = new_secret("root")
    port = 18000 + os.getpid() % 1000
    with tempfile.TemporaryDirectory() as directory, serving(Path(directory), root, port) as base:
        return asyncio.run(run(base, root, args))


async def run(base: str, root: str, args: argparse.Namespace, database: str = "SQLite") -> int:
    report = await measure(base, root, args, database)
    print(json.dumps(report, indent=2))
    return 0 if report["errors"] == 0 else 1


async def measure(base: str, root: str, args: argparse.Namespace, database: str) -> dict[str, Any]:
    """Warm up, then send ``args.transfers`` transfers from ``args.clients`` connections."""
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
        headers = await ledger_with_two_accounts(client, root)
        body = {"debit_account_id": "source", "credit_account_id": "sink", "amount": 1}
        latencies: list[float] = []
        errors = 0

        async def one(measure: bool) -> None:
            nonlocal errors
            sent = time.perf_counter()
            response = await client.post(
                "/v1/transfers", json=body, headers={**headers, "Idempotency-Key": uuid.uuid4().hex}
            )
            if measure:
                latencies.append((time.perf_counter() - sent) * 1000)
                errors += response.status_code != 201

        async def worker(count: int, measure: bool) -> None:
            for _ in range(count):
                await one(measure)

        await asyncio.gather(*(worker(args.warmup // args.clients, False) for _ in range(args.clients)))
        started = time.perf_counter()
        per_client = args.transfers // args.clients
        await asyncio.gather(*(worker(per_client, True) for _ in range(args.clients)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "scenario": f"single transfers, {database}, {args.clients} keep-alive connection(s), closed loop",
        "transfers": len(latencies),
        "errors": errors,
        "transfers_per_second": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(latencies, 0.50), 3),
        "p99_ms": round(percentile(latencies, 0.99), 3),
        "max_ms": round(latencies[-1], 3),
    }


if __name__ == "__main__":
    sys.exit(main())

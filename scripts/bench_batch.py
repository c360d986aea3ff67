"""Transfer batches against a real `tally serve`: transfers/s through `POST /v1/transfers/batch`.

Starts its own server on loopback on a fresh SQLite file, opens two accounts, then sends batches of
``--size`` simple transfers (atomic), one after another, and reports the time per batch and the
transfers per second. Closed loop, one client: what one batch costs, next to the single transfers of
`bench_sequential.py`.

    .venv/bin/python scripts/bench_batch.py [--size 1000] [--batches 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from bench_fixture import ledger_with_two_accounts, serving

from tally.domain.keys import new_secret


async def run(base: str, root: str, args: argparse.Namespace) -> int:
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        headers = await ledger_with_two_accounts(client, root)
        item = {"debit_account_id": "source", "credit_account_id": "sink", "amount": 1}
        body = {"transfers": [item] * args.size, "atomic": True}
        seconds: list[float] = []
        for number in range(args.batches + 1):
            sent = time.perf_counter()
            response = await client.post(
                "/v1/transfers/batch", json=body, headers={**headers, "Idempotency-Key": uuid.uuid4().hex}
            )
            if response.status_code != 201:
                print(response.text)
                return 1
            if number:  # the first batch warms up
                seconds.append(time.perf_counter() - sent)
    seconds.sort()
    report = {
        "batch_size": args.size,
        "batches": args.batches,
        "median_ms_per_batch": round(seconds[len(seconds) // 2] * 1000, 1),
        "max_ms_per_batch": round(seconds[-1] * 1000, 1),
        "transfers_per_second": round(args.size * len(seconds) / sum(seconds), 1),
    }
    print(json.dumps(report, indent=2))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=10)
    args = parser.parse_args()
    root = new_secret("root")
    port = 19000 + os.getpid() % 1000
    with tempfile.TemporaryDirectory() as directory, serving(Path(directory), root, port) as base:
        return asyncio.run(run(base, root, args))


if __name__ == "__main__":
    raise SystemExit(main())

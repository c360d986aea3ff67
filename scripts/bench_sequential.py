"""Sequential single transfers against a real `tally serve`: transfers/s and latency percentiles.

Starts its own server on loopback on a fresh SQLite file in a temporary directory, opens accounts,
sends N transfers one after another over one keep-alive connection, and prints the figures.

    .venv/bin/python scripts/bench_sequential.py [--transfers 2000] [--warmup 200]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from tally.domain.keys import new_secret


def percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transfers", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()
    root = new_secret("root")
    with tempfile.TemporaryDirectory() as directory:
        port = 18000 + os.getpid() % 1000
        env = {
            **os.environ,
            "TALLY_ROOT_KEY": root,
            "TALLY_DATABASE_URL": f"sqlite:///{Path(directory) / 'bench.db'}",
            "TALLY_LOG_FORMAT": "json",
            "TALLY_LOG_LEVEL": "WARNING",
        }
        tally = Path(sys.executable).parent / "tally"
        server = subprocess.Popen(
            [str(tally), "serve", "--port", str(port)],
            env=env,
            cwd=directory,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            return run(f"http://127.0.0.1:{port}", root, args.transfers, args.warmup)
        finally:
            server.terminate()
            server.wait(timeout=10)


def run(base: str, root: str, count: int, warmup: int) -> int:
    with httpx.Client(base_url=base, timeout=10) as client:
        for _ in range(100):
            try:
                client.get("/healthz")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        auth = {"Authorization": f"Bearer {root}"}
        ledger = client.post("/v1/ledgers", json={"name": "bench"}, headers=auth).json()["id"]
        key = client.post(
            f"/v1/ledgers/{ledger}/keys", json={"name": "bench", "scopes": ["write"]}, headers=auth
        ).json()["key"]
        headers = {"Authorization": f"Bearer {key}"}
        client.post(
            "/v1/accounts",
            json={"id": "source", "currency": "USD", "normal_balance": "debit", "min_balance": None},
            headers=headers,
        )
        client.post("/v1/accounts", json={"id": "sink", "currency": "USD"}, headers=headers)
        body = {"debit_account_id": "source", "credit_account_id": "sink", "amount": 1}
        latencies: list[float] = []
        errors = 0
        started = 0.0
        for i in range(warmup + count):
            if i == warmup:
                started = time.perf_counter()
            sent = time.perf_counter()
            response = client.post(
                "/v1/transfers", json=body, headers={**headers, "Idempotency-Key": uuid.uuid4().hex}
            )
            if i >= warmup:
                latencies.append((time.perf_counter() - sent) * 1000)
                errors += response.status_code != 201
        elapsed = time.perf_counter() - started
    latencies.sort()
    report = {
        "scenario": "sequential single transfers, SQLite, one keep-alive connection",
        "transfers": count,
        "errors": errors,
        "transfers_per_second": round(count / elapsed, 1),
        "p50_ms": round(percentile(latencies, 0.50), 3),
        "p99_ms": round(percentile(latencies, 0.99), 3),
        "max_ms": round(latencies[-1], 3),
    }
    print(json.dumps(report, indent=2))
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

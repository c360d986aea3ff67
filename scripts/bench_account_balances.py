"""What moving balances out of ``accounts`` bought (ADR 0034): WAL written per transfer, before and after.

Starts a durable PostgreSQL 15 primary + streaming replica (``tests/pg_cluster.py``), then for each
shape — balances as columns of ``accounts`` (the schema at revision ``0002_statements``) and
balances in ``account_balances`` (the head schema) — a fresh ``tally serve``, 200 accounts carrying a
name and ~400 bytes of metadata as real accounts do, and ``--transfers`` transfers between random
accounts from 8 keep-alive clients. WAL bytes are read from ``pg_current_wal_insert_lsn()`` around
the measured run (the replica streams every one of them).

    .venv/bin/python scripts/bench_account_balances.py [--transfers 4000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' PostgreSQL harness

import httpx
from alembic import command
from bench_fixture import ledger_with_two_accounts, print_table, serving
from tests.pg_cluster import PgCluster, cluster

from tally.domain.keys import new_secret
from tally.store.schema import alembic_config

ACCOUNTS = 200
CLIENTS = 8
METADATA = {"customer": "c" * 64, "address": "a" * 160, "notes": "n" * 160}


def wal_position(pg: PgCluster, database: str) -> int:
    rows = pg.primary.execute("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn", database, ())
    return int(rows[0][0])


async def run(base: str, root: str, pg: PgCluster, database: str, transfers: int) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
        headers = await ledger_with_two_accounts(client, root)
        for i in range(ACCOUNTS):
            body = {"id": f"a{i}", "currency": "USD", "name": f"Account {i}", "metadata": METADATA}
            await client.post("/v1/accounts", json=body, headers=headers)
            fund = {"debit_account_id": "source", "credit_account_id": f"a{i}", "amount": 10**9}
            await client.post(
                "/v1/transfers", json=fund, headers={**headers, "Idempotency-Key": uuid.uuid4().hex}
            )
        latencies: list[float] = []
        errors = 0
        rng = random.Random(7)  # noqa: S311 - which accounts a transfer moves between, not a secret

        async def worker(count: int) -> None:
            nonlocal errors
            for _ in range(count):
                a, b = rng.sample(range(ACCOUNTS), 2)
                body = {"debit_account_id": f"a{a}", "credit_account_id": f"a{b}", "amount": 1}
                sent = time.perf_counter()
                response = await client.post(
                    "/v1/transfers", json=body, headers={**headers, "Idempotency-Key": uuid.uuid4().hex}
                )
                latencies.append((time.perf_counter() - sent) * 1000)
                errors += response.status_code != 201

        await asyncio.gather(*(worker(50) for _ in range(CLIENTS)))  # warm-up
        latencies.clear()
        before = wal_position(pg, database)
        started = time.perf_counter()
        await asyncio.gather(*(worker(transfers // CLIENTS) for _ in range(CLIENTS)))
        elapsed = time.perf_counter() - started
        wal = wal_position(pg, database) - before
    latencies.sort()
    return {
        "transfers_per_second": round(len(latencies) / elapsed, 1),
        "p99_ms": round(latencies[int(0.99 * (len(latencies) - 1))], 2),
        "wal_bytes_per_transfer": round(wal / len(latencies)),
        "errors": errors,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transfers", type=int, default=4000)
    args = parser.parse_args()
    root = new_secret("root")
    rows: list[dict[str, Any]] = []
    with cluster(durable=True) as pg, tempfile.TemporaryDirectory() as directory:
        for shape in ("columns of accounts", "account_balances"):
            name = pg.create_database()
            url = pg.primary.url(name)
            if shape == "columns of accounts":
                config = alembic_config()
                config.set_main_option("sqlalchemy.url", url)
                command.upgrade(config, "0002_statements")
            run_dir = Path(directory) / shape.replace(" ", "-")
            run_dir.mkdir()
            port = 18000 + (os.getpid() + len(rows)) % 1000
            extra = {"TALLY_DATABASE_URL": url, "TALLY_REPLICA_URLS": pg.replica.url(name)}
            with serving(run_dir, root, port, extra) as base:
                row = asyncio.run(run(base, root, pg, name, args.transfers))
            rows.append({"balances": shape, **row})
    print_table(("balances", "transfers_per_second", "p99_ms", "wal_bytes_per_transfer", "errors"), rows)
    return 0 if all(row["errors"] == 0 for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Single transfers on SQLite and on PostgreSQL, side by side, in one run of one script.

Starts a durable PostgreSQL 15 primary with a streaming replica on loopback (the test suite's
harness, ``tests/pg_cluster.py``: fsync on, like SQLite's ``synchronous=FULL``), then runs the same
closed-loop measurement as ``bench_sequential.py`` against a fresh `tally serve` on each database,
with 1 and 16 clients, and prints one table.

    .venv/bin/python scripts/bench_databases.py [--transfers 2000] [--warmup 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' PostgreSQL harness

from bench_fixture import print_table, serving
from bench_sequential import measure
from tests.pg_cluster import cluster

from tally.domain.keys import new_secret


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transfers", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()
    root = new_secret("root")
    rows: list[dict[str, Any]] = []
    with cluster(durable=True) as pg, tempfile.TemporaryDirectory() as directory:
        for clients in (1, 16):
            for database in ("SQLite", "PostgreSQL"):
                extra: dict[str, str] = {}
                if database == "PostgreSQL":
                    name = pg.create_database()
                    extra = {
                        "TALLY_DATABASE_URL": pg.primary.url(name),
                        "TALLY_REPLICA_URLS": pg.replica.url(name),
                    }
                run_dir = Path(directory) / f"{database}-{clients}"
                run_dir.mkdir()
                port = 18000 + (os.getpid() + len(rows)) % 1000
                options = argparse.Namespace(transfers=args.transfers, warmup=args.warmup, clients=clients)
                with serving(run_dir, root, port, extra) as base:
                    row = asyncio.run(measure(base, root, options, database))
                rows.append({"database": database, "clients": clients, **row})
    columns = ("database", "clients", "transfers_per_second", "p50_ms", "p99_ms", "max_ms", "errors")
    print_table(columns, rows)
    return 0 if all(row["errors"] == 0 for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Each database the bench runs on: its raw ceilings first, then a fresh `tally serve` and the scenarios.

The ceilings run while no Tally server is up, so that neither takes CPU from the other. Then one
``tally serve`` per database (on SQLite a file in the run's work directory; on PostgreSQL a fresh
database on a durable primary, with its streaming replica as ``TALLY_REPLICA_URLS``), the ledger is
set up once (``bench.setup``), and every scenario runs on it in turn. The server's log is kept in
the output directory.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tally.bench.ceilings import postgresql_ceilings, sqlite_ceilings
from tally.bench.loops import Measurement
from tally.bench.options import BenchOptions
from tally.bench.results import Measured
from tally.bench.scenarios import measure, runs
from tally.bench.setup import prepare_ledger
from tally.domain.keys import new_secret
from tally.harness.postgres import PgCluster
from tally.harness.tally_server import running_tally

# Measure the service, not the volume of its access log nor its rate limit: one key drives all the
# load, so a per-key limit would be the measurement. The scheduler looks for due batch jobs every
# second, not every 30 s: a fresh server runs its daily jobs' due periods at once, on the empty
# database, as a server that has been up a day has run them, instead of inside whichever
# measurement runs 30 s after its start (ADR 0044). Everything else is left at its default.
SERVER_ENV = {"TALLY_RATE_LIMIT": "off", "TALLY_LOG_LEVEL": "WARNING", "TALLY_JOB_SCHEDULE_SECONDS": "1"}

Progress = Callable[[str], None]


@dataclass
class DatabaseResult:
    database: str
    version: str
    server_log: Path
    measurements: list[Measurement] = field(default_factory=list)
    ceilings: dict[str, Measured] = field(default_factory=dict)  # by yardstick: "single", "batch"


def bench_sqlite(options: BenchOptions, work: Path, progress: Progress) -> DatabaseResult:
    directory = work / "sqlite"
    directory.mkdir()
    result = DatabaseResult("sqlite", sqlite3.sqlite_version, options.out / "server-sqlite.log")
    if _transfer_scenarios(options):
        result.ceilings = asyncio.run(sqlite_ceilings(directory, options, progress))
    env = {"TALLY_DATABASE_URL": f"sqlite:///{directory / 'tally.db'}"}
    result.measurements = _bench_tally(
        "sqlite", env, directory, log=result.server_log, options=options, progress=progress
    )
    return result


def bench_postgresql(
    options: BenchOptions, cluster: PgCluster, work: Path, progress: Progress
) -> DatabaseResult:
    directory = work / "postgresql"
    directory.mkdir()
    version = str(cluster.primary.execute("SHOW server_version")[0][0])
    result = DatabaseResult("postgresql", version, options.out / "server-postgresql.log")
    if _transfer_scenarios(options):
        ceiling_url = cluster.primary.url(cluster.create_database())
        result.ceilings = asyncio.run(postgresql_ceilings(ceiling_url, options, progress))
    name = cluster.create_database()
    env = {
        "TALLY_DATABASE_URL": cluster.primary.url(name),
        "TALLY_REPLICA_URLS": ",".join(replica.url(name) for replica in cluster.replicas),
    }
    result.measurements = _bench_tally(
        "postgresql", env, directory, log=result.server_log, options=options, progress=progress
    )
    return result


def _transfer_scenarios(options: BenchOptions) -> bool:
    return any(scenario != "reads" for scenario in options.scenarios)


def _bench_tally(
    database: str,
    env: dict[str, str],
    directory: Path,
    *,
    log: Path,
    options: BenchOptions,
    progress: Progress,
) -> list[Measurement]:
    root_key = new_secret("root")
    env = {**SERVER_ENV, **dict(options.settings), **env, "TALLY_ROOT_KEY": root_key}
    args = ("--workers", str(options.workers))
    progress(f"{database}: starting tally serve ({options.workers} worker(s))")
    with running_tally(directory, env, args=args, log_path=log) as server:
        return asyncio.run(_measure_all(database, server.base_url, root_key, options, progress))


async def _measure_all(
    database: str, base_url: str, root_key: str, options: BenchOptions, progress: Progress
) -> list[Measurement]:
    progress(f"{database}: opening and funding {options.accounts} accounts")
    ledger = await prepare_ledger(base_url, root_key, options.accounts)
    measurements = []
    for run in runs(options):
        progress(f"{database}: {run.label}, {options.warmup:g} s warm-up + {options.seconds:g} s")
        measurements.append(await measure(run, base_url, ledger, database, options))
    return measurements

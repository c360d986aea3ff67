"""The database's own ceiling, measured in the same run: Tally's figures are read as ratios of it.

``single``: the transfer transaction Tally runs for one ``POST /v1/transfers`` (the same rows:
transfer, legs, entries, balance updates, idempotency record, outbox row), straight against the
database with no HTTP and no service layer, one transaction per transfer; on PostgreSQL, a stored
procedure called by pgbench clients. ``batch`` (SQLite only): the same rows for 1000 transfers in
one transaction. ``single`` is the yardstick of the ``single``, ``hot`` and ``mix`` scenarios,
``batch`` that of ``batch``; reads have none.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tally.bench.ceiling import sqlite_batch, sqlite_single
from tally.bench.options import BenchOptions
from tally.bench.pgbench import postgres_single
from tally.bench.results import Measured

PGBENCH_CLIENTS = 8
YARDSTICKS = {"single": "single", "hot": "single", "mix": "single", "batch": "batch"}

Progress = Callable[[str], None]


async def sqlite_ceilings(directory: Path, options: BenchOptions, progress: Progress) -> dict[str, Measured]:
    """The SQLite ceilings, each on a fresh file in ``directory``."""
    progress(f"sqlite: raw single-transfer ceiling, {options.warmup:g} s warm-up + {options.seconds:g} s")
    single = await sqlite_single(
        directory / "ceiling-single.db", options.accounts, options.seconds, warmup=options.warmup
    )
    progress(f"sqlite: raw batch ceiling, {options.warmup:g} s warm-up + {options.seconds:g} s")
    batch = await sqlite_batch(
        directory / "ceiling-batch.db",
        options.accounts,
        options.seconds,
        batch=options.batch_size,
        warmup=options.warmup,
    )
    return {"single": single, "batch": batch}


async def postgresql_ceilings(url: str, options: BenchOptions, progress: Progress) -> dict[str, Measured]:
    """The PostgreSQL ceiling on the (fresh) database at ``url``."""
    progress(
        f"postgresql: pgbench single-transfer ceiling, {PGBENCH_CLIENTS} clients, "
        f"{options.warmup:g} s warm-up + {options.seconds:g} s"
    )
    single = await postgres_single(
        url, options.accounts, clients=PGBENCH_CLIENTS, seconds=options.seconds, warmup=options.warmup
    )
    return {"single": single}

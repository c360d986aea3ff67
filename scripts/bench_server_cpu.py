"""The server's own CPU per transfer (or per balance read), on SQLite or PostgreSQL.

On this 2-core machine the load generator, other processes and the host's neighbours change
requests/s by ±20 % from run to run. The CPU time ``tally serve`` itself spends per request (user
+ system, read from ``/proc/<pid>/stat`` before and after the measured window) does not count the
client's share of the cores, and it is what a change to the hot path changes; it still moves with
the host's speed. Compare figures taken one after the other, in alternating pairs.

It starts one ``tally serve`` on a fresh SQLite file in a temporary directory (or, with
``--database postgresql``, on a durable PostgreSQL primary with a streaming replica), with
``tally bench``'s server settings (``bench.databases.SERVER_ENV``: no rate limit, warnings only,
the scheduled jobs' due periods run at the start) and any ``--set TALLY_NAME=VALUE``; sets up
a ledger with ``--accounts`` funded accounts through the API (``tally.bench.setup``); then sends
``--scenario`` requests from ``--clients`` keep-alive connections, closed loop: a 2 s warm-up,
then ``--seconds`` measured.

    .venv/bin/python scripts/bench_server_cpu.py [--database sqlite|postgresql]
        [--scenario single|batch|reads] [--seconds 8]
        [--clients 16] [--accounts 1000] [--set TALLY_NAME=VALUE ...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import tempfile
import time
from pathlib import Path

from tally.bench.databases import SERVER_ENV
from tally.bench.loops import Calls
from tally.bench.scenarios import batch_calls, read_call, transfer_call
from tally.bench.server_load import cpu_seconds, drive
from tally.bench.setup import Ledger, prepare_ledger
from tally.domain.keys import new_secret
from tally.harness.postgres import cluster
from tally.harness.tally_server import running_tally

WARMUP_SECONDS = 2.0


def calls(scenario: str, ledger: Ledger, rng: random.Random) -> tuple[int, Calls]:
    if scenario == "single":
        return 1, lambda: transfer_call(ledger, ledger.accounts, rng)
    if scenario == "batch":
        return 1000, batch_calls(ledger, ledger.accounts, rng, 1000)
    return 1, lambda: read_call(ledger, rng)


def database_settings(database: str, work: Path, stack: contextlib.ExitStack) -> dict[str, str]:
    """``TALLY_DATABASE_URL`` (and replicas): a SQLite file in ``work``, or a durable PostgreSQL
    primary with one streaming replica, as ``tally bench`` runs them."""
    if database == "sqlite":
        return {"TALLY_DATABASE_URL": f"sqlite:///{work / 'tally.db'}"}
    pg = stack.enter_context(cluster(replicas=1, durable=True))
    name = pg.create_database()
    return {
        "TALLY_DATABASE_URL": pg.primary.url(name),
        "TALLY_REPLICA_URLS": ",".join(replica.url(name) for replica in pg.replicas),
    }


async def measure(options: argparse.Namespace) -> None:
    root = new_secret("root")
    with tempfile.TemporaryDirectory() as work, contextlib.ExitStack() as stack:
        env = {
            **SERVER_ENV,  # as tally bench serves: jobs due at the start, not inside the window
            "TALLY_ROOT_KEY": root,
            **database_settings(options.database, Path(work), stack),
            **dict(setting.split("=", 1) for setting in options.set),
        }
        with running_tally(Path(work), env) as server:
            ledger = await prepare_ledger(server.base_url, root, options.accounts)
            units, make = calls(options.scenario, ledger, random.Random(1))  # noqa: S311 - a workload, not a secret
            await drive(server.base_url, make, options.clients, WARMUP_SECONDS)
            pid = server.process.pid
            if options.pid_file:  # for a profiler: py-spy record -p "$(cat FILE)"
                Path(options.pid_file).write_text(str(pid))  # noqa: ASYNC240 - a few bytes, once
            cpu_before, started = cpu_seconds(pid), time.monotonic()
            answered = await drive(server.base_url, make, options.clients, options.seconds)
            elapsed, cpu = time.monotonic() - started, cpu_seconds(pid) - cpu_before
    per = "transfer" if options.scenario != "reads" else "read"
    print(
        f"{options.scenario}: {answered * units / elapsed:,.0f} {per}s/s, "
        f"server CPU {cpu / elapsed:.0%} of a core, {1000 * cpu / (answered * units):.3f} ms per {per}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--scenario", choices=("single", "batch", "reads"), default="single")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--pid-file", help="where to write the server's pid, for a profiler")
    parser.add_argument("--set", action="append", default=[], metavar="TALLY_NAME=VALUE")
    asyncio.run(measure(parser.parse_args()))


if __name__ == "__main__":
    main()

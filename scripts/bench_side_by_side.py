"""Two versions of Tally side by side: the ratio of their CPU per transfer, on the same host at once.

This 2-core host's speed changes by up to 2.5× within an hour, so two runs of
``scripts/bench_server_cpu.py`` one after the other differ by ±15 % and cannot show a change of a
few per cent. Here two ``tally serve`` processes run at the same time, each on a SQLite file of
its own in a temporary directory: ``base`` imports Tally from ``--base`` (a source directory put
first on ``PYTHONPATH``, for example ``src`` of a ``git worktree`` at the commit before a change)
and ``new`` from this checkout. Each gets a ledger of ``--accounts`` funded accounts, then both are
driven together by ``--clients`` closed-loop keep-alive connections each, in ``--rounds`` rounds of
``--seconds``, after a 3 s warm-up. A round prints each server's CPU per transfer (user + system
from ``/proc``) and transfers/s, and the ratio new/base; the median ratio ends the report. Both see
the same host, so the ratio moves far less than either figure: two copies of one commit gave
0.958–1.084 a round, a median of 1.015, over six rounds of 5 s.

    .venv/bin/python scripts/bench_side_by_side.py --base /tmp/base/src
        [--scenario single|batch|reads] [--rounds 6] [--seconds 5] [--clients 16]
        [--accounts 1000] [--set TALLY_NAME=VALUE ...]

``--set`` applies to both servers; ``--set-new`` (same form) to ``new`` only, to compare a setting.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench_server_cpu import calls

from tally.bench.databases import SERVER_ENV
from tally.bench.server_load import cpu_seconds, drive
from tally.bench.setup import prepare_ledger
from tally.domain.keys import new_secret
from tally.harness.tally_server import TallyServer, running_tally

WARMUP_SECONDS = 3.0


@contextlib.contextmanager
def importing_from(source: str | None) -> Iterator[None]:
    """``PYTHONPATH`` set to ``source`` (or unset) for the servers started inside."""
    before = os.environ.get("PYTHONPATH")
    if source is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = source
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


def start(
    work: Path, name: str, source: str | None, env: dict[str, str], stack: contextlib.ExitStack
) -> TallyServer:
    directory = work / name
    directory.mkdir()
    settings = {**env, "TALLY_DATABASE_URL": f"sqlite:///{directory / 'tally.db'}"}
    with importing_from(source):
        return stack.enter_context(running_tally(directory, settings))


async def compare(options: argparse.Namespace) -> list[float]:
    root = new_secret("root")
    # The server settings `tally bench` uses (rate limits off, no access log, the daily jobs at start).
    env = {**SERVER_ENV, "TALLY_ROOT_KEY": root, **dict(setting.split("=", 1) for setting in options.set)}
    new_env = {**env, **dict(setting.split("=", 1) for setting in options.set_new)}
    with tempfile.TemporaryDirectory() as work, contextlib.ExitStack() as stack:
        servers = {
            "base": start(Path(work), "base", options.base, env, stack),
            "new": start(Path(work), "new", None, new_env, stack),
        }
        loads = {}
        for name, server in servers.items():
            ledger = await prepare_ledger(server.base_url, root, options.accounts)
            loads[name] = calls(options.scenario, ledger, random.Random(1))  # noqa: S311 - a workload
        await asyncio.gather(
            *(
                drive(server.base_url, loads[name][1], options.clients, WARMUP_SECONDS)
                for name, server in servers.items()
            )
        )
        ratios = []
        for round_ in range(options.rounds):
            before = {name: cpu_seconds(server.process.pid) for name, server in servers.items()}
            started = time.monotonic()
            answered = await asyncio.gather(
                *(
                    drive(server.base_url, loads[name][1], options.clients, options.seconds)
                    for name, server in servers.items()
                )
            )
            elapsed = time.monotonic() - started
            figures = {}
            for (name, server), count in zip(servers.items(), answered, strict=True):
                units = count * loads[name][0]
                cpu = cpu_seconds(server.process.pid) - before[name]
                figures[name] = (1000 * cpu / units, units / elapsed)
            ratios.append(figures["new"][0] / figures["base"][0])
            print(
                f"round {round_ + 1}: base {figures['base'][0]:.3f} ms ({figures['base'][1]:,.0f}/s), "
                f"new {figures['new'][0]:.3f} ms ({figures['new'][1]:,.0f}/s), ratio {ratios[-1]:.3f}",
                flush=True,
            )
    print(f"median ratio new/base of CPU per {options.scenario} unit: {statistics.median(ratios):.3f}")
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--base", required=True, help="the source directory base imports Tally from")
    parser.add_argument("--scenario", choices=("single", "batch", "reads"), default="single")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--set", action="append", default=[], metavar="TALLY_NAME=VALUE")
    parser.add_argument("--set-new", action="append", default=[], metavar="TALLY_NAME=VALUE")
    options = parser.parse_args()
    options.base = str(Path(options.base).resolve())
    asyncio.run(compare(options))


if __name__ == "__main__":
    main()

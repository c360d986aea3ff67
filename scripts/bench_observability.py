"""What the observability layer costs: requests/s with and without it, in one run.

Starts three `tally serve` processes on loopback, each on its own SQLite file in a temporary
directory, that differ only in what they observe:

- ``full``: metrics, statement timing and the access line (the default configuration);
- ``no-metrics``: ``TALLY_METRICS_ENABLED=false``, the access line still written;
- ``none``: no metrics and ``TALLY_LOG_LEVEL=WARNING``, so no access line either.

Logs go to /dev/null in all three, so the cost measured is building and rendering lines, not a
terminal's. Commits use ``TALLY_SQLITE_SYNCHRONOUS=NORMAL`` in all three, so that the disk's fsync
does not hide the CPU that observing costs.

Then, for each workload (single transfers; account reads), it sends a closed loop of requests
from ``--clients`` keep-alive connections for ``--seconds`` to each server in turn, for
``--rounds`` rounds, so that drift of the machine (heat, other load) falls on all three alike. It
reports, per configuration, requests/s and the server process's CPU time per request (user +
system, from /proc: unlike throughput it does not move when other processes share the cores), and
the overhead of each against ``none``.

    .venv/bin/python scripts/bench_observability.py [--clients 8] [--seconds 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from bench_fixture import ledger_with_two_accounts, start_server

from tally.bench.server_load import cpu_seconds
from tally.domain.keys import new_secret

CONFIGURATIONS = {
    "full": {},
    "no-metrics": {"TALLY_METRICS_ENABLED": "false"},
    "none": {"TALLY_METRICS_ENABLED": "false", "TALLY_LOG_LEVEL": "WARNING"},
}


@dataclass
class Target:
    name: str
    base: str
    headers: dict[str, str]
    pid: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start(directory: Path, root: str, extra: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    settings = {"TALLY_LOG_LEVEL": "INFO", "TALLY_SQLITE_SYNCHRONOUS": "NORMAL", **extra}
    return start_server(directory, root, port, settings), f"http://127.0.0.1:{port}"


async def prepare(name: str, base: str, pid: int, root: str) -> Target:
    """Wait for the server, then make a ledger, a write key and two accounts."""
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        headers = await ledger_with_two_accounts(client, root)
    return Target(name, base, headers, pid)


Request = Callable[[httpx.AsyncClient, Target], Awaitable[httpx.Response]]


async def transfer(client: httpx.AsyncClient, target: Target) -> httpx.Response:
    body = {"debit_account_id": "source", "credit_account_id": "sink", "amount": 1}
    return await client.post(
        "/v1/transfers", json=body, headers={**target.headers, "Idempotency-Key": uuid.uuid4().hex}
    )


async def read(client: httpx.AsyncClient, target: Target) -> httpx.Response:
    return await client.get("/v1/accounts/sink", headers=target.headers)


async def closed_loop(
    target: Target, request: Request, clients: int, seconds: float
) -> tuple[int, int, float, float]:
    """(answered, failed, elapsed s, server CPU s) for ``clients`` connections sending for ``seconds``."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    answered = failed = 0
    async with httpx.AsyncClient(base_url=target.base, timeout=30, limits=limits) as client:
        for _ in range(50):  # warm the connections and the server's caches
            await request(client, target)
        stop_at = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal answered, failed
            while time.perf_counter() < stop_at:
                response = await request(client, target)
                answered += 1
                failed += not response.is_success

        started, cpu = time.perf_counter(), cpu_seconds(target.pid)
        await asyncio.gather(*(worker() for _ in range(clients)))
        return answered, failed, time.perf_counter() - started, cpu_seconds(target.pid) - cpu


async def bench(targets: list[Target], args: argparse.Namespace) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    for workload, request in (("POST /v1/transfers", transfer), ("GET /v1/accounts/{id}", read)):
        totals = {target.name: (0, 0, 0.0, 0.0) for target in targets}
        for _ in range(args.rounds):
            for target in targets:
                measured = await closed_loop(target, request, args.clients, args.seconds)
                answered, failed, elapsed, used = totals[target.name]
                totals[target.name] = (
                    answered + measured[0],
                    failed + measured[1],
                    elapsed + measured[2],
                    used + measured[3],
                )
        if any(failed for _, failed, _, _ in totals.values()):
            raise SystemExit(f"{workload}: some requests failed: {totals}")
        rates = {name: answered / elapsed for name, (answered, _, elapsed, _) in totals.items()}
        cpu = {name: 1e6 * used / answered for name, (answered, _, _, used) in totals.items()}
        row: dict[str, float] = {f"{name} req/s": round(rate, 1) for name, rate in rates.items()}
        row.update({f"{name} server CPU us/req": round(us) for name, us in cpu.items()})
        for name in ("full", "no-metrics"):
            row[f"{name} throughput cost vs none (%)"] = round(100 * (1 - rates[name] / rates["none"]), 1)
            row[f"{name} CPU cost vs none (%)"] = round(100 * (cpu[name] / cpu["none"] - 1), 1)
        results[workload] = row
    return results


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    root = new_secret("root")
    servers: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as scratch:
        try:
            bases = {}
            for name, extra in CONFIGURATIONS.items():
                directory = Path(scratch) / name
                directory.mkdir()
                process, base = start(directory, root, extra)
                bases[name] = (base, process.pid)
                servers.append(process)

            async def run() -> dict[str, dict[str, float]]:
                targets = [await prepare(name, base, pid, root) for name, (base, pid) in bases.items()]
                return await bench(targets, args)

            results = asyncio.run(run())
        finally:
            for process in servers:
                process.terminate()
            for process in servers:
                process.wait(timeout=10)
    report = {
        "scenario": (
            f"requests/s, SQLite (synchronous=NORMAL), one process per configuration, "
            f"{args.clients} keep-alive connections, "
            f"closed loop, {args.rounds} rounds of {args.seconds:g} s per configuration, interleaved"
        ),
        "configurations": {
            "full": "metrics + statement timing + access log",
            "no-metrics": "TALLY_METRICS_ENABLED=false (access log kept)",
            "none": "TALLY_METRICS_ENABLED=false, TALLY_LOG_LEVEL=WARNING",
        },
        "results": results,
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

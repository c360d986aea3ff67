"""The scenarios: which requests each sends, in which loop, with how many clients.

- ``single``: a transfer of 1 between two distinct random accounts, each with a fresh
  Idempotency-Key; measured twice, closed loop (``clients``) and open loop (``rate``);
- ``hot``: the same among the first ``hot_accounts`` accounts, closed loop, ``hot_clients``;
- ``batch``: ``POST /v1/transfers/batch`` with ``batch_size`` random transfers, ``atomic: false``,
  closed loop, ``batch_clients``;
- ``reads``: ``GET /v1/accounts/{id}/balance`` of a random account, closed loop;
- ``mix``: 80 % such reads and 20 % single transfers, closed loop.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import orjson

from tally.bench.loops import Call, Calls, Measurement, closed_loop, open_loop
from tally.bench.options import BenchOptions
from tally.bench.results import Measured
from tally.bench.setup import Ledger

MIX_READS = 0.8


@dataclass(frozen=True)
class Run:
    """One measurement to make: a scenario in one mode."""

    scenario: str
    mode: str  # "closed" or "open"
    clients: int  # closed loop; an open loop reports the connections it took
    calls: Callable[[Ledger, random.Random], Calls]
    units_per_request: int = 1
    rate: float | None = None

    @property
    def label(self) -> str:
        if self.mode == "open":
            return f"{self.scenario} open loop, {self.rate:g}/s"
        return f"{self.scenario} closed loop, {self.clients} clients"


def runs(options: BenchOptions) -> list[Run]:
    """The measurements ``options`` asks for, in the order they are made."""
    batch = options.batch_size

    def batches(ledger: Ledger, rng: random.Random) -> Calls:
        return batch_calls(ledger, ledger.accounts, rng, batch)

    def hot(ledger: Ledger, rng: random.Random) -> Calls:
        return transfer_calls(ledger, ledger.accounts[: options.hot_accounts], rng)

    def uniform(ledger: Ledger, rng: random.Random) -> Calls:
        return transfer_calls(ledger, ledger.accounts, rng)

    every = {
        "single": [
            Run("single", "closed", options.clients, uniform),
            Run("single", "open", 0, uniform, rate=options.rate),
        ],
        "hot": [Run("hot", "closed", options.hot_clients, hot)],
        "batch": [Run("batch", "closed", options.batch_clients, batches, units_per_request=batch)],
        "reads": [Run("reads", "closed", options.clients, read_calls)],
        "mix": [Run("mix", "closed", options.clients, mix_calls)],
    }
    return [run for scenario in options.scenarios for run in every[scenario]]


async def measure(
    run: Run, base_url: str, ledger: Ledger, database: str, options: BenchOptions, *, seed: int = 0
) -> Measurement:
    """Make one measurement against the server at ``base_url``."""
    rng = random.Random(f"{seed}/{run.scenario}/{run.mode}")  # noqa: S311 - a workload, not secrets
    calls = run.calls(ledger, rng)
    measured = Measured(
        scenario=run.scenario,
        database=database,
        mode=run.mode,
        clients=run.clients,
        seconds=options.seconds,
        intended_rate=run.rate,
        units_per_request=run.units_per_request,
    )
    if run.mode == "open":
        return await open_loop(base_url, calls, measured, warmup=options.warmup, seconds=options.seconds)
    return await closed_loop(base_url, calls, measured, warmup=options.warmup, seconds=options.seconds)


def transfer_calls(ledger: Ledger, accounts: Sequence[str], rng: random.Random) -> Calls:
    def call() -> Call:
        return transfer_call(ledger, accounts, rng)

    return call


def transfer_call(ledger: Ledger, accounts: Sequence[str], rng: random.Random) -> Call:
    debit, credit = rng.sample(accounts, 2)
    body = orjson.dumps({"debit_account_id": debit, "credit_account_id": credit, "amount": 1})
    headers = (*ledger.write, ("idempotency-key", uuid.uuid4().hex))
    return Call("POST", "/v1/transfers", body, headers, transfers=1)


def batch_calls(ledger: Ledger, accounts: Sequence[str], rng: random.Random, size: int) -> Calls:
    def call() -> Call:
        transfers = []
        for _ in range(size):
            debit, credit = rng.sample(accounts, 2)
            transfers.append({"debit_account_id": debit, "credit_account_id": credit, "amount": 1})
        body = orjson.dumps({"transfers": transfers, "atomic": False})
        headers = (*ledger.write, ("idempotency-key", uuid.uuid4().hex))
        return Call("POST", "/v1/transfers/batch", body, headers, transfers=size)

    return call


def read_calls(ledger: Ledger, rng: random.Random) -> Calls:
    def call() -> Call:
        return read_call(ledger, rng)

    return call


def read_call(ledger: Ledger, rng: random.Random) -> Call:
    return Call("GET", f"/v1/accounts/{rng.choice(ledger.accounts)}/balance", headers=ledger.read)


def mix_calls(ledger: Ledger, rng: random.Random) -> Calls:
    def call() -> Call:
        if rng.random() < MIX_READS:
            return read_call(ledger, rng)
        return transfer_call(ledger, ledger.accounts, rng)

    return call

"""Expand → backfill → contract on PostgreSQL while a real ``tally serve`` takes continuous mixed load.

The change is the move of account balances to ``account_balances`` (ADR 0034). The server starts
on the schema before it, with a streaming replica serving reads, and never restarts: it notices
each phase by itself. Eight clients keep opening accounts, moving money, placing and posting holds,
editing metadata and reading accounts, balances and lists, while the operator's three commands run
as separate processes, exactly as docs/operations.md tells an operator to run them:

    tally db upgrade  →  tally jobs run backfill-account-balances  →  tally db contract

Then: not one request failed, the load ran in every phase, and the data is the data the clients
were told about — every acknowledged transfer in every balance, each account's entries adding up
to its balance, zero sums per currency.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from alembic import command

from tally.store.schema import alembic_config
from tests.integration.postgres_support import STRONG, check_books, listed
from tests.support import BACKENDS, LedgerKeys, idem, new_ledger, start_server

CLIENTS = 8
ACCOUNTS = 20
START = 10_000_000


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    with BACKENDS.using("postgresql"):
        yield BACKENDS.urls(tmp_path, empty=True)


@dataclass
class Load:
    """What the clients did and were told."""

    keys: LedgerKeys
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    statuses: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    moved: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # acknowledged, per account
    opened: list[str] = field(default_factory=list)
    at: list[float] = field(default_factory=list)  # when each request ended (monotonic)

    def heard(self, name: str, response: httpx.Response, expected: int) -> bool:
        self.at.append(time.monotonic())
        self.statuses[f"{name} {response.status_code}"] += 1
        if response.status_code != expected:
            self.failures.append(f"{name}: {response.status_code} {response.text[:300]}")
            return False
        return True


async def client_loop(client: httpx.AsyncClient, load: Load, seed: int) -> None:
    rng = random.Random(seed)
    keys = load.keys
    mine = 0
    while not load.stop.is_set():
        # Money leaves only the funded accounts, so no transfer is refused for want of funds.
        a = f"acc-{rng.randrange(ACCOUNTS)}"
        b = rng.choice([f"acc-{i}" for i in range(ACCOUNTS) if f"acc-{i}" != a] + load.opened)
        roll = rng.random()
        if roll < 0.35:
            amount = rng.randint(1, 50)
            body = {"debit_account_id": a, "credit_account_id": b, "amount": amount}
            response = await client.post("/v1/transfers", json=body, headers={**keys.write, **idem()})
            if load.heard("transfer", response, 201):
                load.moved[a] -= amount
                load.moved[b] += amount
        elif roll < 0.45:
            amount = rng.randint(1, 20)
            hold = {"debit_account_id": a, "credit_account_id": b, "amount": amount, "pending": True}
            held = await client.post("/v1/transfers", json=hold, headers={**keys.write, **idem()})
            if load.heard("hold", held, 201):
                path = f"/v1/transfers/{held.json()['id']}/post"
                posted = await client.post(path, json={}, headers={**keys.write, **idem()})
                if load.heard("post", posted, 200):
                    load.moved[a] -= amount
                    load.moved[b] += amount
        elif roll < 0.5:
            mine += 1
            new_id = f"new-{seed}-{mine}"
            response = await client.post(
                "/v1/accounts", json={"id": new_id, "currency": "USD"}, headers=keys.write
            )
            if load.heard("open", response, 201):
                load.opened.append(new_id)
        elif roll < 0.55:
            patch = {"metadata": {"n": rng.randint(0, 1000)}}
            load.heard("patch", await client.patch(f"/v1/accounts/{a}", json=patch, headers=keys.write), 200)
        elif roll < 0.75:
            load.heard("balance", await client.get(f"/v1/accounts/{a}/balance", headers=keys.read), 200)
        elif roll < 0.9:
            load.heard("account", await client.get(f"/v1/accounts/{a}", headers=keys.read), 200)
        else:
            load.heard("list", await client.get("/v1/accounts", params={"limit": 50}, headers=keys.read), 200)


def operator(command_line: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, str]:
    """Run one ``tally`` command as an operator would; (started, ended, output)."""
    tally = str(Path(sys.executable).parent / "tally")
    started = time.monotonic()
    done = subprocess.run(
        [tally, *command_line], env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"tally {' '.join(command_line)} failed:\n{output}"
    return started, time.monotonic(), output


async def test_expand_backfill_and_contract_run_under_live_load_with_no_failed_request(
    tmp_path: Path, postgres: tuple[str, list[str]]
) -> None:
    url, _replicas = postgres
    config = alembic_config()
    config.set_main_option("sqlalchemy.url", url)
    # The schema before the change (with 0004_audit_events, which this Tally needs, beside it).
    await asyncio.to_thread(command.upgrade, config, "0004_audit_events")
    server = start_server(tmp_path, {"TALLY_JOB_SCHEDULE": "off", "TALLY_RATE_LIMIT": "off"})
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}, "TALLY_DATABASE_URL": url}
    try:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
            keys = await new_ledger(client)
            funding = {"id": "funding", "currency": "USD", "normal_balance": "debit", "min_balance": None}
            assert (await client.post("/v1/accounts", json=funding, headers=keys.write)).status_code == 201
            for i in range(ACCOUNTS):
                opened = await client.post(
                    "/v1/accounts", json={"id": f"acc-{i}", "currency": "USD"}, headers=keys.write
                )
                assert opened.status_code == 201, opened.text
                body = {"debit_account_id": "funding", "credit_account_id": f"acc-{i}", "amount": START}
                funded = await client.post("/v1/transfers", json=body, headers={**keys.write, **idem()})
                assert funded.status_code == 201, funded.text

            load = Load(keys)
            clients = [asyncio.create_task(client_loop(client, load, seed)) for seed in range(CLIENTS)]
            await asyncio.sleep(1.0)
            phases = []
            for step in (
                ["db", "upgrade"],
                ["jobs", "run", "backfill-account-balances"],
                ["db", "contract"],
            ):
                phases.append(await asyncio.to_thread(operator, step, env, tmp_path))
                await asyncio.sleep(0.5)
            await asyncio.sleep(1.5)  # the contracted schema under load, too
            load.stop.set()
            await asyncio.gather(*clients)

            assert not load.failures, f"{len(load.failures)} failed: {load.failures[:5]}; {load.statuses}"
            for started, ended, output in phases:  # the load ran while each command ran
                during = sum(1 for t in load.at if started <= t <= ended)
                assert during >= 10, f"only {during} requests while: {output}"
            *_, status = await asyncio.to_thread(operator, ["db", "status"], env, tmp_path)
            assert "c0001_account_balances" in status

            posted = await check_books(client, keys.read)  # entries add up; zero sum per currency
            for i in range(ACCOUNTS):
                assert posted[f"acc-{i}"] == START + load.moved[f"acc-{i}"]
            for new_id in load.opened:
                assert posted[new_id] == load.moved[new_id]
            accounts = await listed(client, "/v1/accounts", keys.read)
            assert {a["id"] for a in accounts} == {
                "funding",
                *(f"acc-{i}" for i in range(ACCOUNTS)),
                *load.opened,
            }
            for account in accounts:
                balance = await client.get(
                    f"/v1/accounts/{account['id']}/balance", headers={**keys.read, **STRONG}
                )
                assert balance.json()["posted"] == posted[account["id"]]
                assert balance.json()["pending_debits"] == balance.json()["pending_credits"] == 0
        print(f"\nlive migration: {sum(load.statuses.values())} requests, 0 failed: {dict(load.statuses)}")
        errors = [line for line in server.log_lines() if '"level": "error"' in line or "Traceback" in line]
        assert not errors, errors[:3]
    finally:
        server.stop()

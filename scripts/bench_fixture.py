"""What the HTTP benches share: a `tally serve` of their own, a ledger, a key and two accounts."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


@contextmanager
def serving(directory: Path, root: str, port: int) -> Iterator[str]:
    """Run `tally serve` on a fresh SQLite file in ``directory``; yield its base URL."""
    env = {
        **os.environ,
        "TALLY_ROOT_KEY": root,
        "TALLY_DATABASE_URL": f"sqlite:///{directory / 'bench.db'}",
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
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


async def ledger_with_two_accounts(client: httpx.AsyncClient, root: str) -> dict[str, str]:
    """Wait until the server answers, then create a ledger with a write key and the accounts
    ``source`` (debit-normal, unbounded) and ``sink``; return the key's headers."""
    for _ in range(300):
        try:
            await client.get("/healthz")
            break
        except httpx.TransportError:
            await asyncio.sleep(0.1)
    auth = {"Authorization": f"Bearer {root}"}
    ledger = (await client.post("/v1/ledgers", json={"name": "bench"}, headers=auth)).json()["id"]
    created = await client.post(
        f"/v1/ledgers/{ledger}/keys", json={"name": "bench", "scopes": ["write"]}, headers=auth
    )
    headers = {"Authorization": f"Bearer {created.json()['key']}"}
    source = {"id": "source", "currency": "USD", "normal_balance": "debit", "min_balance": None}
    await client.post("/v1/accounts", json=source, headers=headers)
    await client.post("/v1/accounts", json={"id": "sink", "currency": "USD"}, headers=headers)
    return headers

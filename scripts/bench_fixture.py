"""What the HTTP benches share: a `tally serve` of their own, a ledger, a key and two accounts."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx


def start_server(
    directory: Path, root: str, port: int, extra: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start `tally serve` on a fresh SQLite file in ``directory``, with only the ``TALLY_*`` settings
    given here (and ``extra``), so that the caller's environment cannot skew a measurement."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TALLY_")},
        "TALLY_ROOT_KEY": root,
        "TALLY_DATABASE_URL": f"sqlite:///{directory / 'bench.db'}",
        "TALLY_LOG_FORMAT": "json",
        "TALLY_LOG_LEVEL": "WARNING",
        "TALLY_RATE_LIMIT": "off",  # one key drives the whole load: the limit would be the measurement
        **(extra or {}),
    }
    tally = Path(sys.executable).parent / "tally"
    return subprocess.Popen(
        [str(tally), "serve", "--port", str(port)],
        env=env,
        cwd=directory,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@contextmanager
def serving(directory: Path, root: str, port: int, extra: dict[str, str] | None = None) -> Iterator[str]:
    """Run `tally serve` (``start_server``) for the block; yield its base URL."""
    server = start_server(directory, root, port, extra)
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


def print_table(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> None:
    """The benches' table: one right-aligned column of 20 characters per field."""
    print("  ".join(f"{column:>20}" for column in columns))
    for row in rows:
        print("  ".join(f"{row[column]!s:>20}" for column in columns))

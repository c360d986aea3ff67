"""On PostgreSQL, a consumer polling ``/v1/events`` under concurrent writers sees every event
exactly once, even when transactions commit out of the order of their event ids (ADR 0024)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

from tests.pg_cluster import require_postgres
from tests.support import (
    BACKENDS,
    asgi_client,
    funded_account,
    new_ledger,
    open_account,
    settings_for,
    transfer,
)

WRITERS = 16
TRANSFERS_PER_WRITER = 10


async def test_a_polling_consumer_sees_every_event_once_under_concurrent_writers(tmp_path: Path) -> None:
    require_postgres()
    BACKENDS.name = "postgresql"
    try:
        async with asgi_client(settings_for(tmp_path, pool_size=20)) as client:
            ledger = await new_ledger(client)
            await funded_account(client, ledger, "bank", 10**9)
            for n in range(WRITERS):
                await open_account(client, ledger.write, id=f"acct-{n}")
            database = BACKENDS.urls(tmp_path)[0].rsplit("/", 1)[1]
            seen: list[dict[str, Any]] = []
            done = asyncio.Event()
            poller = asyncio.create_task(_poll(client, ledger.read, seen, done))

            # A transaction that takes its event id first and commits last: a naive "pk > cursor"
            # feed would hand out the later events and skip this one forever.
            slow = await psycopg.AsyncConnection.connect(BACKENDS.cluster().primary.dsn(database))
            await slow.execute(
                "INSERT INTO events (id, ledger_id, type, data, request_id, created_at, xid)"
                " VALUES ('evt_slow', %s, 'account.updated', '{}', 'slow-1', 0,"
                " pg_current_xact_id()::text::bigint)",
                (ledger.ledger_id,),
            )

            async def writer(n: int) -> None:
                for _ in range(TRANSFERS_PER_WRITER):
                    response = await transfer(client, ledger.write, "bank", f"acct-{n}", 1)
                    assert response.status_code == 201, response.text

            await asyncio.gather(*(writer(n) for n in range(WRITERS)))
            await asyncio.sleep(0.2)  # the poller keeps polling while the slow one is open
            await slow.commit()
            await slow.close()
            total = _count_events(database, ledger.ledger_id)
            deadline = time.monotonic() + 30
            while len(seen) < total and time.monotonic() < deadline:  # noqa: ASYNC110 - a bounded poll
                await asyncio.sleep(0.05)
            done.set()
            await poller
    finally:
        BACKENDS.finish()

    ids = [event["id"] for event in seen]
    assert len(ids) == len(set(ids)), "an event was served twice"
    assert len(ids) == total, f"the poller saw {len(ids)} of {total} events"
    assert "evt_slow" in ids
    transfers = [e for e in seen if e["type"] == "transfer.created"]
    assert len(transfers) == WRITERS * TRANSFERS_PER_WRITER + 1  # and the funding transfer


async def _poll(
    client: httpx.AsyncClient, read: dict[str, str], seen: list[dict[str, Any]], done: asyncio.Event
) -> None:
    after: str | None = None
    while not done.is_set():
        params: dict[str, Any] = {"limit": 7, **({"after": after} if after else {})}
        page = await client.get("/v1/events", params=params, headers={**read, "Tally-Consistency": "strong"})
        assert page.status_code == 200, page.text
        body = page.json()
        seen += body["data"]
        after = body["next_cursor"]
        if not body["data"]:
            await asyncio.sleep(0.01)


def _count_events(database: str, ledger_id: str) -> int:
    rows = BACKENDS.cluster().primary.execute(
        "SELECT count(*) FROM events WHERE ledger_id = %s", database, (ledger_id,)
    )
    return int(rows[0][0])

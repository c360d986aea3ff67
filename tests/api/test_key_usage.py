"""``last_used_at`` of API keys is written behind: recorded at use, flushed on an interval and at stop."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from tests.support import ROOT, asgi_client, assert_problem, new_ledger, settings_for


async def test_a_used_key_shows_when_it_was_last_used_after_a_restart(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    async with asgi_client(settings) as client:
        ledger = await new_ledger(client)
        keys = (await client.get(f"/v1/ledgers/{ledger.ledger_id}/keys", headers=ROOT)).json()
        assert all(key["last_used_at"] is None for key in keys["data"])
        assert (await client.get("/v1/accounts", headers=ledger.read)).status_code == 200
    # Stopping the app flushed the buffered usage; a new process reads it from the database.
    async with asgi_client(settings) as client:
        keys = (await client.get(f"/v1/ledgers/{ledger.ledger_id}/keys", headers=ROOT)).json()
    used = {key["name"]: key["last_used_at"] for key in keys["data"]}
    assert used["admin"] is None
    assert used["write"] is None
    assert used["read"] is not None
    created = {key["name"]: key["created_at"] for key in keys["data"]}
    assert datetime.fromisoformat(used["read"]) >= datetime.fromisoformat(created["read"])


async def test_a_key_shows_its_requests_per_day_once_flushed(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    async with asgi_client(settings) as client:
        ledger = await new_ledger(client)
        other = await new_ledger(client, "other")
        keys = (await client.get(f"/v1/ledgers/{ledger.ledger_id}/keys", headers=ROOT)).json()["data"]
        read_id = next(key["id"] for key in keys if key["name"] == "read")
        for _ in range(3):
            assert (await client.get("/v1/accounts", headers=ledger.read)).status_code == 200
    async with asgi_client(settings) as client:  # stopping flushed the buffered counts
        usage = await client.get(f"/v1/ledgers/{ledger.ledger_id}/keys/{read_id}/usage", headers=ledger.admin)
        assert usage.status_code == 200, usage.text
        [today] = usage.json()["data"]
        assert today["requests"] == 3
        assert today["day"] == datetime.now(UTC).strftime("%Y-%m-%d")
        elsewhere = f"/v1/ledgers/{ledger.ledger_id}/keys/{read_id}/usage"
        assert_problem(await client.get(elsewhere, headers=other.admin), 404, "not_found")
        missing = f"/v1/ledgers/{ledger.ledger_id}/keys/key_missing/usage"
        assert_problem(await client.get(missing, headers=ROOT), 404, "not_found")

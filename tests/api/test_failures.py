"""What a client sees when something fails inside, and what is never kept."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from asgi_lifespan import LifespanManager

from tally.api.app import create_app
from tally.bootstrap import Tally
from tests.support import BACKENDS, LIFESPAN_SECONDS, ROOT, LedgerKeys, idem, settings_for


async def test_an_unexpected_failure_is_a_500_problem_with_the_request_id_and_no_detail(
    tmp_path: Path,
) -> None:
    tally = Tally(settings_for(tmp_path))
    app = create_app(tally)
    async with LifespanManager(app, **LIFESPAN_SECONDS) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tally") as client:
            # The schema is broken under the running app: a failure no code path expects. In a
            # thread: the app's loop must go on (an open commit group holds the file's write lock
            # until its committer, a task on this loop, commits it).
            await asyncio.to_thread(BACKENDS.rows, tmp_path, "ALTER TABLE ledgers RENAME TO ledgers_gone")
            response = await client.post(
                "/v1/ledgers", json={"name": "lost"}, headers={**ROOT, "X-Request-ID": "boom-1"}
            )
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["x-request-id"] == "boom-1"
    problem = response.json()
    assert problem["code"] == "internal_error"
    assert problem["request_id"] == "boom-1"
    assert "Traceback" not in response.text
    assert not {"sqlite", "postgres", "psycopg", "ledgers_gone"} & set(response.text.lower().split())
    assert "ledgers" not in problem["detail"]


def _database_bytes(directory: Path) -> bytes:
    return b"".join(path.read_bytes() for path in directory.glob("tally.db*"))


async def test_a_key_created_with_an_idempotency_key_keeps_its_secret_out_of_the_replay(
    client: httpx.AsyncClient, ledger: LedgerKeys, tmp_path: Path
) -> None:
    headers = {**ROOT, **idem("new-key-1")}
    body = {"name": "ci", "scopes": ["read"]}
    first = await client.post(f"/v1/ledgers/{ledger.ledger_id}/keys", json=body, headers=headers)
    assert first.status_code == 201
    secret = first.json()["key"]
    assert secret.startswith("tally_key_")

    replay = await client.post(f"/v1/ledgers/{ledger.ledger_id}/keys", json=body, headers=headers)
    assert replay.status_code == 201
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["id"] == first.json()["id"]
    assert replay.json()["key"] is None

    assert secret.encode() not in _database_bytes(tmp_path)
    keys = (await client.get(f"/v1/ledgers/{ledger.ledger_id}/keys", headers=ROOT)).json()
    assert sum(key["name"] == "ci" for key in keys["data"]) == 1


async def test_metadata_integers_beyond_64_bits_are_a_validation_error(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    response = await client.post(
        "/v1/accounts",
        content=b'{"currency": "USD", "metadata": {"n": 100000000000000000000000}}',
        headers={**ledger.write, "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    listed = (await client.get("/v1/accounts", headers=ledger.read)).json()
    assert listed["data"] == []


async def test_a_patch_of_a_missing_account_replays_its_404_under_the_same_key(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    headers = {**ledger.write, **idem("patch-1")}
    first = await client.patch("/v1/accounts/later", json={"name": "x"}, headers=headers)
    assert first.status_code == 404
    opened = await client.post("/v1/accounts", json={"id": "later", "currency": "USD"}, headers=ledger.write)
    assert opened.status_code == 201
    again = await client.patch("/v1/accounts/later", json={"name": "x"}, headers=headers)
    assert again.status_code == 404
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content

"""The audit trail: every administrative act leaves exactly one record, and records never change.

- Each act — ledger created; key created, rotated, revoked; webhook created, deleted; account
  frozen, unfrozen, closed, bounds changed — is recorded once, with the acting key (``root`` for the
  root key), the request's ``X-Request-ID``, the database time of the act and what changed.
- An act that fails, changes nothing, or is replayed under its idempotency key records nothing.
- ``GET /v1/audit-events`` (admin) lists the calling key's ledger's records, newest first by
  default, by pages, of one action when asked; no other ledger's.
- The database itself refuses to update or delete a record (both dialects).
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.support import (
    BACKENDS,
    ROOT,
    LedgerKeys,
    asgi_client,
    assert_problem,
    bearer,
    idem,
    new_ledger,
    open_account,
    settings_for,
    transfer,
)

PUBLIC_URL = "https://93.184.216.34/hooks/tally?token=not-for-the-trail"


def _rid(name: str) -> dict[str, str]:
    return {"X-Request-ID": name}


async def _trail(client: httpx.AsyncClient, keys: LedgerKeys, **params: Any) -> list[dict[str, Any]]:
    response = await client.get("/v1/audit-events", params=params, headers=keys.admin)
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["data"]
    return events


async def _acts(client: httpx.AsyncClient) -> tuple[LedgerKeys, dict[str, str]]:
    """Perform every audited act once, each in a request of its own id; returns the ledger's keys
    and the id of each key that acted."""
    created = await client.post("/v1/ledgers", json={"name": "audited"}, headers={**ROOT, **_rid("r-ledger")})
    ledger_id = created.json()["id"]
    keys_path = f"/v1/ledgers/{ledger_id}/keys"
    admin = await client.post(
        keys_path, json={"name": "admin", "scopes": ["admin"]}, headers={**ROOT, **_rid("r-key-admin")}
    )
    admin_headers = bearer(admin.json()["key"])
    write = await client.post(
        keys_path,
        json={"name": "writer", "scopes": ["write"]},
        headers={**admin_headers, **_rid("r-key-write")},
    )
    write_headers = bearer(write.json()["key"])
    keys = LedgerKeys(ledger_id, admin_headers, write_headers, write_headers)
    rotated = await client.post(
        f"{keys_path}/{write.json()['id']}/rotate", json={}, headers={**admin_headers, **_rid("r-rotate")}
    )
    assert rotated.status_code == 201, rotated.text
    revoked = await client.delete(f"{keys_path}/{rotated.json()['id']}", headers={**ROOT, **_rid("r-revoke")})
    assert revoked.status_code == 204, revoked.text

    hook = await client.post(
        "/v1/webhooks",
        json={"url": PUBLIC_URL, "event_types": ["transfer_batch.completed"]},
        headers={**admin_headers, **_rid("r-hook")},
    )
    assert hook.status_code == 201, hook.text
    unhooked = await client.delete(
        f"/v1/webhooks/{hook.json()['id']}", headers={**admin_headers, **_rid("r-unhook")}
    )
    assert unhooked.status_code == 204, unhooked.text

    await open_account(client, write_headers, id="acct")
    for rid, patch in [
        ("r-freeze", {"status": "frozen"}),
        ("r-unfreeze", {"status": "open", "name": "renamed too"}),
        ("r-bounds", {"min_balance": -500}),
        ("r-close", {"status": "closed", "max_balance": 1000}),  # two acts in one request
    ]:
        changed = await client.patch("/v1/accounts/acct", json=patch, headers={**write_headers, **_rid(rid)})
        assert changed.status_code == 200, changed.text
    actors = {"root": "root", "admin": admin.json()["id"], "write": write.json()["id"]}
    return keys, actors


async def test_every_administrative_act_is_recorded_once_with_its_actor_request_and_time(
    tmp_path: Path,
) -> None:
    before = datetime.now(UTC)
    async with asgi_client(settings_for(tmp_path, secret_key_file=tmp_path / "tally.key")) as client:
        keys, actors = await _acts(client)
        trail = await _trail(client, keys)
        oldest_first = await _trail(client, keys, order="oldest")
    after = datetime.now(UTC)

    assert oldest_first == list(reversed(trail))
    seen = [(e["action"], e["target_type"], e["actor_key_id"], e["request_id"]) for e in oldest_first]
    assert seen == [
        ("ledger.created", "ledger", actors["root"], "r-ledger"),
        ("key.created", "key", actors["root"], "r-key-admin"),
        ("key.created", "key", actors["admin"], "r-key-write"),
        ("key.rotated", "key", actors["admin"], "r-rotate"),
        ("key.revoked", "key", actors["root"], "r-revoke"),
        ("webhook.created", "webhook", actors["admin"], "r-hook"),
        ("webhook.deleted", "webhook", actors["admin"], "r-unhook"),
        ("account.frozen", "account", actors["write"], "r-freeze"),
        ("account.unfrozen", "account", actors["write"], "r-unfreeze"),
        ("account.bounds_changed", "account", actors["write"], "r-bounds"),
        ("account.closed", "account", actors["write"], "r-close"),
        ("account.bounds_changed", "account", actors["write"], "r-close"),
    ]
    times = [datetime.fromisoformat(e["at"]) for e in oldest_first]
    assert times == sorted(times)
    assert before <= times[0]
    assert times[-1] <= after
    assert len({e["id"] for e in trail}) == len(trail)
    assert all(e["id"].startswith("aud_") for e in trail)

    by_request = {e["request_id"] + ":" + e["action"]: e for e in trail}
    assert by_request["r-ledger:ledger.created"]["target_id"] == keys.ledger_id
    assert by_request["r-key-write:key.created"]["target_id"] == actors["write"]
    assert by_request["r-key-write:key.created"]["details"] == {
        "name": "writer",
        "scopes": ["write"],
        "expires_at": None,
    }
    rotated = by_request["r-rotate:key.rotated"]["details"]
    assert set(rotated) == {"new_key_id", "old_key_expires_at", "scopes"}
    assert by_request["r-hook:webhook.created"]["details"]["host"] == "93.184.216.34"
    assert by_request["r-freeze:account.frozen"]["details"] == {"old_status": "open", "new_status": "frozen"}
    assert by_request["r-bounds:account.bounds_changed"]["details"] == {
        "old_min_balance": 0,
        "old_max_balance": None,
        "new_min_balance": -500,
        "new_max_balance": None,
    }
    assert by_request["r-close:account.bounds_changed"]["details"]["new_max_balance"] == 1000
    text = str(trail)
    for secret_shaped in ("tally_key_", "whsec_", "not-for-the-trail"):
        assert secret_shaped not in text

    # Append-only, whoever asks: the database itself refuses to change or delete a record.
    refused = (sqlite3.IntegrityError, psycopg.errors.RestrictViolation)
    for statement in ("UPDATE audit_events SET action = 'x'", "DELETE FROM audit_events"):
        with pytest.raises(refused, match="append-only"):
            BACKENDS.rows(tmp_path, statement)
    assert len(BACKENDS.rows(tmp_path, "SELECT pk FROM audit_events")) == len(trail)


async def test_a_failed_a_replayed_or_an_empty_act_records_nothing(tmp_path: Path) -> None:
    async with asgi_client(settings_for(tmp_path)) as client:
        ledger = await new_ledger(client)
        keys_path = f"/v1/ledgers/{ledger.ledger_id}/keys"
        start = len(await _trail(client, ledger))  # the ledger and its three keys
        assert start == 4

        once = {**ledger.admin, **idem("create-once")}
        body = {"name": "k", "scopes": ["read"]}
        created = await client.post(keys_path, json=body, headers=once)
        replayed = await client.post(keys_path, json=body, headers=once)
        assert replayed.headers["idempotent-replayed"] == "true"
        past = {"name": "k", "scopes": ["read"], "expires_at": "2020-01-01T00:00:00Z"}
        assert_problem(await client.post(keys_path, json=past, headers=ledger.admin), 422)

        key_id = created.json()["id"]
        assert (await client.delete(f"{keys_path}/{key_id}", headers=ledger.admin)).status_code == 204
        assert (await client.delete(f"{keys_path}/{key_id}", headers=ledger.admin)).status_code == 204
        rotate = f"{keys_path}/{key_id}/rotate"
        assert_problem(await client.post(rotate, json={}, headers=ledger.admin), 409, "key_not_active")

        await open_account(client, ledger.write, id="full", min_balance=None)
        await open_account(client, ledger.write, id="other", min_balance=None)
        assert (await transfer(client, ledger.write, "full", "other", 5)).status_code == 201
        closing = await client.patch("/v1/accounts/full", json={"status": "closed"}, headers=ledger.write)
        assert_problem(closing, 409, "account_not_empty")
        same = await client.patch("/v1/accounts/full", json={"status": "open"}, headers=ledger.write)
        assert same.status_code == 200
        renamed = await client.patch("/v1/accounts/full", json={"name": "n"}, headers=ledger.write)
        assert renamed.status_code == 200
        gone = await client.delete("/v1/webhooks/wh_missing", headers=ledger.admin)
        assert_problem(gone, 404, "not_found")

        actions = [e["action"] for e in await _trail(client, ledger)]
    assert actions[:-start] == ["key.revoked", "key.created"]


async def test_the_list_is_the_ledgers_own_by_pages_of_one_action_and_for_admin_keys_only(
    tmp_path: Path,
) -> None:
    async with asgi_client(settings_for(tmp_path)) as client:
        ledger = await new_ledger(client)
        other = await new_ledger(client, "other")
        everything = await _trail(client, ledger)

        pages: list[dict[str, Any]] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
            page = (await client.get("/v1/audit-events", params=params, headers=ledger.admin)).json()
            pages += page["data"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        keys_only = await _trail(client, ledger, action="key.created")
        theirs = await _trail(client, other)

        for headers in (ledger.read, ledger.write, ROOT):
            assert_problem(await client.get("/v1/audit-events", headers=headers), 403, "forbidden")
        for params in ({"limit": 0}, {"limit": 1001}, {"action": "key.borrowed"}, {"order": "random"}):
            assert_problem(await client.get("/v1/audit-events", params=params, headers=ledger.admin), 422)
        assert_problem(
            await client.get("/v1/audit-events", params={"cursor": "nope"}, headers=ledger.admin), 422
        )

    assert pages == everything
    assert [e["action"] for e in everything] == ["key.created"] * 3 + ["ledger.created"]
    assert keys_only == everything[:3]
    assert [e["target_id"] for e in theirs][-1] == other.ledger_id
    assert not {e["id"] for e in theirs} & {e["id"] for e in everything}

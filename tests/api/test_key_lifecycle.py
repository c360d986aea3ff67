"""The life of an API key: it may expire by itself, it can be rotated, and its secret can be spotted.

- A key created with ``expires_at`` works until then and is refused (401, "expired") from that moment,
  also while its lookup is cached; ``expires_at`` must be in the future and carry a time zone.
- Rotation gives a new key with the same name and scopes and sets the old one to expire after the
  overlap (never later than it already would): both work in between. A revoked or expired key
  cannot be rotated (409 ``key_not_active``).
- A secret with a bad checksum is refused before any database statement; a secret scanner's pattern
  finds a key in text, and its checksum tells it from a look-alike.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import event

from tally.bootstrap import Tally
from tally.domain.keys import LEAKED_KEY_PATTERN, new_secret, secret_kind
from tally.observability.context import current_request_id
from tests.support import (
    ROOT,
    LedgerKeys,
    asgi_client,
    assert_problem,
    bearer,
    idem,
    new_ledger,
    serving_in_process,
    settings_for,
)


def _keys_path(ledger: LedgerKeys, *rest: str) -> str:
    return "/".join([f"/v1/ledgers/{ledger.ledger_id}/keys", *rest])


async def _new_key(client: httpx.AsyncClient, ledger: LedgerKeys, **body: Any) -> dict[str, Any]:
    body = {"name": "rotating", "scopes": ["write"], **body}
    response = await client.post(_keys_path(ledger), json=body, headers=ledger.admin)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def _listed(client: httpx.AsyncClient, ledger: LedgerKeys, key_id: str) -> dict[str, Any]:
    keys = (await client.get(_keys_path(ledger), headers=ledger.admin)).json()["data"]
    found: dict[str, Any] = next(key for key in keys if key["id"] == key_id)
    return found


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def test_a_key_works_until_it_expires_and_is_refused_from_then_on_even_when_cached(
    tmp_path: Path,
) -> None:
    async with asgi_client(settings_for(tmp_path, key_cache_ttl_ms=60_000)) as client:
        ledger = await new_ledger(client)
        expires_at = datetime.now(UTC) + timedelta(seconds=1)
        created = await _new_key(client, ledger, expires_at=expires_at.isoformat())
        assert _at(created["expires_at"]) == expires_at
        key = bearer(created["key"])
        assert (await client.get("/v1/accounts", headers=key)).status_code == 200  # now cached
        listed = await _listed(client, ledger, created["id"])
        assert _at(listed["expires_at"]) == expires_at
        assert "last_used_at" in listed

        await asyncio.sleep(max(0.0, (expires_at - datetime.now(UTC)).total_seconds()) + 0.05)
        refused = assert_problem(await client.get("/v1/accounts", headers=key), 401, "unauthenticated")
        assert "expired" in refused["detail"]
        assert (await client.get("/v1/accounts", headers=ledger.write)).status_code == 200


async def test_expires_at_must_be_an_rfc3339_time_with_a_zone_in_the_future(tmp_path: Path) -> None:
    async with asgi_client(settings_for(tmp_path)) as client:
        ledger = await new_ledger(client)
        for expires_at in ("2020-01-01T00:00:00Z", "2999-01-01T00:00:00", "tomorrow", 4_102_444_800):
            body = {"name": "k", "scopes": ["read"], "expires_at": expires_at}
            response = await client.post(_keys_path(ledger), json=body, headers=ledger.admin)
            problem = assert_problem(response, 422, "validation_error")
            assert [error["loc"] for error in problem["errors"]] == [["body", "expires_at"]], expires_at


async def test_rotation_gives_a_new_key_and_both_work_for_the_overlap(tmp_path: Path) -> None:
    async with asgi_client(settings_for(tmp_path)) as client:
        ledger = await new_ledger(client)
        old = await _new_key(client, ledger)
        rotate = _keys_path(ledger, old["id"], "rotate")
        headers = {**ledger.admin, **idem("rotate-once")}

        response = await client.post(rotate, json={"overlap_seconds": 3600}, headers=headers)

        assert response.status_code == 201, response.text
        new = response.json()
        assert (new["name"], new["scopes"], new["expires_at"]) == ("rotating", ["write"], None)
        assert new["id"] != old["id"]
        assert secret_kind(new["key"]) == "key"
        old_expiry = _at((await _listed(client, ledger, old["id"]))["expires_at"])
        created = _at(new["created_at"])
        assert old_expiry == created + timedelta(seconds=3600)  # both from the database clock
        for secret in (old["key"], new["key"]):
            assert (await client.get("/v1/accounts", headers=bearer(secret))).status_code == 200

        replay = await client.post(rotate, json={"overlap_seconds": 3600}, headers=headers)
        assert replay.status_code == 201
        assert replay.headers["idempotent-replayed"] == "true"
        assert replay.json() == {**new, "key": None}
        keys = (await client.get(_keys_path(ledger), headers=ledger.admin)).json()["data"]
        assert len(keys) == 5  # admin, write, read, the old one and one new key: no second rotation


async def test_a_rotation_with_no_overlap_ends_the_old_key_at_once_even_when_cached(tmp_path: Path) -> None:
    async with asgi_client(settings_for(tmp_path, key_cache_ttl_ms=60_000)) as client:
        ledger = await new_ledger(client)
        old = await _new_key(client, ledger)
        assert (await client.get("/v1/accounts", headers=bearer(old["key"]))).status_code == 200

        rotate = _keys_path(ledger, old["id"], "rotate")
        response = await client.post(rotate, json={"overlap_seconds": 0}, headers=ledger.admin)

        assert response.status_code == 201, response.text
        refused = await client.get("/v1/accounts", headers=bearer(old["key"]))
        assert "expired" in assert_problem(refused, 401, "unauthenticated")["detail"]
        assert (await client.get("/v1/accounts", headers=bearer(response.json()["key"]))).status_code == 200
        again = await client.post(rotate, json={}, headers=ledger.admin)
        assert "expired" in assert_problem(again, 409, "key_not_active")["detail"]


async def test_a_rotation_never_extends_an_expiry_the_key_already_had(tmp_path: Path) -> None:
    async with asgi_client(settings_for(tmp_path)) as client:
        ledger = await new_ledger(client)
        soon = datetime.now(UTC) + timedelta(hours=1)
        old = await _new_key(client, ledger, expires_at=soon.isoformat())

        response = await client.post(_keys_path(ledger, old["id"], "rotate"), headers=ledger.admin)  # no body

        assert response.status_code == 201, response.text
        assert _at((await _listed(client, ledger, old["id"]))["expires_at"]) == soon
        assert response.json()["expires_at"] is None


async def test_what_cannot_be_rotated(tmp_path: Path) -> None:
    async with asgi_client(settings_for(tmp_path)) as client:
        ledger = await new_ledger(client)
        other = await new_ledger(client, "other")
        revoked = await _new_key(client, ledger)
        delete = await client.delete(_keys_path(ledger, revoked["id"]), headers=ledger.admin)
        assert delete.status_code == 204

        rotate = _keys_path(ledger, revoked["id"], "rotate")
        refused = assert_problem(
            await client.post(rotate, json={}, headers=ledger.admin), 409, "key_not_active"
        )
        assert "revoked" in refused["detail"]
        missing = _keys_path(ledger, "key_missing", "rotate")
        assert_problem(await client.post(missing, json={}, headers=ROOT), 404, "not_found")
        elsewhere = _keys_path(ledger, (await _new_key(client, ledger))["id"], "rotate")
        assert_problem(await client.post(elsewhere, json={}, headers=other.admin), 404, "not_found")
        assert_problem(await client.post(elsewhere, json={}, headers=ledger.write), 403, "forbidden")
        for overlap in (-1, 2_592_001, "60"):
            body = {"overlap_seconds": overlap}
            problem = assert_problem(await client.post(elsewhere, json=body, headers=ROOT), 422)
            assert problem["errors"][0]["loc"] == ["body", "overlap_seconds"]
        ok = await client.post(elsewhere, json={"overlap_seconds": 2_592_000}, headers=ROOT)
        assert ok.status_code == 201, ok.text


def _with_a_bad_checksum(secret: str) -> str:
    last = secret[-1]
    return secret[:-1] + ("A" if last != "A" else "B")


async def test_a_key_with_a_bad_checksum_is_refused_without_any_database_statement(tmp_path: Path) -> None:
    tally = Tally(settings_for(tmp_path))
    async with serving_in_process(tally) as client:
        ledger = await new_ledger(client)
        secret = ledger.read["Authorization"].removeprefix("Bearer ")
        by_request: dict[str | None, int] = {}

        def count(*_: Any) -> None:
            request_id = current_request_id()
            by_request[request_id] = by_request.get(request_id, 0) + 1

        for engine in tally.database.engines:
            event.listen(engine, "before_cursor_execute", count)
        try:
            # A well-formed key not seen before: its lookup is a statement of its request.
            unknown = new_secret("key")
            looked_up = await client.get(
                "/v1/accounts", headers={**bearer(unknown), "X-Request-ID": "known-sum"}
            )
            assert_problem(looked_up, 401, "unauthenticated")
            mistyped = {**bearer(_with_a_bad_checksum(secret)), "X-Request-ID": "bad-sum"}
            refused = assert_problem(
                await client.get("/v1/accounts", headers=mistyped), 401, "unauthenticated"
            )
        finally:
            for engine in tally.database.engines:
                event.remove(engine, "before_cursor_execute", count)

    assert refused["detail"] == "The API key is malformed."
    assert by_request.get("known-sum", 0) >= 1  # statements are seen, and by request
    assert "bad-sum" not in by_request


def test_a_secret_scanner_finds_a_leaked_key_in_text_and_tells_it_from_a_look_alike() -> None:
    leaked, root = new_secret("key"), new_secret("root")
    look_alike = _with_a_bad_checksum(new_secret("key"))
    blob = f"""
        export TALLY_KEY={leaked}
        curl -H 'Authorization: Bearer {look_alike}' https://tally.example/v1/accounts
        {{"root_key": "{root}", "note": "tally_key_short", "id": "key_0192b3c4d5e67f8091a2b3c4d5e6f708"}}
    """

    found = re.findall(LEAKED_KEY_PATTERN, blob)

    assert found == [leaked, look_alike, root]
    assert [secret for secret in found if secret_kind(secret) is not None] == [leaked, root]

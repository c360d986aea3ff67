"""Webhook subscriptions over the API: who may manage them, what a body may say, where a URL may
point, the secret shown once, and the wall between ledgers. Deliveries themselves are in
``tests/integration/test_webhook_delivery.py``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tally.config import Settings
from tests.receiver import Receiver
from tests.support import (
    RFC3339_UTC_MICROS,
    ROOT,
    LedgerKeys,
    asgi_client,
    assert_problem,
    client_for,
    idem,
    new_ledger,
    open_account,
    settings_for,
    start_server,
    transfer,
)

# A public address: subscriptions in these tests never see an event of their types, so nothing is
# ever sent there.
PUBLIC_URL = "https://93.184.216.34/hooks/tally"
QUIET = ["transfer_batch.completed"]
WEBHOOK_FIELDS = {"id", "url", "event_types", "max_per_second", "created_at"}


def webhook_settings(directory: Path, **overrides: Any) -> Settings:
    """The test's settings, with the secret key kept in its own directory (not the working one)."""
    return settings_for(directory, secret_key_file=directory / "tally.key", **overrides)


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(webhook_settings(tmp_path)) as c:
        yield c


async def subscribe(client: httpx.AsyncClient, keys: LedgerKeys, **body: Any) -> httpx.Response:
    body.setdefault("url", PUBLIC_URL)
    body.setdefault("event_types", QUIET)
    return await client.post("/v1/webhooks", json=body, headers=keys.admin)


async def test_an_admin_key_subscribes_and_sees_the_secret_only_in_the_creation_answer(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    response = await subscribe(client, ledger, event_types=["transfer.created", "account.created"])
    assert response.status_code == 201, response.text
    created = response.json()
    assert set(created) == {*WEBHOOK_FIELDS, "secret"}
    assert created["id"].startswith("wh_")
    assert (created["url"], created["max_per_second"]) == (PUBLIC_URL, None)
    assert created["event_types"] == ["transfer.created", "account.created"]
    assert RFC3339_UTC_MICROS.fullmatch(created["created_at"])
    secret = created["secret"]
    assert secret.startswith("whsec_")
    assert 24 <= len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) <= 32

    listed = await client.get("/v1/webhooks", headers=ledger.admin)
    assert listed.status_code == 200, listed.text
    assert listed.json() == {
        "data": [{k: v for k, v in created.items() if k != "secret"}],
        "next_cursor": None,
    }
    assert secret.removeprefix("whsec_") not in listed.text
    history = await client.get(f"/v1/webhooks/{created['id']}/deliveries", headers=ledger.admin)
    assert history.json() == {"data": [], "next_cursor": None}


async def test_every_type_is_one_star_and_a_rate_is_kept(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    response = await subscribe(client, ledger, event_types=["*"], max_per_second=5)
    assert response.status_code == 201, response.text
    assert (response.json()["event_types"], response.json()["max_per_second"]) == (["*"], 5)


@pytest.mark.parametrize("scope", ["write", "read"])
async def test_write_and_read_keys_may_not_manage_webhooks(
    client: httpx.AsyncClient, ledger: LedgerKeys, scope: str
) -> None:
    headers = getattr(ledger, scope)
    made = await subscribe(client, ledger)
    hook = made.json()["id"]
    body = {"url": PUBLIC_URL, "event_types": QUIET}
    assert_problem(await client.post("/v1/webhooks", json=body, headers=headers), 403, "forbidden")
    assert_problem(await client.get("/v1/webhooks", headers=headers), 403, "forbidden")
    assert_problem(await client.delete(f"/v1/webhooks/{hook}", headers=headers), 403, "forbidden")
    assert_problem(await client.get(f"/v1/webhooks/{hook}/deliveries", headers=headers), 403, "forbidden")
    assert_problem(await client.post(f"/v1/webhooks/{hook}/redrive", headers=headers), 403, "forbidden")
    assert_problem(await client.get("/v1/webhooks", headers=ROOT), 403, "forbidden")
    assert_problem(await client.get("/v1/webhooks"), 401, "unauthenticated")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"event_types": QUIET}, "url"),
        ({"url": PUBLIC_URL}, "event_types"),
        ({"url": PUBLIC_URL, "event_types": []}, "event_types"),
        ({"url": PUBLIC_URL, "event_types": ["transfer.exploded"]}, "event_types"),
        ({"url": PUBLIC_URL, "event_types": ["*", "transfer.created"]}, "event_types"),
        ({"url": PUBLIC_URL, "event_types": ["account.created", "account.created"]}, "event_types"),
        ({"url": PUBLIC_URL, "event_types": "transfer.created"}, "event_types"),
        ({"url": PUBLIC_URL, "event_types": QUIET, "max_per_second": 0}, "max_per_second"),
        ({"url": PUBLIC_URL, "event_types": QUIET, "max_per_second": 1.5}, "max_per_second"),
        ({"url": PUBLIC_URL, "event_types": QUIET, "max_per_second": "2"}, "max_per_second"),
        ({"url": PUBLIC_URL, "event_types": QUIET, "secret": "whsec_mine"}, "secret"),
        ({"url": 42, "event_types": QUIET}, "url"),
        ({"url": "https://" + "a" * 2050 + ".example/", "event_types": QUIET}, "url"),
    ],
)
async def test_bodies_that_break_the_rules_are_refused(
    client: httpx.AsyncClient, ledger: LedgerKeys, body: dict[str, Any], field: str
) -> None:
    response = await client.post("/v1/webhooks", json=body, headers=ledger.admin)
    problem = assert_problem(response, 422, "validation_error")
    assert any(field in error["loc"] for error in problem["errors"]), problem


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hooks",
        "http://localhost:9/hooks",
        "http://[::1]:9/hooks",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/hooks",
        "http://192.168.1.1/hooks",
        "https://user:password@93.184.216.34/hooks",
        "ftp://93.184.216.34/hooks",
        "not a url",
    ],
)
async def test_urls_that_may_not_receive_webhooks_are_refused_on_url(
    client: httpx.AsyncClient, ledger: LedgerKeys, url: str
) -> None:
    problem = assert_problem(await subscribe(client, ledger, url=url), 422, "validation_error")
    assert [error["loc"] for error in problem["errors"]] == [["body", "url"]]
    assert problem["errors"][0]["msg"]


async def test_a_loopback_url_is_accepted_once_its_address_is_allowed(tmp_path: Path) -> None:
    settings = webhook_settings(tmp_path, webhook_allowed_hosts=["127.0.0.1", "::1"])
    async with asgi_client(settings) as client:
        keys = await new_ledger(client)
        for url in ("http://127.0.0.1:9/hooks", "http://localhost:9/hooks"):
            response = await subscribe(client, keys, url=url)
            assert response.status_code == 201, response.text
        refused = await subscribe(client, keys, url="http://10.0.0.1/hooks")
        assert_problem(refused, 422, "validation_error")


async def test_a_replayed_creation_answers_the_same_subscription_without_its_secret(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    key = idem()
    body = {"url": PUBLIC_URL, "event_types": QUIET}
    first = await client.post("/v1/webhooks", json=body, headers={**ledger.admin, **key})
    again = await client.post("/v1/webhooks", json=body, headers={**ledger.admin, **key})
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.headers["idempotent-replayed"] == "true"
    assert first.json()["secret"].startswith("whsec_")
    assert again.json() == {**first.json(), "secret": None}
    listed = (await client.get("/v1/webhooks", headers=ledger.admin)).json()["data"]
    assert [w["id"] for w in listed] == [first.json()["id"]]


async def test_a_deleted_subscription_is_gone_and_a_second_delete_is_not_found(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    kept, dropped = (await subscribe(client, ledger)).json(), (await subscribe(client, ledger)).json()
    deleted = await client.delete(f"/v1/webhooks/{dropped['id']}", headers=ledger.admin)
    assert deleted.status_code == 204
    assert deleted.content == b""
    listed = (await client.get("/v1/webhooks", headers=ledger.admin)).json()["data"]
    assert [w["id"] for w in listed] == [kept["id"]]
    again = await client.delete(f"/v1/webhooks/{dropped['id']}", headers=ledger.admin)
    assert_problem(again, 404, "not_found")
    gone = await client.get(f"/v1/webhooks/{dropped['id']}/deliveries", headers=ledger.admin)
    assert_problem(gone, 404, "not_found")
    assert_problem(await client.post(f"/v1/webhooks/{dropped['id']}/redrive", headers=ledger.admin), 404)


async def test_another_ledgers_subscription_is_not_found(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    other = await new_ledger(client, "other")
    theirs = (await subscribe(client, other)).json()["id"]
    mine = ledger.admin
    assert_problem(await client.delete(f"/v1/webhooks/{theirs}", headers=mine), 404, "not_found")
    assert_problem(await client.get(f"/v1/webhooks/{theirs}/deliveries", headers=mine), 404, "not_found")
    assert_problem(await client.post(f"/v1/webhooks/{theirs}/redrive", headers=mine), 404, "not_found")
    assert (await client.get("/v1/webhooks", headers=mine)).json()["data"] == []
    assert [w["id"] for w in (await client.get("/v1/webhooks", headers=other.admin)).json()["data"]] == [
        theirs
    ]


async def test_subscriptions_list_in_pages_and_queries_are_checked(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    made = [(await subscribe(client, ledger)).json()["id"] for _ in range(3)]
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/webhooks", params=params, headers=ledger.admin)).json()
        seen += [w["id"] for w in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == made
    bad = await client.get(f"/v1/webhooks/{made[0]}/deliveries?status=lost", headers=ledger.admin)
    assert_problem(bad, 422, "validation_error")
    assert_problem(await client.get("/v1/webhooks?limit=0", headers=ledger.admin), 422, "validation_error")
    assert_problem(
        await client.get("/v1/webhooks?cursor=nope", headers=ledger.admin), 422, "validation_error"
    )
    redriven = await client.post(f"/v1/webhooks/{made[0]}/redrive", headers=ledger.admin)
    assert (redriven.status_code, redriven.json()) == (200, {"redriven": 0})


@pytest.mark.server
async def test_a_real_server_delivers_and_its_logs_and_answers_never_show_the_secret(tmp_path: Path) -> None:
    """No TALLY_SECRET_KEY: the key is generated into ./tally.key (mode 0600) at the first subscription."""
    receiver = Receiver().start()
    server = start_server(
        tmp_path, {"TALLY_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1", "TALLY_WORKER_POLL_MS": "50"}
    )
    try:
        async with client_for(server.base_url) as client:
            keys = await new_ledger(client)
            assert not (tmp_path / "tally.key").exists()  # made at first use, not at start
            created = await client.post(
                "/v1/webhooks",
                json={"url": receiver.url, "event_types": ["transfer.created"]},
                headers=keys.admin,
            )
            assert created.status_code == 201, created.text
            hook, secret = created.json()["id"], created.json()["secret"]
            receiver.secret = secret
            await open_account(client, keys.write, id="world", normal_balance="debit", min_balance=None)
            await open_account(client, keys.write, id="alice")
            assert (await transfer(client, keys.write, "world", "alice", 5)).status_code == 201

            deadline = time.monotonic() + 60
            while not receiver.applied():
                assert time.monotonic() < deadline, "no delivery arrived"
                await asyncio.sleep(0.05)
            answers = [
                (await client.get("/v1/webhooks", headers=keys.admin)).text,
                (await client.get(f"/v1/webhooks/{hook}/deliveries", headers=keys.admin)).text,
            ]
    finally:
        server.stop()
        receiver.stop()

    assert all(r.signature_ok for r in receiver.received())
    raw = secret.removeprefix("whsec_")
    assert not any(raw in answer for answer in answers)
    log = server.log_path.read_text()
    assert raw not in log
    assert "webhook delivered" in log
    key_file = tmp_path / "tally.key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert len(base64.b64decode(key_file.read_text().strip())) == 32

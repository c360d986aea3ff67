"""Webhook deliveries end to end, on SQLite and on PostgreSQL: a Tally app in this process (workers
and dispatcher included) delivers to a real receiver on 127.0.0.1 that checks every signature.

The receiver (``tests.receiver``) fails on demand, goes down and comes back, and applies each
message once by its ``webhook-id``. Outcomes are polled with a deadline; nothing here asserts how
fast anything is, only the order and spacing a rate limit imposes.
"""

from __future__ import annotations

import asyncio
import ipaddress
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tally.outbound import Destinations, HttpSender, Refused
from tally.secretbox import new_key_text
from tally.services.webhook_signing import headers as signed
from tally.services.webhooks import DeliveryFailed
from tests.receiver import Receiver
from tests.support import (
    BACKENDS,
    LedgerKeys,
    asgi_client,
    new_ledger,
    open_account,
    settings_for,
    transfer,
)

T = TypeVar("T")
SECRET_KEY = new_key_text()
STRONG = {"Tally-Consistency": "strong"}  # deliveries are written by workers: read the primary


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver().start()
    try:
        yield running
    finally:
        running.stop()


@asynccontextmanager
async def tally(directory: Path, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    """Tally in this process, allowed to deliver to 127.0.0.1, with short polls and backoffs."""
    values: dict[str, Any] = {
        "webhook_allowed_hosts": ["127.0.0.1"],
        "secret_key": SECRET_KEY,
        "worker_poll_ms": 50,
        "webhook_first_backoff_ms": 50,
        "webhook_longest_backoff_ms": 200,
        "webhook_max_attempts": 5,
        "hold_sweep_seconds": 3600.0,
        **overrides,
    }
    async with asgi_client(settings_for(directory, **values)) as client:
        yield client


async def eventually(probe: Callable[[], Awaitable[T | None]], seconds: float = 60.0) -> T:
    """``probe()`` once it answers something truthy; fails after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        found = await probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {seconds} s")
        await asyncio.sleep(0.05)


async def subscribe(
    client: httpx.AsyncClient, keys: LedgerKeys, receiver: Receiver, **body: Any
) -> dict[str, Any]:
    body.setdefault("event_types", ["transfer.created"])
    response = await client.post("/v1/webhooks", json={"url": receiver.url, **body}, headers=keys.admin)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    receiver.secret = created["secret"]
    return created


async def deliveries(
    client: httpx.AsyncClient, keys: LedgerKeys, webhook_id: str, **query: Any
) -> list[dict[str, Any]]:
    response = await client.get(
        f"/v1/webhooks/{webhook_id}/deliveries", params=query, headers={**keys.admin, **STRONG}
    )
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["data"]
    return found


def settled(client: httpx.AsyncClient, keys: LedgerKeys, webhook_id: str, status: str, count: int = 1) -> Any:
    async def probe() -> list[dict[str, Any]] | None:
        found = await deliveries(client, keys, webhook_id, status=status)
        return found if len(found) >= count else None

    return probe


async def books(client: httpx.AsyncClient, keys: LedgerKeys) -> None:
    await open_account(client, keys.write, id="world", normal_balance="debit", min_balance=None)
    await open_account(client, keys.write, id="alice")


@pytest.mark.usefixtures("backend")
async def test_a_delivery_that_fails_three_times_is_delivered_on_the_fourth_signed_and_applied_once(
    tmp_path: Path, receiver: Receiver
) -> None:
    async with tally(tmp_path) as client:
        keys = await new_ledger(client)
        hook = await subscribe(client, keys, receiver)
        await books(client, keys)
        receiver.fail_next(3)
        made = await client.post(
            "/v1/transfers",
            json={"debit_account_id": "world", "credit_account_id": "alice", "amount": 250},
            headers={**keys.write, "Idempotency-Key": "k-1", "X-Request-ID": "req-hook-fails-3"},
        )
        assert made.status_code == 201, made.text

        [delivered] = await eventually(settled(client, keys, hook["id"], "delivered"))

    event_id = delivered["event_id"]
    assert delivered["event_type"] == "transfer.created"
    assert delivered["attempts"] == 4
    assert [a["status_code"] for a in delivered["attempt_log"]] == [500, 500, 500, 204]
    assert [a["attempt"] for a in delivered["attempt_log"]] == [1, 2, 3, 4]
    assert (delivered["last_status_code"], delivered["last_error"]) == (204, None)
    assert delivered["delivered_at"] is not None

    seen = receiver.received()
    assert len(seen) == 4
    assert all(r.signature_ok for r in seen)
    assert {r.webhook_id for r in seen} == {event_id}  # the same id on every retry
    assert {r.headers["x-request-id"] for r in seen} == {"req-hook-fails-3"}
    assert {r.headers["user-agent"] for r in seen} == {"Tally-Webhooks/1"}
    assert all(r.headers["content-type"] == "application/json" for r in seen)
    assert list(receiver.applied()) == [event_id]  # applied once, though received four times
    event = receiver.applied()[event_id]
    assert set(event) == {"id", "type", "created_at", "data", "request_id"}
    assert (event["id"], event["type"], event["request_id"]) == (
        event_id,
        "transfer.created",
        "req-hook-fails-3",
    )
    assert event["data"]["id"] == made.json()["id"]
    assert all(abs(int(r.timestamp) - time.time()) < 300 for r in seen)


@pytest.mark.usefixtures("backend")
async def test_a_receiver_that_is_down_gets_its_delivery_dead_after_the_last_attempt_and_redrive_delivers_it(
    tmp_path: Path, receiver: Receiver
) -> None:
    async with tally(tmp_path, webhook_max_attempts=3) as client:
        keys = await new_ledger(client)
        hook = await subscribe(client, keys, receiver)
        await books(client, keys)
        receiver.down()
        assert (await transfer(client, keys.write, "world", "alice", 100)).status_code == 201

        [dead] = await eventually(settled(client, keys, hook["id"], "dead"))
        assert dead["attempts"] == 3
        assert [a["status_code"] for a in dead["attempt_log"]] == [None, None, None]
        assert all(a["error"] for a in dead["attempt_log"])
        assert dead["last_error"]
        assert dead["delivered_at"] is None
        times = [a["at"] for a in dead["attempt_log"]]
        assert times == sorted(times)

        receiver.start()  # back, on the same port
        redriven = await client.post(f"/v1/webhooks/{hook['id']}/redrive", headers=keys.admin)
        assert redriven.status_code == 200, redriven.text
        assert redriven.json() == {"redriven": 1}

        [delivered] = await eventually(settled(client, keys, hook["id"], "delivered"))
        assert delivered["id"] == dead["id"]
        assert delivered["attempts"] == 4
        assert [a["status_code"] for a in delivered["attempt_log"]] == [None, None, None, 204]
        again = await client.post(f"/v1/webhooks/{hook['id']}/redrive", headers=keys.admin)
        assert again.json() == {"redriven": 0}  # nothing is dead any more
        assert await deliveries(client, keys, hook["id"], status="dead") == []

    assert list(receiver.applied()) == [delivered["event_id"]]
    assert all(r.signature_ok for r in receiver.received())


@pytest.mark.usefixtures("backend")
async def test_a_rate_limited_subscription_spreads_its_deliveries_without_spending_attempts(
    tmp_path: Path, receiver: Receiver
) -> None:
    async with tally(tmp_path) as client:
        keys = await new_ledger(client)
        hook = await subscribe(client, keys, receiver, max_per_second=2)
        await books(client, keys)
        for _ in range(6):
            assert (await transfer(client, keys.write, "world", "alice", 10)).status_code == 201

        found = await eventually(settled(client, keys, hook["id"], "delivered", count=6))

    assert [d["attempts"] for d in found] == [1] * 6  # waiting for a slot is not an attempt
    arrivals = sorted(r.at for r in receiver.received())
    assert len(arrivals) == 6
    # Two a second: six deliveries take at least 2.5 s from the first to the last (loosely, 2 s).
    assert arrivals[-1] - arrivals[0] >= 2.0
    assert len(receiver.applied()) == 6


@pytest.mark.usefixtures("backend")
async def test_subscriptions_receive_only_their_event_types_and_star_receives_every_type(
    tmp_path: Path,
) -> None:
    every, accounts = Receiver().start(), Receiver().start()
    try:
        async with tally(tmp_path) as client:
            keys = await new_ledger(client)
            star = await subscribe(client, keys, every, event_types=["*"])
            only = await subscribe(client, keys, accounts, event_types=["account.created"])
            await books(client, keys)
            assert (await transfer(client, keys.write, "world", "alice", 5)).status_code == 201

            await eventually(settled(client, keys, star["id"], "delivered", count=3))
            await eventually(settled(client, keys, only["id"], "delivered", count=2))
            # The transfer's delivery to `star` was dispatched in the same page or after the
            # accounts' ones: once `star` has all three, `only` has had every chance to get a third.
            assert len(await deliveries(client, keys, only["id"])) == 2
    finally:
        every.stop()
        accounts.stop()

    assert sorted(e["type"] for e in every.applied().values()) == [
        "account.created",
        "account.created",
        "transfer.created",
    ]
    assert [e["type"] for e in accounts.applied().values()] == ["account.created"] * 2


@pytest.mark.usefixtures("backend")
async def test_a_deleted_subscription_sends_nothing_more_and_its_pending_delivery_goes_dead(
    tmp_path: Path, receiver: Receiver
) -> None:
    async with tally(tmp_path, webhook_first_backoff_ms=2000, webhook_longest_backoff_ms=2000) as client:
        keys = await new_ledger(client)
        hook = await subscribe(client, keys, receiver)
        await books(client, keys)
        receiver.fail_next(1000)
        assert (await transfer(client, keys.write, "world", "alice", 7)).status_code == 201
        await eventually(settled(client, keys, hook["id"], "retrying"))

        deleted = await client.delete(f"/v1/webhooks/{hook['id']}", headers=keys.admin)
        assert deleted.status_code == 204

        async def dead_in_the_database() -> list[tuple[Any, ...]] | None:
            rows = BACKENDS.rows(tmp_path, "SELECT status, last_error FROM deliveries")
            return rows if rows and rows[0][0] == "dead" else None

        [(_, error)] = await eventually(dead_in_the_database)
        assert "deleted" in error
        tried = len(receiver.received())  # an attempt in flight at the delete has been recorded by now

        assert (await transfer(client, keys.write, "world", "alice", 8)).status_code == 201
        [(last_event,)] = BACKENDS.rows(tmp_path, "SELECT max(pk) FROM events")

        async def dispatched() -> bool:
            rows = BACKENDS.rows(tmp_path, "SELECT pk FROM feed_positions WHERE consumer = 'webhooks'")
            return bool(rows) and rows[0][0] >= last_event

        await eventually(dispatched)
        assert len(BACKENDS.rows(tmp_path, "SELECT pk FROM deliveries")) == 1  # none for the new event

    assert len(receiver.received()) == tried
    assert receiver.applied() == {}


# --- where deliveries may go, checked again at each attempt (no database involved) --------------


def resolving(table: dict[str, list[list[str]]]) -> Callable[[str, int], Awaitable[list[str]]]:
    """A resolver that answers each host's next answer in turn (the last one repeats)."""

    async def resolve(host: str, port: int) -> list[str]:
        del port
        answers = table[host]
        return answers.pop(0) if len(answers) > 1 else answers[0]

    return resolve


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1/hook", "not a public address"),
        ("http://[::1]/hook", "not a public address"),
        ("http://[::ffff:127.0.0.1]/hook", "not a public address"),
        ("http://[64:ff9b::a00:1]/hook", "not a public address"),  # NAT64 of 10.0.0.1
        ("http://169.254.169.254/latest/meta-data", "not a public address"),
        ("http://10.1.2.3:8080/hook", "not a public address"),
        ("http://100.64.0.1/hook", "not a public address"),
        ("http://0.0.0.0/hook", "not a public address"),
        ("http://224.0.0.1/hook", "not a public address"),
        ("https://user:pw@example.com/hook", "credentials"),
        ("ftp://example.com/hook", "https://"),
        ("https:///hook", "no host"),
    ],
)
async def test_private_addresses_schemes_and_credentials_are_refused(url: str, reason: str) -> None:
    with pytest.raises(Refused, match=reason):
        await Destinations(resolver=resolving({"example.com": [["93.184.216.34"]]})).check(url)


async def test_allowed_networks_and_hosts_open_a_private_destination_and_nothing_else() -> None:
    policy = Destinations(
        ["10.0.0.0/8", "internal.example"],
        resolver=resolving({"internal.example": [["192.168.1.5"]], "other.example": [["192.168.1.5"]]}),
    )
    assert (await policy.check("http://10.1.2.3/hook")).addresses == (ipaddress.ip_address("10.1.2.3"),)
    assert (await policy.check("https://internal.example/hook")).name == "internal.example"
    with pytest.raises(Refused, match=r"192\.168\.1\.5"):
        await policy.check("https://other.example/hook")
    with pytest.raises(Refused, match="not a public address"):
        await policy.check("http://127.0.0.1/hook")


async def test_a_host_that_resolves_to_any_private_address_is_refused() -> None:
    policy = Destinations(resolver=resolving({"mixed.example": [["93.184.216.34", "10.0.0.7"]]}))
    with pytest.raises(Refused, match=r"10\.0\.0\.7"):
        await policy.check("https://mixed.example/hook")


async def test_a_host_rebound_to_a_private_address_after_creation_is_refused_at_delivery(
    receiver: Receiver,
) -> None:
    policy = Destinations(resolver=resolving({"rebound.example": [["93.184.216.34"], ["127.0.0.1"]]}))
    assert await policy.refusal("http://rebound.example/hook") is None  # at creation: public
    with pytest.raises(DeliveryFailed, match=r"refused: .*127\.0\.0\.1"):
        await HttpSender(policy, timeout=2).post("http://rebound.example/hook", b"{}", {})
    assert receiver.received() == []


async def test_the_sender_connects_to_the_address_it_checked_and_keeps_the_host_name(
    receiver: Receiver,
) -> None:
    # `hooks.invalid` exists in no DNS: the request can only arrive through the checked address.
    policy = Destinations(["127.0.0.1"], resolver=resolving({"hooks.invalid": [["127.0.0.1"]]}))
    receiver.secret = "whsec_" + "A" * 43 + "="
    body = b'{"id": "evt_1"}'
    sent = signed(receiver.secret, "evt_1", int(time.time()), body)
    status = await HttpSender(policy, timeout=5).post(
        f"http://hooks.invalid:{receiver.port}/hooks", body, sent
    )
    assert status == 204
    [request] = receiver.received()
    assert request.headers["host"] == f"hooks.invalid:{receiver.port}"
    assert request.signature_ok


async def test_a_redirect_is_a_failed_attempt_not_followed() -> None:
    class Redirect(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(307)
            self.send_header("location", "http://169.254.169.254/")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        sender = HttpSender(Destinations(["127.0.0.1"]), timeout=5)
        assert await sender.post(f"http://127.0.0.1:{server.server_address[1]}/", b"{}", {}) == 307
    finally:
        server.shutdown()
        server.server_close()
        thread.join()

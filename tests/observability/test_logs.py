"""The logs of a real ``tally serve``: correlated by request id, and free of secrets.

Invariants, in plain words:
- every request writes exactly one access line, with its request id, ledger, method, route
  template, status, duration, replay flag, and the count and time of its statements;
- every line a request writes carries that request's id (here every statement writes a
  slow-query line, with ``TALLY_SLOW_QUERY_MS=0``, so each request writes several); lines of
  background work carry the name of their ``job`` instead, and a group of transfers' lines the
  ``request_ids`` it wrote (ADR 0042);
- no key, webhook secret, ops token or credential reaches any line, whatever the client sends and
  wherever it puts it (headers, query strings, bodies echoed in validation errors, the request line
  of a malformed request).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tally.domain.keys import new_secret
from tests.support import ROOT, ROOT_KEY, Server, bearer, funded_account, idem, new_ledger, start_server

pytestmark = pytest.mark.server

OPS_TOKEN = f"ops-{uuid.uuid4().hex}"
SLOW_EVERYTHING = {
    "TALLY_SLOW_QUERY_MS": "0",
    "TALLY_LOG_LEVEL": "DEBUG",
    "TALLY_OPS_TOKEN": OPS_TOKEN,
    # One process: no feed reads that could drop the written-through account before its read.
    "TALLY_CACHE_INVALIDATION": "off",
}


@pytest.fixture
def chatty_server(tmp_path: Path) -> Iterator[Server]:
    """A server that logs every statement (as slow) and everything at DEBUG, with an ops token."""
    running = start_server(tmp_path, SLOW_EVERYTHING)
    try:
        yield running
    finally:
        running.stop()


def json_lines(server: Server) -> list[dict[str, Any]]:
    return [json.loads(line) for line in server.log_lines() if line.startswith("{")]


def wait_for_access_lines(server: Server, request_ids: set[str]) -> list[dict[str, Any]]:
    """The server's JSON lines, once every request of ``request_ids`` has its access line."""
    deadline = time.monotonic() + 10
    while True:
        lines = json_lines(server)
        logged = {line.get("request_id") for line in lines if line.get("event") == "request"}
        if request_ids <= logged or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


async def test_every_line_of_a_request_carries_the_id_of_its_access_line(chatty_server: Server) -> None:
    sent: list[str] = []
    async with httpx.AsyncClient(base_url=chatty_server.base_url) as client:

        async def call(method: str, path: str, **options: Any) -> httpx.Response:
            # One at a time, so that the lines between two access lines belong to one request.
            response = await client.request(method, path, **options)
            sent.append(response.headers["x-request-id"])
            return response

        created = await call(
            "POST", "/v1/ledgers", json={"name": "logs"}, headers={**ROOT, "X-Request-ID": "req-logs.1"}
        )
        ledger_id = created.json()["id"]
        key = await call(
            "POST", f"/v1/ledgers/{ledger_id}/keys", json={"name": "w", "scopes": ["write"]}, headers=ROOT
        )
        write = bearer(key.json()["key"])
        await call("POST", "/v1/accounts", json={"id": "a", "currency": "USD"}, headers=write)
        await call("GET", "/v1/accounts/a", headers=write)
        await call("GET", "/v1/accounts/missing", headers=write)
        await call("GET", "/v1/accounts", headers={"X-Request-ID": "no key"})  # malformed id, 401
        await call("GET", "/readyz")
        await call("POST", "/v1/accounts", json={"id": "b", "currency": "USD"}, headers=write)
        # Written in a group (ADR 0042): its statements run in the group's task. Refused ("a" is
        # empty), and the refusal stored: still a write.
        moved = {"debit_account_id": "a", "credit_account_id": "b", "amount": 1}
        refused = await call("POST", "/v1/transfers", json=moved, headers={**write, **idem()})
        assert refused.status_code == 422

    lines = wait_for_access_lines(chatty_server, set(sent))
    access = [line for line in lines if line.get("event") == "request"]
    assert [line["request_id"] for line in access if line["request_id"] in sent] == sent
    assert sent[0] == "req-logs.1"
    assert sent[5] != "no key"  # replaced by a generated one, which is the one logged

    # Requests ran one at a time: the lines after one access line, up to the next, are the next
    # request's (or a background job's, which says so).
    started = next(i for i, line in enumerate(lines) if line.get("event") == "started")
    spans: list[list[dict[str, Any]]] = [[]]
    for line in lines[started + 1 :]:
        if "job" not in line:
            spans[-1].append(line)
            if line.get("event") == "request":
                spans.append([])
    by_access = {span[-1]["request_id"]: span for span in spans if span}
    # A group's lines name their job and the requests they wrote, and no request id of their own.
    grouped = [line for line in lines if line.get("job") == "transfer_groups"]
    assert grouped
    assert all("request_id" not in line for line in grouped)
    for request_id in sent:
        span = by_access[request_id]
        assert {line.get("request_id") for line in span} == {request_id}, span
        statements = [line for line in span if line.get("event") == "slow query"]
        for_it = [line for line in grouped if request_id in line.get("request_ids", [])]
        assert len(statements) + len(for_it) == span[-1]["db_queries"]
    assert {tuple(line["request_ids"]) for line in grouped} == {(sent[-1],)}
    assert len(grouped) >= 3  # its key's record read and stored, its accounts locked
    # The read of the account just written comes from the cache (written through on commit, and
    # the key's lookup cached by the write before it): no statement. The 401 ran none either.
    ran_statements = [len(by_access[request_id]) > 1 for request_id in sent[:7]]
    assert ran_statements == [True, True, True, False, True, False, True]
    by_id = {line["request_id"]: line for line in access}
    account = by_id[sent[2]]
    assert account["route"] == "/v1/accounts"
    assert account["method"] == "POST"
    assert account["status"] == 201
    assert account["ledger_id"] == ledger_id
    assert account["replayed"] is False
    assert account["db_queries"] >= 3
    assert account["db_ms"] >= 0
    assert account["duration_ms"] >= account["db_ms"]
    statements = [line for line in by_access[sent[2]] if line.get("event") == "slow query"]
    assert len(statements) == account["db_queries"]
    assert not [line["sql"] for line in statements if "USD" in line["sql"] or ledger_id in line["sql"]]
    assert by_id[sent[3]]["route"] == "/v1/accounts/{account_id}"


async def test_a_replayed_request_is_flagged_in_its_access_line(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        ledger = await new_ledger(client)
        await funded_account(client, ledger, "alice", 500)
        headers = {**ledger.write, **idem("replay-me"), "X-Request-ID": "first"}
        body = {"debit_account_id": "alice", "credit_account_id": "world", "amount": 5}
        await client.post("/v1/transfers", json=body, headers=headers)
        again = await client.post("/v1/transfers", json=body, headers={**headers, "X-Request-ID": "again"})
        assert again.headers["idempotent-replayed"] == "true"
    lines = {
        line["request_id"]: line
        for line in wait_for_access_lines(server, {"first", "again"})
        if line.get("event") == "request"
    }
    assert lines["first"]["replayed"] is False
    assert lines["again"]["replayed"] is True
    assert lines["again"]["route"] == "/v1/transfers"


async def test_no_secret_reaches_a_log_line_whatever_the_client_sends(chatty_server: Server) -> None:
    whsec = "whsec_c2VjcmV0LXdlYmhvb2stc2lnbmluZy1rZXk="
    malformed = ["tally_key_" + "x" * 36, "tally_root_" + "y" * 36, "tally_key_short", new_secret("key")]
    async with httpx.AsyncClient(base_url=chatty_server.base_url) as client:
        ledger = await new_ledger(client)
        issued = [header["Authorization"].split()[1] for header in (ledger.admin, ledger.write, ledger.read)]
        key_id = (await client.get(f"/v1/ledgers/{ledger.ledger_id}/keys", headers=ROOT)).json()["data"][0][
            "id"
        ]
        await client.delete(f"/v1/ledgers/{ledger.ledger_id}/keys/{key_id}", headers=ROOT)
        secrets = [ROOT_KEY, OPS_TOKEN, whsec, *issued, *malformed]
        for secret in [*issued, *malformed]:
            await client.get("/v1/accounts", headers=bearer(secret))  # good, revoked and malformed keys
            await client.get("/v1/accounts", headers={"Authorization": secret})  # no scheme
            await client.get(f"/v1/accounts?api_key={secret}&limit={secret}", headers=ledger.read)
            await client.get(f"/v1/accounts/{secret}", headers=ledger.read)
            await client.post(
                "/v1/accounts",
                json={"currency": secret, "name": secret, "metadata": {"webhook": whsec}, secret: 1},
                headers={**ledger.write, "X-Request-ID": secret, "Idempotency-Key": secret},
            )
            await client.post(
                "/v1/transfers",
                json={"debit_account_id": secret, "credit_account_id": "b", "amount": secret},
                headers={**ledger.write, **idem(secret)},
            )
            await client.post("/v1/ledgers", content=f'{{"name": "{secret}"'.encode(), headers=ROOT)
        await client.get("/metrics", headers={"Authorization": f"Bearer {OPS_TOKEN}x"})
        await client.get("/metrics", headers=bearer(OPS_TOKEN))
        await client.get(f"/dashboard?token={OPS_TOKEN}")
        await client.get(f"/dashboard/data?token={whsec}", headers={"webhook-secret": whsec})
        await client.get("/v1/accounts", headers={"Authorization": f"Basic {whsec}", "Cookie": f"k={whsec}"})
    for secret in malformed[:2]:
        _send_raw(
            chatty_server, f"GET /v1/accounts?key={secret} HTTP/1.1\r\nHost: x\r\nBroken {secret}\r\n\r\n"
        )
        _send_raw(
            chatty_server,
            "POST /v1/accounts HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            f'Authorization: Bearer {secret}\r\n\r\n{{"a"',
        )
    await asyncio.sleep(0.5)

    text = chatty_server.log_path.read_text()
    assert len(text.splitlines()) > 50, "the server should have logged every request and statement"
    leaked = [secret for secret in secrets if secret in text]
    assert leaked == []
    for secret in secrets:
        # Nor a recognisable part of one (the random body of a key is 30 characters).
        assert secret[-24:] not in text


def _send_raw(server: Server, request: str) -> None:
    address = urlsplit(server.base_url)
    with socket.create_connection((address.hostname or "127.0.0.1", address.port or 80), timeout=5) as sock:
        sock.sendall(request.encode())
        sock.shutdown(socket.SHUT_WR)
        try:
            while sock.recv(4096):
                pass
        except OSError:
            pass


def test_a_server_without_metrics_still_writes_its_access_line(tmp_path: Path) -> None:
    running = start_server(tmp_path, {"TALLY_METRICS_ENABLED": "false"})
    try:
        response = httpx.get(f"{running.base_url}/readyz", headers={"X-Request-ID": "plain"})
        assert response.status_code == 200
        assert httpx.get(f"{running.base_url}/metrics").status_code == 404
        lines = wait_for_access_lines(running, {"plain"})
    finally:
        running.stop()
    access = [line for line in lines if line.get("request_id") == "plain"]
    assert len(access) == 1
    assert access[0]["route"] == "/readyz"
    assert "db_queries" not in access[0]

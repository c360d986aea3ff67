"""Slow and oversized clients against a real ``tally serve``, over raw sockets.

Invariants, in plain words:
- a connection that sends part of its headers, even a byte at a time, is answered 408
  ``request_timeout`` and closed once the header deadline passes; one that sends nothing is closed;
- a request that sends its headers, then part of its body or a trickle of it, is answered 408
  ``request_timeout`` and closed, and nothing of it is applied;
- a request line plus headers over ``TALLY_MAX_HEADER_BYTES`` is answered 431 ``headers_too_large``
  and closed; one within it is served;
- every one of these answers is problem+json with its request id, and the server goes on serving.

The server runs with short deadlines so that each case ends in a fraction of a second; the tests
wait for the server to end the exchange (with a generous socket timeout as a guard) and never
measure how long it took.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import ROOT_KEY, Server, start_server

pytestmark = pytest.mark.server

MAX_HEADER_BYTES = 4096
GUARD_SECONDS = 20.0  # far above the 300 ms deadlines: only a server that never ends the exchange hits it
ENV = {
    "TALLY_MAX_HEADER_BYTES": str(MAX_HEADER_BYTES),
    "TALLY_HEADER_READ_TIMEOUT_MS": "300",
    "TALLY_BODY_READ_TIMEOUT_MS": "300",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(tmp_path_factory.mktemp("slow-clients"), ENV)
    try:
        yield running
    finally:
        running.stop()


def connect(server: Server) -> socket.socket:
    url = httpx.URL(server.base_url)
    assert url.port is not None
    sock = socket.create_connection((url.host, url.port), timeout=GUARD_SECONDS)
    sock.settimeout(GUARD_SECONDS)
    return sock


def trickle(sock: socket.socket, data: bytes) -> bytes:
    """Send ``data`` a byte every 50 ms until the server answers; the answer, up to the close."""
    sock.settimeout(0.05)
    for index in range(len(data)):
        try:
            sock.sendall(data[index : index + 1])
        except (BrokenPipeError, ConnectionResetError):
            break
        try:
            answer = sock.recv(65536)
        except TimeoutError:
            continue
        sock.settimeout(GUARD_SECONDS)
        return answer + read_until_closed(sock)
    sock.settimeout(GUARD_SECONDS)
    return read_until_closed(sock)


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts as closing)."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def parse(raw: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    """The one response in ``raw``: status, headers (lower-cased names), JSON body."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    assert len(body) == int(headers["content-length"]), raw
    return int(status_line.split()[1]), headers, json.loads(body)


def assert_refused(raw: bytes, status: int, code: str) -> None:
    got, headers, problem = parse(raw)
    assert got == status, raw
    assert headers["content-type"] == "application/problem+json"
    assert headers["connection"] == "close"
    assert problem["code"] == code
    assert problem["status"] == status
    assert problem["type"] == f"/problems/{code}"
    assert problem["request_id"] == headers["x-request-id"]


def assert_still_serving(server: Server) -> None:
    assert httpx.get(f"{server.base_url}/healthz", timeout=GUARD_SECONDS).status_code == 200


def test_a_connection_that_sends_part_of_its_headers_gets_408_and_is_closed(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: tally\r\nX-Slow: ")
        assert_refused(read_until_closed(sock), 408, "request_timeout")
    assert_still_serving(server)


def test_headers_trickled_a_byte_at_a_time_still_meet_one_deadline(server: Server) -> None:
    """Slowloris: every byte would reset an idle timer; the header deadline is for the whole block."""
    request = b"GET /healthz HTTP/1.1\r\nHost: tally\r\n" + b"X-Slow: " + b"a" * 1000  # 50 s at this pace
    with connect(server) as sock:
        assert_refused(trickle(sock, request), 408, "request_timeout")
    assert_still_serving(server)


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(server: Server) -> None:
    with connect(server) as sock:
        assert read_until_closed(sock) == b""


def test_a_kept_alive_connection_that_begins_a_request_and_stalls_gets_408(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: tally\r\n\r\n")
        first = b""
        while b'{"status":"ok"}' not in first:
            first += sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 ")
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: tally\r\n")  # and no blank line
        assert_refused(read_until_closed(sock), 408, "request_timeout")


@pytest.fixture(scope="module")
def write_key(server: Server) -> str:
    """The secret of a write key of a fresh ledger."""
    root = {"Authorization": f"Bearer {ROOT_KEY}"}
    ledger = httpx.post(f"{server.base_url}/v1/ledgers", json={"name": "slow"}, headers=root, timeout=30)
    assert ledger.status_code == 201, ledger.text
    path = f"{server.base_url}/v1/ledgers/{ledger.json()['id']}/keys"
    key = httpx.post(path, json={"name": "w", "scopes": ["write"]}, headers=root, timeout=30)
    assert key.status_code == 201, key.text
    secret: str = key.json()["key"]
    return secret


def accounts(server: Server, key: str) -> list[dict[str, Any]]:
    listed = httpx.get(
        f"{server.base_url}/v1/accounts", headers={"Authorization": f"Bearer {key}"}, timeout=30
    )
    assert listed.status_code == 200, listed.text
    data: list[dict[str, Any]] = listed.json()["data"]
    return data


def account_request(key: str, body: bytes) -> bytes:
    """The head of ``POST /v1/accounts`` announcing ``body``, which is sent separately."""
    return (
        b"POST /v1/accounts HTTP/1.1\r\nHost: tally\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + key.encode() + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )


def test_a_request_that_stops_sending_its_body_gets_408_and_nothing_is_applied(
    server: Server, write_key: str
) -> None:
    body = b'{"id": "never-finished", "currency": "USD"}'
    with connect(server) as sock:
        sock.sendall(account_request(write_key, body) + body[:10])
        assert_refused(read_until_closed(sock), 408, "request_timeout")
    assert accounts(server, write_key) == []


def test_a_body_trickled_a_byte_at_a_time_gets_408_and_nothing_is_applied(
    server: Server, write_key: str
) -> None:
    body = b'{"id": "trickled", "currency": "USD", "name": "' + b"t" * 500 + b'"}'  # 25 s at this pace
    with connect(server) as sock:
        sock.sendall(account_request(write_key, body))
        assert_refused(trickle(sock, body), 408, "request_timeout")
    assert accounts(server, write_key) == []


def test_a_whole_request_sent_slowly_but_within_the_deadlines_is_served(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: tally\r\n")
        time.sleep(0.05)  # well within the 300 ms header deadline
        sock.sendall(b"Connection: close\r\n\r\n")
        status, _, body = parse(read_until_closed(sock))
    assert (status, body) == (200, {"status": "ok"})


@pytest.mark.parametrize(
    "headers",
    [
        b"X-Big: " + b"a" * MAX_HEADER_BYTES + b"\r\n",
        b"".join(b"X-Many-%d: %s\r\n" % (i, b"v" * 100) for i in range(MAX_HEADER_BYTES // 100)),
        b"X-Huge: " + b"a" * (1024 * 1024) + b"\r\n",  # more than one read of the socket
    ],
    ids=["one-large-header", "many-headers", "a-mebibyte"],
)
def test_a_header_block_over_the_limit_gets_431_and_is_closed(server: Server, headers: bytes) -> None:
    with connect(server) as sock:
        # The server answers and drains what is still coming (a lingering close), so a client that
        # sends all it has, then reads, gets the answer rather than a reset.
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: tally\r\n" + headers + b"\r\n")
        sock.shutdown(socket.SHUT_WR)
        assert_refused(read_until_closed(sock), 431, "headers_too_large")
    assert_still_serving(server)


def test_a_request_target_over_the_limit_gets_431(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /healthz?pad=" + b"a" * MAX_HEADER_BYTES + b" HTTP/1.1\r\nHost: tally\r\n\r\n")
        assert_refused(read_until_closed(sock), 431, "headers_too_large")


@pytest.mark.parametrize(
    "request_head",
    [
        b"GET /healthz HTTP/1.1\r\nHost: tally\r\nIdempotency-Key: a\x01b\r\n\r\n",
        b"GET /health z HTTP/1.1\r\nHost: tally\r\n\r\n",
    ],
    ids=["control-character-in-a-header", "broken-request-line"],
)
def test_a_request_that_is_not_http_gets_400_malformed_request(server: Server, request_head: bytes) -> None:
    with connect(server) as sock:
        sock.sendall(request_head)
        assert_refused(read_until_closed(sock), 400, "malformed_request")
    assert_still_serving(server)


def test_a_header_block_within_the_limit_is_served(server: Server) -> None:
    filler = b"a" * (MAX_HEADER_BYTES - 200)
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: tally\r\nX-Filler: " + filler + b"\r\n\r\n")
        answer = b""
        while b'{"status":"ok"}' not in answer:
            answer += sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200 ")

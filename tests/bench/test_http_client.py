"""The load generator's HTTP client: one keep-alive connection, reopened after any failure.

Invariants, in plain words:
- requests on one ``HttpConnection`` share one socket while the server keeps it open;
- a request carries the fixed headers, its own headers, and a JSON body with its Content-Length;
- an answer is read by its Content-Length: status, headers (lower-cased) and body;
- a connection the server closes mid-answer raises ``ConnectionClosed``, an unreadable answer
  ``ProtocolError``, a refused connection ``ConnectionRefusedError``; the next request on the same
  ``HttpConnection`` opens a new socket and succeeds; nothing is retried behind the caller's back;
- ``Connection: close`` in an answer is obeyed: the next request opens a new socket, with no error.
"""

from __future__ import annotations

import pytest

from tally.bench.http_client import ConnectionClosed, HttpConnection, ProtocolError
from tests.bench.scripted_server import Close, ScriptedServer, Seen, answer, created
from tests.support import free_port


async def test_requests_share_one_keep_alive_connection_and_carry_headers_and_body() -> None:
    async with ScriptedServer() as server:
        connection = HttpConnection(server.base_url, [("authorization", "Bearer k")])
        try:
            first = await connection.request("POST", "/v1/transfers", b'{"amount": 1}', [("x-n", "1")])
            second = await connection.request("GET", "/v1/accounts/a/balance")
        finally:
            connection.close()
    assert (first.status, first.body) == (201, b'{"id": "t1"}')
    assert first.headers["content-type"] == "application/json"
    assert second.status == 201
    assert server.connections == connection.connects == 1
    posted, got = server.seen
    assert (posted.method, posted.path, posted.body) == ("POST", "/v1/transfers", b'{"amount": 1}')
    assert posted.headers["authorization"] == "Bearer k"
    assert posted.headers["x-n"] == "1"
    assert posted.headers["content-type"] == "application/json"
    assert posted.headers["content-length"] == "13"
    assert posted.headers["host"] == server.base_url.removeprefix("http://")
    assert (got.method, got.body, "content-length" in got.headers) == ("GET", b"", False)


async def test_an_answer_cut_short_raises_connection_closed_and_the_next_request_reconnects() -> None:
    cut = [True]

    def reply(seen: Seen) -> bytes | None:
        if cut.pop() if cut else False:
            return Close(answer(201, b"0123456789")[:-4])
        return created(seen)

    async with ScriptedServer(reply) as server:
        connection = HttpConnection(server.base_url)
        try:
            with pytest.raises(ConnectionClosed):
                await connection.request("GET", "/")
            again = await connection.request("GET", "/")
        finally:
            connection.close()
    assert again.status == 201
    assert server.connections == connection.connects == 2


async def test_a_connection_closed_before_any_answer_raises_connection_closed() -> None:
    async with ScriptedServer(lambda _: None) as server:
        connection = HttpConnection(server.base_url)
        with pytest.raises(ConnectionClosed):
            await connection.request("GET", "/")
        assert connection.idle


async def test_connection_close_in_an_answer_is_obeyed_without_an_error() -> None:
    def reply(_: Seen) -> bytes:
        return answer(200, b"{}", (("connection", "close"),))

    async with ScriptedServer(reply) as server:
        connection = HttpConnection(server.base_url)
        try:
            assert (await connection.request("GET", "/")).status == 200
            assert connection.idle
            assert (await connection.request("GET", "/")).status == 200
        finally:
            connection.close()
    assert server.connections == 2


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        b"SPDY/3 200 OK\r\ncontent-length: 0\r\n\r\n",
    ],
    ids=["no content-length", "bad status line"],
)
async def test_an_answer_it_cannot_read_raises_protocol_error(raw: bytes) -> None:
    async with ScriptedServer(lambda _: raw) as server:
        connection = HttpConnection(server.base_url)
        with pytest.raises(ProtocolError):
            await connection.request("GET", "/")
        assert connection.idle


async def test_a_refused_connection_raises_connection_refused() -> None:
    connection = HttpConnection(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ConnectionRefusedError):
        await connection.request("GET", "/healthz")


def test_only_plain_http_urls_are_accepted() -> None:
    with pytest.raises(ValueError, match="http://host:port"):
        HttpConnection("https://127.0.0.1:8000")

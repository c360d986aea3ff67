"""A lean HTTP/1.1 keep-alive client on asyncio streams, for the load generator only.

httpx spends more CPU per request than the server's own hot path, and on a 2-core machine the
generator shares the CPU with the server it measures: every cycle it spends is taken from Tally.
This client does only what the bench needs: one request at a time per connection, a body read by
its ``Content-Length`` (every Tally response has one), no redirects, no TLS, no chunked bodies.

A connection that fails (refused, reset, closed by the server, timed out, or an answer it cannot
read) is closed and the error raised to the caller, which counts it; the next request on the same
``HttpConnection`` opens a new socket. Nothing is retried: a retry would hide the failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

# A connection left idle longer is closed by the server (uvicorn's timeout_keep_alive is 5 s, see
# cli._serve); one idle this long is dropped before reuse, so that the race between the server's
# close and our next request cannot count as an error of the server.
IDLE_LIMIT_SECONDS = 4.0


class TransportError(Exception):
    """A request that got no complete HTTP answer (besides OSError and TimeoutError)."""


class ConnectionClosed(TransportError):
    """The server closed the connection before its answer was complete."""


class ProtocolError(TransportError):
    """An answer this client cannot read: a bad status line, or no Content-Length."""


TRANSPORT_ERRORS = (OSError, TimeoutError, TransportError)


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]  # names lower-cased; a repeated header keeps its last value
    body: bytes


class HttpConnection:
    """One keep-alive connection to ``base_url`` (``http://host:port``), opened on first use.

    ``headers`` are sent with every request (an ``Authorization`` header, say). Not safe for
    concurrent requests: one request at a time, as HTTP/1.1 without pipelining allows.
    """

    def __init__(self, base_url: str, headers: Iterable[tuple[str, str]] = (), timeout: float = 60) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"an http://host:port URL is needed, not {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.timeout = timeout
        fixed = [("host", parts.netloc), *headers]
        self._fixed = "".join(f"{name}: {value}\r\n" for name, value in fixed)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._last_used = 0.0
        self.connects = 0  # sockets opened so far, the first included

    @property
    def idle(self) -> bool:
        """No socket is open (none yet, or the last one was closed)."""
        return self._writer is None

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: Iterable[tuple[str, str]] = ()
    ) -> Response:
        """Send one request and read its whole answer; raise one of ``TRANSPORT_ERRORS`` if none.

        A body is sent as ``application/json``.
        """
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await self._open()
                writer.write(self._head(method, path, body, headers))
                if body:
                    writer.write(body)
                response = await _read_response(reader)
        except BaseException:
            self.close()
            raise
        if response.headers.get("connection", "").lower() == "close":
            self.close()
        self._last_used = asyncio.get_running_loop().time()
        return response

    def close(self) -> None:
        """Close the socket, if open; the next request opens another."""
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = self._reader, self._writer
        now = asyncio.get_running_loop().time()
        stale = reader is not None and (reader.at_eof() or now - self._last_used > IDLE_LIMIT_SECONDS)
        if stale:
            self.close()
            reader = writer = None
        if reader is None or writer is None:
            reader, writer = await asyncio.open_connection(self.host, self.port)
            self._reader, self._writer = reader, writer
            self.connects += 1
        return reader, writer

    def _head(self, method: str, path: str, body: bytes, headers: Iterable[tuple[str, str]]) -> bytes:
        lines = [f"{method} {path} HTTP/1.1\r\n", self._fixed]
        lines.extend(f"{name}: {value}\r\n" for name, value in headers)
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"content-type: application/json\r\ncontent-length: {len(body)}\r\n")
        lines.append("\r\n")
        return "".join(lines).encode("latin-1")


async def _read_response(reader: asyncio.StreamReader) -> Response:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as error:
        raise ConnectionClosed(f"closed after {len(error.partial)} bytes of the answer's head") from None
    except asyncio.LimitOverrunError:
        raise ProtocolError("an answer's head longer than 64 KiB") from None
    status_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    if not version.startswith("HTTP/1.") or not rest[:3].isdigit():
        raise ProtocolError(f"bad status line {status_line[:80]!r}")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    status = int(rest[:3])
    length = headers.get("content-length")
    if length is None and status in (204, 304):
        return Response(status, headers, b"")  # RFC 9112 6.3: these answers have no body
    if length is None or not length.isdigit():
        raise ProtocolError(f"an answer without a Content-Length (status {rest[:3]})")
    try:
        body = await reader.readexactly(int(length))
    except asyncio.IncompleteReadError as error:
        raise ConnectionClosed(f"closed after {len(error.partial)} of {length} body bytes") from None
    return Response(status, headers, body)

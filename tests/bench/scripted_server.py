"""A scripted HTTP/1.1 server on asyncio streams, for the load generator's own tests.

It reads each request (head, then a ``Content-Length`` body), records it, and writes what ``reply``
returns for it: raw bytes, so that a test can send a malformed or truncated answer;
``Close(bytes)`` writes them and then closes the connection; ``None`` closes it without a word.
With ``hold`` set, every answer waits for that event first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Close(bytes):
    """Write these bytes, then close the connection."""


def answer(status: int, body: bytes = b"", headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    """A whole HTTP/1.1 answer with a Content-Length."""
    lines = [f"HTTP/1.1 {status} Whatever\r\n", f"content-length: {len(body)}\r\n"]
    lines += [f"{name}: {value}\r\n" for name, value in headers]
    return "".join([*lines, "\r\n"]).encode() + body


def created(_: Seen) -> bytes:
    return answer(201, b'{"id": "t1"}', (("content-type", "application/json"),))


@dataclass
class ScriptedServer:
    reply: Callable[[Seen], bytes | None] = created
    hold: asyncio.Event | None = None
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    base_url: str = ""
    _server: asyncio.Server | None = None
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)
    _arrivals: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def __aenter__(self) -> ScriptedServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.base_url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def received(self, count: int) -> None:
        """Return once ``count`` requests have arrived."""
        async with self._arrivals:
            await self._arrivals.wait_for(lambda: len(self.seen) >= count)

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        if self.hold is not None:
            self.hold.set()
        for writer in self._writers:
            writer.close()
        # The handlers see their connection end and return; none is left to be cancelled.
        await asyncio.gather(*self._handlers)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return  # the client is gone, or the test is over
                request_line, *lines = head[:-4].decode("latin-1").split("\r\n")
                method, path, _ = request_line.split(" ")
                headers = {}
                for line in lines:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                seen = Seen(method, path, headers, body)
                async with self._arrivals:
                    self.seen.append(seen)
                    self._arrivals.notify_all()
                if self.hold is not None:
                    await self.hold.wait()
                reply = self.reply(seen)
                if reply is None:
                    return
                writer.write(reply)
                try:
                    await writer.drain()
                except ConnectionError:
                    return
                if isinstance(reply, Close):
                    return
        finally:
            writer.close()

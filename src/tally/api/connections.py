"""The HTTP/1.1 connection of ``tally serve``: the two bounds uvicorn leaves open.

uvicorn runs its httptools protocol (``uvicorn[standard]`` installs httptools, so ``h11`` and its
``h11_max_incomplete_event_size`` are not used) and puts no bound on a request's header block, nor
on the time it takes to arrive: its one timer is keep-alive, armed after a response and disarmed by
the next byte. A client could send a 20 MB header, trickle a header byte every few seconds
(slowloris), or connect and send nothing, and keep the connection, its buffers and a file
descriptor for as long as it liked. ``TallyHttpProtocol`` adds both bounds (``ConnectionLimits``):

- **Size**: at most ``max_header_bytes`` (``TALLY_MAX_HEADER_BYTES``) of request line and headers.
  Counted twice: the bytes received while a header block is still incomplete (what is buffered),
  and, once it is complete, the request target plus every header's name and value with their
  ``": "`` and CRLF. Past either: 431 ``headers_too_large``.
- **Time**: a whole header block within ``header_read_seconds`` (``TALLY_HEADER_READ_TIMEOUT_MS``)
  from the moment the connection opens, or, on a kept-alive connection, from the first byte of the
  next request. Past it: 408 ``request_timeout`` if some of the request has arrived; a connection
  that has sent nothing is closed without an answer, as keep-alive expiry closes one.

Both refusals are problem+json with a fresh ``X-Request-ID`` and ``Connection: close`` (except for a
pipelined request refused while an earlier response is still going out: that response finishes,
then the connection closes without an answer to the refused one), written here
before any application code runs (so no access line and no request metrics: a warning line names
them). The connection is then closed the way RFC 9112 §9.6 asks ("lingering close"): the answer
and a FIN go out at once, what the client still sends is read and dropped, and the socket closes
when the client closes its side or ``LINGER_SECONDS`` later. Closing at once instead would make the
kernel answer the unread bytes of a client still sending with a reset, which can destroy the
answer before the client reads it. The body's own deadline is the request middleware's
(``api/middleware.py``), since the application reads the body.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from typing import Any, cast

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from tally.api.problems import BY_CODE, problem_body
from tally.observability.context import accept_request_id
from tally.observability.logging import get_logger

_log = get_logger("tally.connections")
LINGER_SECONDS = 2.0  # after a refusal, how long what a client still sends is drained


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_header_bytes: int
    header_read_seconds: float


def http_protocol(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """uvicorn's ``http`` option: ``TallyHttpProtocol`` with ``limits`` bound.

    A ``functools.partial`` of a module-level class, so that it pickles into the worker processes of
    ``tally serve --workers N`` (uvicorn spawns them with its config); uvicorn only ever calls it.
    """
    return cast(type[asyncio.Protocol], functools.partial(TallyHttpProtocol, limits=limits))


class TallyHttpProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: ConnectionLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self._in_header_block = True  # from connect, and from each message's end to its next headers
        self._header_bytes = 0
        self._header_timer: asyncio.TimerHandle | None = None
        self._request_begun = False  # a byte of the request under way has arrived
        self._boundary_in_chunk = False  # a header block or a message ended in this data_received
        self._refused = False
        self._linger: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]  # uvicorn narrows it to Transport
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        if self._linger is not None:
            self._linger.cancel()
        super().connection_lost(exc)

    def eof_received(self) -> None:
        if self._refused:  # the client has closed its side after a refusal: nothing left to drain
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._boundary_in_chunk = False
        super().data_received(data)
        if self._refused or not self._in_header_block or self._boundary_in_chunk:
            return
        # A header block is open and was open all through this chunk: the chunk is part of it.
        # A chunk that also ends a header block or a message is not counted (which of its bytes
        # begin the next block is not known): the bound may be passed by one read before it is
        # noticed, and a complete block is measured exactly all the same.
        self._header_bytes += len(data)
        if self._header_bytes > self.limits.max_header_bytes:
            self._refuse_large_headers()

    # Parser callbacks (httptools calls them from inside ``data_received``).

    def on_message_begin(self) -> None:
        if self._refused:
            return
        self._request_begun = True
        if self._header_timer is None:  # the first byte of a later request on a kept-alive connection
            self._arm_header_timer()
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._disarm_header_timer()
        self._in_header_block = False
        self._boundary_in_chunk = True
        self._request_begun = False
        self._header_bytes = 0
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.limits.max_header_bytes:
            self._refuse_large_headers()
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        self._in_header_block = True
        self._boundary_in_chunk = True
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        # What httptools cannot parse as HTTP/1.1 (a control character in a header value, a broken
        # request line): problem+json like every other refusal, not uvicorn's plain text.
        if not self._refused:  # a parse error after a refusal in the same chunk: already answered
            self._refuse(400, "malformed_request", "The request is not valid HTTP/1.1; nothing was applied.")

    # The bounds.

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(self.limits.header_read_seconds, self._header_timeout)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self._refused or self.transport.is_closing():
            return
        if not self._request_begun:  # connected and silent: nothing to answer
            self._refused = True
            self.transport.close()
            return
        seconds = self.limits.header_read_seconds
        self._refuse(408, "request_timeout", f"The headers did not arrive within {seconds:g} s.")

    def _refuse_large_headers(self) -> None:
        limit = self.limits.max_header_bytes
        self._refuse(431, "headers_too_large", f"The request line and headers exceed {limit} bytes.")

    def _refuse(self, status: int, code: str, detail: str) -> None:
        self._refused = True
        self._disarm_header_timer()
        self._unset_keepalive_if_required()
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined request, while an earlier one is still being answered: an answer written
            # now would land inside that one. It finishes, then the connection closes (uvicorn
            # closes after a response whose cycle is not kept alive); this request gets no answer.
            self.cycle.keep_alive = False
            _log.warning("request refused", status=status, code=code, answered=False)
            return
        request_id = accept_request_id(None)
        body = problem_body(BY_CODE[code], detail, request_id)
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/problem+json\r\n",
            b"content-length: ", str(len(body)).encode(), b"\r\n",
            b"x-request-id: ", request_id.encode(), b"\r\n",
            b"connection: close\r\n\r\n",
        ]  # fmt: skip
        self.transport.write(b"".join(head) + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self._linger = self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()
        _log.warning("request refused", status=status, code=code, request_id=request_id)

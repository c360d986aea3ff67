"""ASGI middleware: request id, bounded body, access log, request metrics.

Pure ASGI (no ``BaseHTTPMiddleware``) so it adds one function call per request, not a task.
The body is read here, at most ``max_body_bytes`` of it, whether or not it declared a
``Content-Length``: reading stops at the limit and the app sees an empty body and the flag
``state["body_too_large"]``. ``TallyRoute`` answers 413 for it after authentication and scope, as the
API's error precedence asks, without the rest of the body ever being read.

The whole body must arrive within ``body_read_seconds`` (``TALLY_BODY_READ_TIMEOUT_MS``): a client
that sends its headers and then trickles its body, or nothing, would otherwise hold the request
(and its memory) forever. Past the deadline the app is not called; the answer is 408
``request_timeout`` with ``Connection: close``, since the rest of the body may still be on its way
(RFC 9110 §15.5.9). That comes before authentication: a request that never finished arriving has
no precedence to keep.

A request whose (method, path) has a shortcut (``api.shortcuts``, ADR 0043) is handed to it rather
than to the app's routing; everything in this middleware applies to it the same.

When metrics are on, each exchange is handed to ``observability.requests.RequestMetrics`` once the
response is sent, with what the response said: status, ``Idempotent-Replayed`` and, for a
problem+json body, its ``code``. The statements the request ran are counted in a ``QueryTally``
started here, and land in the access line (``db_queries``, ``db_ms``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tally.api.problems import BY_CODE, problem_body
from tally.observability.context import accept_request_id, set_request_id
from tally.observability.logging import get_logger
from tally.observability.queries import QueryTally, start_tally
from tally.observability.requests import Exchange, RequestMetrics

_log = get_logger("tally.access")
_PROBLEM_BODY_LIMIT = 16 * 1024  # problem bodies are small; a larger one is not read for its code


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        body_read_seconds: float = 10.0,
        observer: RequestMetrics | None = None,
        shortcuts: Mapping[tuple[str, str], ASGIApp] | None = None,
    ) -> None:
        self.app = app
        self.shortcuts = shortcuts or {}  # (method, path) → an app that serves it (api.shortcuts)
        self.max_body_bytes = max_body_bytes
        self.body_read_seconds = body_read_seconds
        self.observer = observer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope["headers"])
        raw_id = headers.get(b"x-request-id")
        request_id = accept_request_id(raw_id.decode("latin-1") if raw_id is not None else None)
        set_request_id(request_id)
        # A fresh per-request state (servers share the lifespan state dict between requests).
        scope["state"] = {**scope.get("state", {}), "request_id": request_id}
        response = _Response(send, request_id)
        queries: QueryTally | None = None
        if self.observer is not None:
            queries = start_tally()
            self.observer.started()
        try:
            try:
                async with asyncio.timeout(self.body_read_seconds):
                    body = await self._read_body(headers, receive)
            except TimeoutError:
                await _request_timeout(response.send, request_id, self.body_read_seconds)
                return
            if body is None:
                scope["state"]["body_too_large"] = True
                body = b""
            app = self.shortcuts.get((scope["method"], scope["path"]), self.app)
            try:
                await app(scope, _replay(body, receive), response.send)
            except Exception:
                # Answered here rather than by Starlette's outermost handler, so that a 500 carries
                # X-Request-ID like every other response. No detail reaches the client.
                _log.exception("unhandled error")
                if response.started:
                    raise
                await _internal_error(response.send, request_id)
        finally:
            self._finish(scope, response, queries, time.perf_counter() - started)

    def _finish(self, scope: Scope, response: _Response, queries: QueryTally | None, seconds: float) -> None:
        """The access line, then the metrics."""
        route: str | None = getattr(scope.get("route"), "path", None)
        fields: dict[str, Any] = {}
        if queries is not None:
            fields = {"db_queries": queries.count, "db_ms": round(queries.seconds * 1000, 3)}
        _log.info(
            "request",
            method=scope["method"],
            route=route,
            status=response.status,
            duration_ms=round(seconds * 1000, 3),
            ledger_id=scope.get("state", {}).get("ledger_id"),
            replayed=response.replayed,
            **fields,
        )
        if self.observer is not None:
            exchange = Exchange(
                method=scope["method"],
                route=route,
                status=response.status,
                seconds=seconds,
                replayed=response.replayed,
                problem_code=response.problem_code(),
                queries=queries.count if queries is not None else None,
            )
            self.observer.finished(exchange)

    async def _read_body(self, headers: dict[bytes, bytes], receive: Receive) -> bytes | None:
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


class _Response:
    """Sends the response with ``X-Request-ID`` added, noting what the access line and metrics need."""

    def __init__(self, send: Send, request_id: str) -> None:
        self._send = send
        self._request_id = request_id.encode()
        self.status = 500  # until a response starts: a failure that sent nothing
        self.started = False
        self.replayed = False
        self._problem: bytearray | None = None  # the body, when it is problem+json

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.started = True
            headers = [*message.get("headers", []), (b"x-request-id", self._request_id)]
            self.replayed = (b"idempotent-replayed", b"true") in headers
            if any(
                name == b"content-type" and value.startswith(b"application/problem+json")
                for name, value in headers
            ):
                self._problem = bytearray()
            message["headers"] = headers
        elif self._problem is not None and len(self._problem) <= _PROBLEM_BODY_LIMIT:
            self._problem += message.get("body", b"")
        await self._send(message)

    def problem_code(self) -> str | None:
        """The ``code`` of a problem+json body, if it has one."""
        body = self._problem
        if not body or len(body) > _PROBLEM_BODY_LIMIT:
            return None
        try:
            code = orjson.loads(body).get("code")
        except (orjson.JSONDecodeError, AttributeError):
            return None
        return code if isinstance(code, str) else None


async def _internal_error(send: Send, request_id: str) -> None:
    await _problem(send, "internal_error", "Something failed inside Tally; nothing was applied.", request_id)


async def _request_timeout(send: Send, request_id: str, seconds: float) -> None:
    detail = f"The body did not arrive within {seconds:g} s; nothing was applied."
    await _problem(send, "request_timeout", detail, request_id, close=True)


async def _problem(send: Send, code: str, detail: str, request_id: str, *, close: bool = False) -> None:
    """A problem+json answer sent straight to the server, for when no route answers."""
    problem = BY_CODE[code]
    body = problem_body(problem, detail, request_id)
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": problem.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _replay(body: bytes, upstream: Receive) -> Receive:
    """Hand the buffered body to the app, then pass on what the server sends next (disconnects)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await upstream()

    return receive

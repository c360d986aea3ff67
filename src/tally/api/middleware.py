"""ASGI middleware: request id, bounded body, access log.

Pure ASGI (no ``BaseHTTPMiddleware``) so it adds one function call per request, not a task.
The body is read here, at most ``max_body_bytes`` of it, whether or not it declared a
``Content-Length``: reading stops at the limit and the app sees an empty body and the flag
``state["body_too_large"]``. ``TallyRoute`` answers 413 for it after authentication and scope, as the
API's error precedence asks, without the rest of the body ever being read.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tally.api.problems import BY_CODE, problem_body
from tally.observability.context import accept_request_id, set_request_id
from tally.observability.logging import get_logger

_log = get_logger("tally.access")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

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
        outcome: dict[str, Any] = {"status": 500, "replayed": False, "status_sent": False}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                outcome["status"] = message["status"]
                outcome["status_sent"] = True
                response_headers = list(message.get("headers", []))
                response_headers.append((b"x-request-id", request_id.encode()))
                outcome["replayed"] = (b"idempotent-replayed", b"true") in response_headers
                message["headers"] = response_headers
            await send(message)

        try:
            body = await self._read_body(headers, receive)
            if body is None:
                scope["state"]["body_too_large"] = True
                body = b""
            try:
                await self.app(scope, _replay(body, receive), send_with_id)
            except Exception:
                # Answered here rather than by Starlette's outermost handler, so that a 500 carries
                # X-Request-ID like every other response. No detail reaches the client.
                _log.exception("unhandled error")
                if outcome["status_sent"]:
                    raise
                await _internal_error(send_with_id, request_id)
        finally:
            route = scope.get("route")
            state = scope.get("state", {})
            _log.info(
                "request",
                method=scope["method"],
                route=getattr(route, "path", None),
                status=outcome["status"],
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
                ledger_id=state.get("ledger_id"),
                replayed=outcome["replayed"],
            )

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


async def _internal_error(send: Send, request_id: str) -> None:
    problem = BY_CODE["internal_error"]
    body = problem_body(problem, "Something failed inside Tally; nothing was applied.", request_id)
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
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

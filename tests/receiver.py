"""A real webhook receiver for tests: an HTTP server on 127.0.0.1 in a thread of the test process.

It does what a careful receiver does: it verifies each request's Standard Webhooks signature with
the secret it was given (written here from the specification, not with Tally's signing code),
records every request, and applies each message once, deduplicating on ``webhook-id``. It can be
told to answer 500 to the next N requests, or be down (its port closed) and come back up.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    """One request as the receiver saw it."""

    webhook_id: str
    timestamp: str
    signature_ok: bool
    headers: dict[str, str]
    body: dict[str, Any]
    at: float  # time.monotonic() on arrival
    answered: int


def signature_matches(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The Standard Webhooks check: HMAC-SHA256 over ``id.timestamp.body`` keyed with the secret's
    base64-decoded bytes, compared (in constant time) with each ``v1,`` signature of the header."""
    if not secret.startswith("whsec_"):
        return False
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers.get('webhook-id', '')}.{headers.get('webhook-timestamp', '')}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    offered = [part.split(",", 1) for part in headers.get("webhook-signature", "").split()]
    return any(
        version == "v1" and hmac.compare_digest(value, expected) for version, value in offered if value
    )


@dataclass
class Receiver:
    """Start with ``start()``; ``url`` is where to point a webhook; ``stop()`` at the end."""

    secret: str = ""
    requests: list[Received] = field(default_factory=list)
    effects: dict[str, dict[str, Any]] = field(default_factory=dict)  # webhook-id → event, once each
    port: int = 0
    _failures_left: int = 0
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def fail_next(self, count: int) -> None:
        """Answer 500 to the next ``count`` requests."""
        with self._lock:
            self._failures_left = count

    def start(self) -> Receiver:
        """Listen (again, on the same port after ``down()``)."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                raw = self.rfile.read(length)
                status = receiver._receive({k.lower(): v for k, v in self.headers.items()}, raw)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def down(self) -> None:
        """Close the port: connections are refused until ``start()`` again."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    stop = down

    def _receive(self, headers: dict[str, str], raw: bytes) -> int:
        with self._lock:
            ok = signature_matches(self.secret, headers, raw)
            if not ok:
                status = 401
            elif self._failures_left > 0:
                self._failures_left -= 1
                status = 500
            else:
                status = 204
            body = json.loads(raw) if raw else {}
            webhook_id = headers.get("webhook-id", "")
            if status == 204:
                self.effects.setdefault(webhook_id, body)  # a redelivery changes nothing
            self.requests.append(
                Received(
                    webhook_id=webhook_id,
                    timestamp=headers.get("webhook-timestamp", ""),
                    signature_ok=ok,
                    headers=headers,
                    body=body,
                    at=time.monotonic(),
                    answered=status,
                )
            )
            return status

    def received(self) -> list[Received]:
        with self._lock:
            return list(self.requests)

    def applied(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return dict(self.effects)

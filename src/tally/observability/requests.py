"""What one HTTP exchange adds to the metrics, business counters included.

The business counters are derived from what every response already says, so that handlers stay
free of metrics calls (STYLE.md, habit 6): the route template and method name the operation, the
status and the ``Idempotent-Replayed`` header its outcome, and the ``code`` of a problem+json body
the reason for a refusal.

Label values are bounded here: routes are templates (or ``unmatched``), methods outside the
standard ones are ``OTHER``, problem codes outside ``[a-z_]{1,64}`` are ``unknown``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tally.observability.metrics import Children, Metrics

UNMATCHED = "unmatched"  # the route label of a request no route matched (404, or refused earlier)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_CODE = re.compile(r"^[a-z_]{1,64}$")
_TRANSFER_ACTION = re.compile(r"^/v1/transfers/\{[^}/]+\}/(post|void|reverse)$")
# Money-moving routes (POST) → the operation they count as in tally_transfers_total.
_OPERATIONS = {
    "/v1/transfers": "create",
    "/v1/transfers/batch": "batch",
    "/v1/transfer-batches": "batch_submit",
}


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request and its response, as the middleware saw them."""

    method: str
    route: str | None  # the matched route's template
    status: int
    seconds: float
    replayed: bool
    problem_code: str | None  # the ``code`` of a problem+json body
    queries: int | None  # statements run; ``None`` when statements are not timed


def operation_of(method: str, route: str | None) -> str | None:
    """The money-moving operation of a route (``create``, ``post``, ``void``, ``reverse``, …) or ``None``."""
    if method != "POST" or route is None:
        return None
    action = _TRANSFER_ACTION.match(route)
    return action.group(1) if action is not None else _OPERATIONS.get(route)


def outcome_of(exchange: Exchange) -> str:
    """``replayed``, ``created`` (201), ``existing``, ``applied`` (2xx), ``rejected`` (4xx), ``failed``."""
    if exchange.replayed:
        return "replayed"
    if exchange.status >= 500:
        return "failed"
    if exchange.status >= 400:
        return "rejected"
    if exchange.status == 201:
        return "created"
    # A 200 on create is the permanent client-id dedupe answering with the transfer that exists.
    creating = operation_of(exchange.method, exchange.route) == "create"
    return "existing" if creating else "applied"


class RequestMetrics:
    """Records each ``Exchange`` into ``metrics``."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._requests = Children(metrics.requests)
        self._latency = Children(metrics.latency)
        self._queries = Children(metrics.queries_per_request)
        self._transfers = Children(metrics.transfers)

    def started(self) -> None:
        self._metrics.in_flight.inc()

    def finished(self, exchange: Exchange) -> None:
        self._metrics.in_flight.dec()
        method = exchange.method if exchange.method in _METHODS else "OTHER"
        route = exchange.route or UNMATCHED
        status_class = f"{min(max(exchange.status // 100, 1), 5)}xx"
        self._requests(method, route, status_class).inc()
        self._latency(method, route, status_class).observe(exchange.seconds)
        if status_class == "5xx":
            self._metrics.errors.labels(method, route, status_class).inc()
        if exchange.queries is not None:
            self._queries(method, route).observe(exchange.queries)
        self._business(exchange, route)

    def _business(self, exchange: Exchange, route: str) -> None:
        if exchange.replayed:
            self._metrics.replays.labels(route).inc()
        if 400 <= exchange.status < 500 and exchange.problem_code is not None:
            code = exchange.problem_code if _CODE.match(exchange.problem_code) else "unknown"
            self._metrics.rejections.labels(route, code).inc()
        operation = operation_of(exchange.method, exchange.route)
        if operation is not None:
            self._transfers(operation, outcome_of(exchange)).inc()
